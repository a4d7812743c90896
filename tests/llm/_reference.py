"""NumPy transcriptions of the reference implementations, line by line.

Weights are in PyTorch's `(out, in)` orientation, as in the references; the
tests transpose kprune's `(in, out)` matrices. Transcribed from:

* locuslab/wanda `lib/layerwrapper.py: WrappedGPT.add_batch` and
  `lib/prune.py: prune_wanda` (unstructured without the variant, and N:M),
  `prune_magnitude`;
* IST-DASLab/sparsegpt `sparsegpt.py: SparseGPT.add_batch, fasterprune`
  (no quantizer), in float64 instead of float32 (the algorithm, not the
  rounding, is what the tests compare);
* luuyin/OWL `lib/prune_all.py: check_outlier_mean` and the ratio lines of
  `prune_wanda_outlier`.
"""

import math

import numpy as np


class WrappedGPT:
    """`scaler_row` as locuslab/wanda accumulates it; `inp` is (batch, seq, in)."""

    def __init__(self, columns):
        self.scaler_row = np.zeros(columns, np.float32)
        self.nsamples = 0

    def add_batch(self, inp):
        tmp = inp.shape[0]
        inp = inp.reshape((-1, inp.shape[-1])).T
        self.scaler_row *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        inp = inp.astype(np.float32)
        self.scaler_row += np.linalg.norm(inp, ord=2, axis=1) ** 2 / self.nsamples


def wanda_mask(W, scaler_row, sparsity_ratio, prune_n=0, prune_m=0):
    """True where prune_wanda zeroes W (out, in)."""
    W_metric = np.abs(W) * np.sqrt(scaler_row.reshape((1, -1)))
    W_mask = np.zeros_like(W_metric, dtype=bool)
    if prune_n != 0:
        for ii in range(W_metric.shape[1]):
            if ii % prune_m == 0:
                tmp = W_metric[:, ii:(ii + prune_m)].astype(np.float32)
                idx = np.argsort(tmp, axis=1, kind="stable")[:, :prune_n]  # topk(largest=False)
                np.put_along_axis(W_mask[:, ii:(ii + prune_m)], idx, True, axis=1)
    else:
        sort_idx = np.argsort(W_metric, axis=-1, kind="stable")
        indices = sort_idx[:, :int(W_metric.shape[1] * sparsity_ratio)]
        np.put_along_axis(W_mask, indices, True, axis=1)
    return W_mask


def magnitude_mask(W, sparsity_ratio, prune_n=0, prune_m=0):
    """True where prune_magnitude zeroes W (out, in)."""
    W_metric = np.abs(W)
    if prune_n != 0:
        W_mask = np.zeros_like(W, dtype=bool)
        for ii in range(W_metric.shape[1]):
            if ii % prune_m == 0:
                tmp = W_metric[:, ii:(ii + prune_m)]
                idx = np.argsort(tmp, axis=1, kind="stable")[:, :prune_n]
                np.put_along_axis(W_mask[:, ii:(ii + prune_m)], idx, True, axis=1)
        return W_mask
    thresh = np.sort(W_metric.flatten())[int(W.size * sparsity_ratio)]
    return W_metric <= thresh


class SparseGPT:
    """sparsegpt.py's SparseGPT for an nn.Linear of weight W (out, in)."""

    def __init__(self, W):
        self.W = np.array(W, np.float64)
        self.rows, self.columns = self.W.shape
        self.H = np.zeros((self.columns, self.columns))
        self.nsamples = 0

    def add_batch(self, inp):
        if len(inp.shape) == 2:
            inp = inp[None]
        tmp = inp.shape[0]
        inp = inp.reshape((-1, inp.shape[-1])).T
        self.H *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        inp = math.sqrt(2 / self.nsamples) * inp.astype(np.float64)
        self.H += inp @ inp.T

    def fasterprune(self, sparsity, prunen=0, prunem=0, blocksize=128, percdamp=.01):
        W = self.W.copy()
        H = self.H.copy()
        dead = np.diag(H) == 0
        H[dead, dead] = 1
        W[:, dead] = 0
        damp = percdamp * np.mean(np.diag(H))
        diag = np.arange(self.columns)
        H[diag, diag] += damp
        H = np.linalg.cholesky(H)
        H = np.linalg.inv(H @ H.T)                 # torch.cholesky_inverse
        H = np.linalg.cholesky(H).T                # cholesky(upper=True)
        Hinv = H
        mask = None
        Mask = np.zeros_like(W, dtype=bool)
        for i1 in range(0, self.columns, blocksize):
            i2 = min(i1 + blocksize, self.columns)
            count = i2 - i1
            W1 = W[:, i1:i2].copy()
            Q1 = np.zeros_like(W1)
            Err1 = np.zeros_like(W1)
            Hinv1 = Hinv[i1:i2, i1:i2]
            if prunen == 0:
                if mask is not None:
                    mask1 = mask[:, i1:i2]
                else:
                    tmp = W1 ** 2 / (np.diag(Hinv1).reshape((1, -1))) ** 2
                    thresh = np.sort(tmp.flatten())[int(tmp.size * sparsity)]
                    mask1 = tmp <= thresh
            else:
                mask1 = np.zeros_like(W1) == 1
            for i in range(count):
                w = W1[:, i]
                d = Hinv1[i, i]
                if prunen != 0 and i % prunem == 0:
                    tmp = W1[:, i:(i + prunem)] ** 2 / (np.diag(Hinv1)[i:(i + prunem)].reshape((1, -1))) ** 2
                    idx = np.argsort(tmp, axis=1, kind="stable")[:, :prunen]
                    np.put_along_axis(mask1[:, i:(i + prunem)], idx, True, axis=1)
                q = w.copy()
                q[mask1[:, i]] = 0
                Q1[:, i] = q
                err1 = (w - q) / d
                W1[:, i:] -= np.outer(err1, Hinv1[i, i:])
                Err1[:, i] = err1
            W[:, i1:i2] = Q1
            Mask[:, i1:i2] = mask1
            W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
        return W, Mask


def check_outlier_mean(W, threshold):
    """OWL's outlier ratio (percent) of a flat score vector."""
    max_shred = np.mean(W) * threshold
    return float((W > max_shred).sum()) / W.size * 100


def owl_sparsities(all_layer_ratio, sparsity_ratio, lamda):
    """prune_wanda_outlier's per-block sparsity from the outlier ratios."""
    all_layer_ratio = np.array(all_layer_ratio)
    all_layer_ratio = ((all_layer_ratio - all_layer_ratio.min())
                       * (1 / (all_layer_ratio.max() - all_layer_ratio.min()) * lamda * 2))
    all_layer_ratio = all_layer_ratio - np.mean(all_layer_ratio) + (1 - sparsity_ratio)
    return 1 - all_layer_ratio
