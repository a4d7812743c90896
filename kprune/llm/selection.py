"""Which entries of a score matrix are pruned: exact counts, ties by position.

One-shot methods score every weight of a `(d_in, d_out)` matrix (Keras'
kernel orientation: inputs are rows) and prune the lowest scores in a
comparison group:

* `"output"`: each output (a column) loses its `round(d_in * s)` lowest
  inputs -- Wanda's per-output comparison (per row of PyTorch's `(out, in)`
  weight);
* `"matrix"`: the whole matrix loses its `round(d_in * d_out * s)` lowest
  entries -- magnitude pruning's one threshold per matrix;
* an N:M pattern: in every `M` consecutive inputs of each output, the `N`
  lowest are pruned (`"2:4"`: 2 zeros in every 4, what sparse tensor cores
  run; tfmot's reading of `(m, n)`).

Counts are exact: equal scores at the threshold are pruned in order of
position (the lower input index first, then the lower output index), so two
machines, two backends or two shardings of the same scores select the same
entries. The selection sorts *values* only (`keras.ops.sort` is deterministic
where an unstable argsort is not), takes the `k`-th smallest as threshold and
releases ties with a running count along the group; in `"output"` and N:M
mode every column is independent, so a kernel sharded along its outputs is
never gathered.

Example:

>>> import numpy as np
>>> scores = np.array([[1., 4.], [3., 2.], [2., 2.], [5., 1.]], "float32")
>>> np.asarray(pruned(scores, 0.5, "output")).astype(int).tolist()
[[1, 0], [0, 1], [1, 0], [0, 1]]
>>> np.asarray(pruned(scores, (2, 4), "output")).astype(int).sum(axis=0).tolist()
[2, 2]
>>> parse_sparsity("2:4"), parse_sparsity(0.5)
((2, 4), 0.5)
"""

import numbers
import re

from keras import ops

from kprune.sparsity.mask_math import target_zeros

COMPARISONS = ("output", "matrix")


def parse_sparsity(sparsity, name="sparsity"):
    """A fraction in [0, 1), or an N:M pattern (`"2:4"`, `(2, 4)`) as `(n, m)`.

    Raises:
        ValueError: anything else, naming the argument.
    """
    pattern = None
    if isinstance(sparsity, str):
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", sparsity)
        pattern = (int(match.group(1)), int(match.group(2))) if match else None
    elif isinstance(sparsity, (tuple, list)) and len(sparsity) == 2:
        pattern = tuple(sparsity)
    if pattern is not None:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in pattern) and 1 <= pattern[0] < pattern[1]:
            return pattern
        raise ValueError(
            f"Argument `{name}` as an N:M pattern needs 1 <= N < M (N zeros in every M "
            f"inputs, e.g. '2:4'). Received: {name}={sparsity!r}")
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not 0 <= sparsity < 1:
        raise ValueError(
            f"Argument `{name}` must be a fraction in [0, 1) or an N:M pattern such as '2:4'. "
            f"Received: {name}={sparsity!r}")
    return float(sparsity)


def lowest(scores, k, axis):
    """Boolean tensor: the `k` lowest `scores` along `axis` (a tensor of
    rank 2 or 3), ties pruned in order of position along that axis.

    `k` is an integer, the same for every group."""
    size = int(scores.shape[axis])
    if k <= 0:
        return ops.zeros(scores.shape, "bool")
    if k >= size:
        return ops.ones(scores.shape, "bool")
    threshold = ops.take(ops.sort(scores, axis=axis), k - 1, axis=axis)
    threshold = ops.expand_dims(threshold, axis)
    below = ops.less(scores, threshold)
    tied = ops.equal(scores, threshold)
    room = k - ops.sum(ops.cast(below, "int32"), axis=axis, keepdims=True)
    order = ops.cumsum(ops.cast(tied, "int32"), axis=axis)
    return ops.logical_or(below, ops.logical_and(tied, ops.less_equal(order, room)))


def pruned(scores, sparsity, comparison="output"):
    """The pruned entries of a `(d_in, d_out)` score matrix (see the module docstring).

    Args:
        scores: `(d_in, d_out)` tensor, lower = pruned first.
        sparsity: a fraction in [0, 1) or `(n, m)`: n pruned in every m
            consecutive inputs of each output.
        comparison: `"output"` or `"matrix"` (fractions only).

    Returns:
        A boolean tensor of `scores.shape`, True where the weight is pruned.
    """
    d_in, d_out = (int(d) for d in scores.shape)
    if isinstance(sparsity, tuple):
        n, m = sparsity
        if d_in % m:
            raise ValueError(
                f"N:M sparsity {n}:{m} needs the number of inputs to be a multiple of {m}. "
                f"Received: a matrix of {d_in} inputs")
        grouped = ops.reshape(scores, (d_in // m, m, d_out))
        return ops.reshape(lowest(grouped, n, axis=1), (d_in, d_out))
    if comparison == "output":
        return lowest(scores, target_zeros(d_in, sparsity), axis=0)
    if comparison == "matrix":
        flat = ops.reshape(scores, (-1, 1))
        return ops.reshape(lowest(flat, target_zeros(d_in * d_out, sparsity), axis=0), (d_in, d_out))
    raise ValueError(f"Argument `comparison` must be one of {COMPARISONS}. Received: comparison={comparison!r}")
