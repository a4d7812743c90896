"""Masks applied to tensors and variables, on every backend.

* `apply_mask(value, mask)`: `where(mask, value, 0)`.
* `mask_product(value, mask)`: the same in the form that is fastest inside a
  training step on the backend (a multiply on TensorFlow, in place on
  PyTorch).
* `host_array(variable)`: a NumPy view of a variable without a copy.
* `MaskWriter`: assign many masks and zero the pruned entries of their
  variables at once (one TensorFlow graph call instead of two eager ops per
  variable).
"""

import keras
import numpy as np
from keras import ops

from kprune.utils import backends


def apply_mask(value, mask):
    """`value` where `mask` is True, 0 elsewhere (`mask` boolean, or 0/1)."""
    # Variables as tensors: JAX's `where` no longer converts them itself.
    value = value.value if isinstance(value, keras.Variable) else value
    mask = mask.value if isinstance(mask, keras.Variable) else mask
    if mask.dtype != "bool":
        mask = ops.cast(mask, "bool")
    return ops.where(mask, value, ops.zeros((), value.dtype))


def mask_product(value, mask):
    """`apply_mask` in the form that is fastest on the backend, for the mask
    constraint in the training step.

    On TensorFlow `value * cast(mask)`: TF's broadcasting select is about 1.4x
    slower than a multiply on CPU (`benchmarks/bench_training.py` measures the
    training step). On PyTorch, for a variable, the product in place
    (`backends.zero_in_place`). The values are those of `apply_mask` for
    finite weights (a pruned negative entry becomes `-0.0`, which equals 0).
    On JAX `apply_mask` itself (XLA fuses either form).
    """
    backend = backends.name()
    if backend == "torch" and isinstance(value, keras.Variable):
        return backends.zero_in_place(value, mask)
    if backend != "tensorflow":
        return apply_mask(value, mask)
    value = value.value if isinstance(value, keras.Variable) else value
    mask = mask.value if isinstance(mask, keras.Variable) else mask
    return ops.multiply(value, ops.cast(mask, value.dtype))


class MaskConstraint(keras.constraints.Constraint):
    """`w -> mask_product(inner(w), mask)`: a variable's own constraint, then its mask.

    Keras applies a variable's constraint after every optimizer step, so the
    pruned entries stay exactly 0 whatever the optimizer's momentum says.

    Args:
        mask: the boolean mask variable.
        inner: the variable's own constraint, applied first, or None.
        when_readable: skip the mask where it cannot be read (JAX's optimizer
            step inside `fit` or `stateless_apply`, see
            `kprune.utils.backends.mask_is_readable`): the wrappers' forward
            pass applies the mask there and the callback zeroes the
            optimizer's state. False (pruning in place) always applies it: on
            JAX the compiled step then reads the mask as a constant, and the
            step is traced again whenever a mask changes. Defaults to False.

    Example:

    >>> import keras, numpy as np
    >>> mask = keras.Variable(np.array([True, False, True]))
    >>> np.asarray(MaskConstraint(mask)(keras.ops.convert_to_tensor([1.0, 2.0, 3.0]))).tolist()
    [1.0, 0.0, 3.0]
    """

    def __init__(self, mask, inner=None, when_readable=False):
        self.mask = mask
        self.inner = inner
        self.when_readable = bool(when_readable)

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        if self.when_readable and not backends.mask_is_readable(
                self.mask, w.value if isinstance(w, keras.Variable) else w):
            return w
        return mask_product(w, self.mask)


def host_array(variable):
    """A read-only NumPy view of `variable`'s current value, without a copy on
    CPU: the read shares the variable's buffer, and a later `assign` gives the
    variable a new buffer, so the view stays valid."""
    value = variable.value
    if hasattr(value, "read_value"):  # a tf.Variable: the cheapest eager read
        return np.asarray(value.read_value())
    return np.asarray(ops.stop_gradient(variable))


# Masks up to this size are compared with the new one before being assigned.
COMPARE_UP_TO = 1 << 16


def pruned_nonzero(value, keep):
    """Whether an entry of `value` outside `keep` is not 0 (read in slices)."""
    flat, kept = value.reshape(-1), keep.reshape(-1)
    step = 1 << 16
    scratch = np.empty(min(step, flat.size), bool)
    for start in range(0, flat.size, step):
        b = scratch[: min(step, flat.size - start)]
        np.logical_not(kept[start : start + step], out=b)
        np.logical_and(flat[start : start + step], b, out=b)
        if b.any():
            return True
    return False


class MaskWriter:
    """Writes the masks of many `(variable, mask)` pairs at once.

    `write(keeps)` assigns `keeps[i]` (a boolean array) to the i-th mask and
    sets the pruned entries of the i-th variable to 0. On TensorFlow (outside
    `tf.distribute`) this is one call of a `tf.function` traced once for the
    pairs; elsewhere two assigns per changed pair. A channel update of
    MobileNetV2 writes 158 masks: the graph call replaces about 300 eager ops.

    Args:
        pairs: list of `(variable, mask)` (a mask: a boolean variable of the
            variable's shape).

    Example:

    >>> import keras, numpy as np
    >>> v = keras.Variable(np.ones((2, 2), "float32"))
    >>> m = keras.Variable(np.ones((2, 2), bool))
    >>> MaskWriter([(v, m)]).write([np.array([[True, False], [False, True]])])
    >>> keras.ops.convert_to_numpy(v).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """

    def __init__(self, pairs):
        self.pairs = list(pairs)
        self._function = None
        if backends.name() == "tensorflow" and self.pairs:
            import tensorflow as tf

            distributed = any(
                isinstance(v.value, tf.distribute.DistributedValues) for pair in self.pairs for v in pair
            )
            if not distributed:
                variables = [(v.value, m.value) for v, m in self.pairs]
                sizes = [int(np.prod(m.shape)) for _, m in variables]

                # One flat input: converting 158 arrays to tensors at each
                # call cost about 10 ms (MobileNetV2), one array a copy.
                @tf.function(autograph=False)
                def write(flat):
                    for (variable, mask), keep in zip(variables, tf.split(flat, sizes)):
                        keep = tf.reshape(keep, mask.shape)
                        mask.assign(keep)
                        variable.assign(tf.where(keep, variable, tf.zeros((), variable.dtype)))

                self._function = write

    def warm(self):
        """Trace and run the TensorFlow graph once, writing the masks as they
        are (their variables already hold masked values: no change), so that
        the first real update does not pay the tracing (about 0.5 s for the
        158 masks of MobileNetV2). Nothing to do elsewhere."""
        if self._function is not None:
            self._function(_flat([host_array(mask) for _, mask in self.pairs]))

    def write(self, keeps):
        """Assign `keeps` (one boolean array per pair, in order) to the masks
        and zero the pruned entries of the variables."""
        keeps = [np.asarray(k, bool) for k in keeps]
        if len(keeps) != len(self.pairs):
            raise ValueError(
                f"MaskWriter.write needs one mask per pair ({len(self.pairs)}). "
                f"Received: {len(keeps)} masks"
            )
        for (variable, _), keep in zip(self.pairs, keeps):
            if keep.shape != tuple(variable.shape):
                raise ValueError(
                    f"MaskWriter.write: the mask for variable '{variable.path}' must have its "
                    f"shape {tuple(variable.shape)}. Received: a mask of shape {keep.shape}"
                )
        if self._function is not None:
            self._function(_flat(keeps))
            return
        for (variable, mask), keep in zip(self.pairs, keeps):
            write_mask(variable, mask, keep)


def _flat(keeps):
    """The boolean arrays `keeps`, raveled and concatenated."""
    return np.concatenate([np.ravel(k) for k in keeps]) if keeps else np.zeros(0, bool)


def write_mask(variable, mask, keep, nonzero=None):
    """Assign `keep` (a boolean array or tensor of the variable's shape) to
    `mask` and zero the pruned entries of `variable`.

    A small mask is compared first (cheaper than an assign, and most masks of
    a channel update do not change); a large one is assigned. The variable
    is rewritten only if a pruned entry is not 0 already (`nonzero`, found
    here if None).
    """
    if not isinstance(keep, np.ndarray) or keep.size > COMPARE_UP_TO or not np.array_equal(
        host_array(mask), keep
    ):
        mask.assign(keep)  # (a tensor `keep` is assigned where it lives)
    if nonzero is None:
        nonzero = pruned_nonzero(host_array(variable), keep)
    if nonzero:
        # `where`, not `mask_product`: no float copy of the mask (the
        # update's memory peak stays one new value of the variable).
        variable.assign(apply_mask(variable.value, mask.value))
