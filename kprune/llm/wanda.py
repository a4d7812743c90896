"""Wanda and magnitude scores of a weight matrix, and pruning by them.

Wanda (Sun, Liu, Bair, Kolter, "A Simple and Effective Pruning Approach for
Large Language Models", ICLR 2024; reference `locuslab/wanda`,
`lib/prune.py: prune_wanda`) scores weight `W_ij` (input i, output j, Keras'
`(d_in, d_out)` orientation) by its magnitude times the norm of its input
over the calibration tokens,

    S_ij = |W_ij| * ||X_i||_2,

and prunes, for each output separately, the lowest-scoring inputs
(`comparison="output"`; in every M consecutive inputs the N lowest for N:M).
No weight is updated. Magnitude pruning is the same with `S_ij = |W_ij|`,
compared over the whole matrix by default (the reference's baseline: one
threshold per matrix) or per output.

Both run in `keras.ops` on the device that holds the weight: the input norms
(`d_in` numbers) go to the weight, not the weight to the host, and with
`comparison="output"` or N:M each output's selection is local to the shard
that holds it (`kprune.llm.selection`).

Example:

>>> import numpy as np
>>> w = np.array([[1., -4.], [3., 2.], [-2., 2.], [5., 1.]], "float32")
>>> norms = np.array([1., 1., 1., 0.1], "float32")
>>> np.asarray(prune_matrix(w, wanda_scores(w, norms), 0.5)).tolist()
[[0.0, -4.0], [3.0, 0.0], [-2.0, 2.0], [0.0, 0.0]]
"""

from keras import ops

from kprune.llm.selection import pruned


def magnitude_scores(matrix):
    """`|W|` in float32 (whatever the weight's dtype)."""
    return ops.abs(ops.cast(matrix, "float32"))


def wanda_scores(matrix, norms):
    """`|W_ij| * norms_i` in float32; `norms` is `(d_in,)`, proportional to `||X_i||_2`."""
    norms = ops.cast(ops.convert_to_tensor(norms), "float32")
    return magnitude_scores(matrix) * ops.expand_dims(norms, 1)


def prune_matrix(matrix, scores, sparsity, comparison="output"):
    """`matrix` with its lowest-scoring entries set to exactly 0.

    Args:
        matrix: `(d_in, d_out)` tensor (any float dtype; kept).
        scores: `(d_in, d_out)` scores, lower = pruned first.
        sparsity: a fraction, or `(n, m)` for N:M.
        comparison: `"output"` or `"matrix"` (`kprune.llm.selection.pruned`).
    """
    mask = pruned(scores, sparsity, comparison)
    return ops.where(mask, ops.zeros((), matrix.dtype), matrix)
