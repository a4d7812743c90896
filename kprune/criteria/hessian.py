"""Hessian-based channel importance: `importance="hessian"`.

Second-order expansion around a trained minimum: removing structure `p`
(`dw_p = -w_p`) costs `dL_p ~ 1/2 w_p^T H_pp w_p`. Hessian-Aware Pruning (Yu
et al., "Hessian-Aware Pruning and Optimal Neural Implant", WACV 2022)
replaces the channel's block by `(Tr(H_pp) / n_p) I`, so

    score_c = Tr(H_cc) * ||w_c||^2 / n_c

over every weight slice `w_c` of channel c in its group (the producers'
filters, BatchNormalization parameters, the consumers' input rows; `n_c` of
them). The trace comes from Hutchinson's estimator with Rademacher vectors
`v` (+-1): `E[v * Hv] = diag(H)`, so one Hessian-vector product gives an
estimate of every channel's trace at once:

    Tr(H_cc) ~ 1/m sum_{i=1..m} sum_{j in c} v_ij (H v_i)_j.

`Hv = grad_w (grad_w L . v)` is computed by double backpropagation (nested
`tf.GradientTape`, the TensorFlow backend). `power_iteration` gives the top
eigenvalue of a block (PyHessian's `hessian.eigenvalues`), e.g. for per-layer
sensitivity. The algorithms `hutchinson_diagonal` and `power_iteration` take
any `hvp(v) -> Hv` on NumPy vectors and are tested on explicit matrices.

Cost: `samples` Hessian-vector products (about 2-4 backward passes each) per
batch, for at most `max_batches` batches.

Example:

>>> import numpy as np
>>> from kprune.criteria import hessian
>>> H = np.diag([4.0, 1.0, -2.0])
>>> diag = hessian.hutchinson_diagonal(lambda v: H @ v, 3, samples=8)
>>> np.round(diag, 6).tolist()  # exact for a diagonal H: v_j^2 = 1
[4.0, 1.0, -2.0]
>>> round(hessian.power_iteration(lambda v: H @ v, 3, tol=1e-8)[0], 4)
4.0
"""

import keras
import numpy as np

from kprune.criteria.importance import DataCriterion, batches, check_targets, resolve_loss, unit_values


def hutchinson_diagonal(hvp, dim, samples=32, seed=0):
    """Hutchinson's estimate of `diag(H)`: the mean of `v * hvp(v)` over
    `samples` Rademacher vectors `v` of length `dim`. Summing it over a block
    estimates the block's trace (unbiased; variance falls as 1/samples)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"Argument `samples` must be an integer >= 1. Received: samples={samples!r}")
    rng = np.random.default_rng(seed)
    total = np.zeros(dim)
    for _ in range(samples):
        v = rng.choice([-1.0, 1.0], size=dim)
        total += v * np.asarray(hvp(v), dtype=np.float64)
    return total / samples


def power_iteration(hvp, dim, max_iter=100, tol=1e-3, seed=0):
    """Top (largest-magnitude) eigenvalue of `H` by power iteration on `hvp`.

    `v <- Hv / ||Hv||`, `lambda = v^T H v`, until `lambda` changes by less
    than `tol` relatively (PyHessian's defaults: 100 iterations, 1e-3).

    Returns:
        `(eigenvalue, eigenvector)`.
    """
    rng = np.random.default_rng(seed)
    v = rng.normal(size=dim)
    v /= np.linalg.norm(v)
    eigenvalue = None
    for _ in range(max_iter):
        hv = np.asarray(hvp(v), dtype=np.float64)
        new = float(v @ hv)
        norm = np.linalg.norm(hv)
        if norm == 0:
            return 0.0, v
        v = hv / norm
        if eigenvalue is not None and abs(new - eigenvalue) <= tol * (abs(eigenvalue) + 1e-12):
            return new, v
        eigenvalue = new
    return eigenvalue, v


def hvp_function(model, loss, variables):
    """`hvp(x, y, vectors) -> [H v per variable]` for the mean loss of `model`
    on a batch, by nested `tf.GradientTape` (TensorFlow backend), compiled
    with `tf.function`.

    Args:
        model: a Keras model (run with `training=False`).
        loss: a Keras loss (callable `loss(y_true, y_pred)`).
        variables: the variables `H` is taken over.
    """
    import tensorflow as tf

    variables = list(variables)

    @tf.function(reduce_retracing=True)
    def hvp(x, y, vectors):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                value = tf.reduce_mean(loss(y, model(x, training=False)))
            grads = inner.gradient(value, variables)
            dot = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vectors)])
        return outer.gradient(dot, variables)

    return hvp


class HessianCriterion(DataCriterion):
    """`importance="hessian"`: `Tr(H_cc) ||w_c||^2 / n_c` (HAP), with the
    trace from Hutchinson's estimator on `data` (`(inputs, targets)`) and a loss.

    Args:
        samples: Rademacher vectors per batch. Defaults to 16 (HAP uses 300;
            the estimate is noisy per channel, the ranking less so).
        max_batches: batches of `data` used at most. Defaults to 4.
        seed: seed of the Rademacher vectors. Defaults to 0.
    """

    def __init__(self, name, data, loss=None, samples=16, max_batches=4, seed=0):
        super().__init__(name, data, loss)
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                f"Importance {name!r} computes Hessian-vector products with nested "
                "tf.GradientTape: it needs the TensorFlow backend. Received: backend "
                f"{keras.backend.backend()!r}. Run it with KERAS_BACKEND=tensorflow, or use "
                "importance='taylor' (every backend)."
            )
        check_targets(name, data)
        self.samples = samples
        self.max_batches = max_batches
        self.seed = seed

    def _measure(self, graph):
        import tensorflow as tf

        loss_fn = resolve_loss(self.model, self.loss, "hessian")
        groups = [g for g in graph.groups if g.blocked is None and g.producers]
        variables, index = [], {}
        for group in groups:
            for usage in group.usages:
                for variable, _, _ in usage.slices:
                    if variable.trainable and id(variable) not in index:
                        index[id(variable)] = len(variables)
                        variables.append(variable)
        if not variables:
            return {}
        hvp = hvp_function(self.model, loss_fn, variables)
        rng = np.random.default_rng(self.seed)
        diag = [np.zeros(tuple(v.shape)) for v in variables]
        draws = 0
        for b, (x, y) in enumerate(batches(self.data, with_targets=True)):
            if b >= self.max_batches:
                break
            for _ in range(self.samples):
                vs = [rng.choice([-1.0, 1.0], size=tuple(v.shape)).astype(v.dtype) for v in variables]
                hv = hvp(x, y, [tf.constant(v) for v in vs])
                for k, (v, h) in enumerate(zip(vs, hv)):
                    diag[k] += v * keras.ops.convert_to_numpy(h)
                draws += 1
        if not draws:
            raise ValueError("Argument `data` holds no examples.")
        scores = {}
        for group in groups:
            trace = np.zeros(len(group.units))
            norm = np.zeros(len(group.units))
            count = np.zeros(len(group.units))
            for usage in group.usages:
                for variable, axis, repeat in usage.slices:
                    k = index.get(id(variable))
                    if k is None:
                        continue
                    weights = keras.ops.convert_to_numpy(variable.value)
                    d_rows = unit_values(graph, group, usage, diag[k] / draws, axis, repeat)
                    w_rows = unit_values(graph, group, usage, weights, axis, repeat)
                    for u, (d, w) in enumerate(zip(d_rows, w_rows)):
                        if d is not None:
                            trace[u] += d.sum()
                            norm[u] += (w.astype(np.float64) ** 2).sum()
                            count[u] += w.size
            scores[group.index] = trace * norm / np.maximum(count, 1)
        return scores
