"""Exact magnitude selection on the device that holds the weights (`keras.ops`).

`kprune.sparsity.smallest` finds the `k` smallest magnitudes in NumPy, which on a GPU
or TPU means copying every pruned weight to the host and the mask back at
each update. `select_smallest_on_device(value, k)` gives the same answer with
`keras.ops` on the tensor where it lives:

1. *Keys.* The float bits of `value` are read as integers of the same width
   (`ops.view`) with the sign bit cleared, which orders entries exactly as
   `|v|` (`-0.0 == 0.0`); every NaN is mapped to one key above `inf`, so NaN
   entries tie with each other and are pruned last, as in `np.sort`.
2. *Threshold.* `t`, the `k`-th smallest key, from one `ops.sort` of the keys
   (on an accelerator a sort of millions of keys takes about a millisecond).
3. *Mask.* Entries below `t` are pruned, and of the entries equal to `t` the
   first `k - #(keys < t)` in position order (a cumulative sum), so ties are
   broken by position exactly as in `kprune.sparsity.smallest`.

`UpdatePruningStep` and `update_masks` use it for unstructured masks of
float16, bfloat16 and float32 weights that live on an accelerator
(`kprune.utils.backends.on_accelerator`); on a CPU the NumPy selection, which reads
the weights about once instead of sorting them, is faster. Both give the same
mask, bit for bit (tests compare them on every backend).
"""

import keras
import numpy as np
from keras import ops

# Per float dtype: the integer view, and the bits of +inf in it.
_INT_VIEW = {"float16": ("int16", 0x7C00), "bfloat16": ("int16", 0x7F80), "float32": ("int32", 0x7F800000)}


def supports(dtype):
    """Whether `select_smallest_on_device` handles weights of `dtype`."""
    return keras.backend.standardize_dtype(dtype) in _INT_VIEW


def magnitude_keys(value):
    """Integer keys ordered as `|value|` (flattened), every NaN one key above `inf`."""
    dtype = keras.backend.standardize_dtype(value.dtype)
    if not supports(dtype):
        raise ValueError(
            f"Device selection handles {sorted(_INT_VIEW)} weights. Received: dtype={dtype}"
        )
    int_dtype, inf = _INT_VIEW[dtype]
    magnitude = np.iinfo(int_dtype).max  # every bit but the sign
    keys = ops.bitwise_and(ops.view(ops.reshape(value, (-1,)), int_dtype), magnitude)
    return ops.minimum(keys, inf + 1)


def select_smallest_on_device(value, k):
    """Keep-mask of `value` with its `k` smallest magnitudes pruned, on its device.

    The same entries as `kprune.sparsity.smallest.smallest_magnitudes` (ties by
    position, NaN pruned last, `-0.0 == 0.0`).

    Args:
        value: a float16, bfloat16 or float32 tensor of any shape.
        k: number of entries to prune, `0 <= k <= size`.

    Returns:
        `(keep, pruned_nonzero)`: a boolean tensor of `value`'s shape (`True`
        where the entry is kept) and a boolean scalar tensor, whether a pruned
        entry is not 0.

    Example:

    >>> import numpy as np
    >>> keep, nonzero = select_smallest_on_device(np.array([0.3, -0.1, 0.2, 0.1], "float32"), 2)
    >>> np.asarray(keep).tolist(), bool(nonzero)
    ([True, False, True, False], True)
    """
    value = ops.convert_to_tensor(value)
    keys = magnitude_keys(value)
    n = int(keys.shape[0])
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise ValueError(f"Argument `k` must be an integer in [0, {n}]. Received: k={k!r}")
    if k == 0:
        return ops.ones(value.shape, "bool"), ops.convert_to_tensor(False)
    threshold = ops.sort(keys)[k - 1]
    below = ops.less(keys, threshold)
    tied = ops.equal(keys, threshold)
    # The first `k - #below` tied entries, in position order, are pruned too.
    room = k - ops.sum(ops.cast(below, "int32"))
    rank = ops.cumsum(ops.cast(tied, "int32"))
    pruned = ops.logical_or(below, ops.logical_and(tied, ops.less_equal(rank, room)))
    nonzero = ops.greater(threshold, 0)
    return ops.reshape(ops.logical_not(pruned), value.shape), nonzero
