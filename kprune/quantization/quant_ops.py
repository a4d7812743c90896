"""Fake quantization: what TFLite's int8 kernels compute, in `keras.ops`, with straight-through gradients.

Two kinds of tensors are quantized, as TFLite quantizes them:

* **Activations**, per tensor and asymmetric, over a range `[min, max]`
  (`fake_quant`). The range is nudged so that 0 is exactly representable
  (TensorFlow's `FakeQuantWithMinMaxVars`, which TFLite's converter reads):
  with `qmin, qmax = (1 if narrow_range else 0), 2**num_bits - 1`,

      scale = (max - min) / (qmax - qmin)
      zero_point = clip(round(qmin - min / scale), qmin, qmax)
      lo, hi = (qmin - zero_point) * scale, (qmax - zero_point) * scale
      q(x) = floor((clip(x, lo, hi) - lo) / scale + 0.5) * scale + lo.

* **Weights**, per output channel and symmetric in [-127, 127]
  (`fake_quant_weights`): `s_c = max |w_c| / 127`,
  `q(w) = clip(floor(w / s_c + 0.5), -127, 127) * s_c`. The range is that of
  the current weights at every call, which is what the converter computes
  from the (constant) weights of the exported graph -- also after it folds a
  BatchNormalization into them, since multiplying channel c by a scale
  multiplies `s_c` by it too -- so a Keras model and its int8 file hold the
  same integers. Zero stays exactly zero.

Gradients are straight-through: 1 for values inside the range, 0 outside
(`clip`'s), never through the rounding or into the range.

On TensorFlow, `fake_quant` is `tf.quantization.fake_quant_with_min_max_vars`
itself (the same numbers): it is the op TFLite's converter turns into the
int8 file's scales and zero points. Elsewhere it is the `keras.ops` formula,
so quantization-aware training runs on JAX and PyTorch too; conversion then
runs on TensorFlow (`kprune.export`).

The ranges quantizers learn (`batch_range`, `moving_average`) follow
tfmot's `quant_ops`: 0 is always inside, and a symmetric range is widened to
`[-m, m]` (`narrow_range`) or to two's complement's `[-m, m (2^b-2)/2^b]`.

Example:

>>> import numpy as np
>>> x = np.array([-1.5, 0.0, 0.31, 2.5], "float32")
>>> [round(float(v), 4) for v in fake_quant_reference(x, -1.0, 2.0)]
[-1.0, 0.0, 0.3059, 2.0]
>>> w = np.array([[0.5, -0.02], [-0.2, 0.011]], "float32")
>>> (np.asarray(fake_quant_weights(w, (-1,))) / (np.abs(w).max(0) / 127)).round().tolist()
[[127.0, -127.0], [-51.0, 70.0]]
"""

from keras import ops

from kprune.utils import backends


def quantized_bounds(num_bits, narrow_range):
    """`(qmin, qmax)`: the integer grid of `num_bits` (unsigned, as TensorFlow counts it)."""
    return (1 if narrow_range else 0), 2**int(num_bits) - 1


def _nudged(minimum, maximum, num_bits, narrow_range):
    """TensorFlow's nudging: `(lo, hi, scale)` with 0 exactly on the grid."""
    qmin, qmax = quantized_bounds(num_bits, narrow_range)
    scale = (maximum - minimum) / float(qmax - qmin)
    zero_from_min = qmin - minimum / scale
    zero_point = ops.floor(ops.clip(zero_from_min, float(qmin), float(qmax)) + 0.5)
    return (qmin - zero_point) * scale, (qmax - zero_point) * scale, scale


def _valid_range(minimum, maximum):
    """The range as float32 tensors, without gradient, never empty (an
    all-zero tensor's range [0, 0] becomes [0, 1e-6])."""
    minimum = ops.stop_gradient(ops.cast(minimum, "float32"))
    maximum = ops.stop_gradient(ops.cast(maximum, "float32"))
    return minimum, ops.maximum(maximum, minimum + 1e-6)


def fake_quant_reference(x, minimum, maximum, num_bits=8, narrow_range=False):
    """`fake_quant` in `keras.ops` on every backend (TensorFlow's formula).

    `minimum` and `maximum` are scalars (one range) or vectors (one range per
    entry of the last axis of `x`).
    """
    minimum, maximum = _valid_range(minimum, maximum)
    x = ops.convert_to_tensor(x)
    lo, hi, scale = _nudged(minimum, maximum, num_bits, narrow_range)
    clipped = ops.minimum(ops.maximum(x, ops.cast(lo, x.dtype)), ops.cast(hi, x.dtype))
    inverse = 1.0 / scale
    quantized = ops.floor((clipped - lo) * inverse + 0.5) * scale + lo
    return clipped + ops.stop_gradient(ops.cast(quantized, x.dtype) - clipped)


def fake_quant(x, minimum, maximum, num_bits=8, narrow_range=False):
    """`x` quantized to `num_bits` over `[minimum, maximum]` and back (see the module).

    Scalars `minimum`/`maximum` quantize per tensor, vectors per entry of the
    last axis. On TensorFlow: `tf.quantization.fake_quant_with_min_max_vars`
    (or its `_per_channel` form), which the converter reads.
    """
    if backends.name() != "tensorflow":
        return fake_quant_reference(x, minimum, maximum, num_bits, narrow_range)
    import tensorflow as tf

    minimum, maximum = _valid_range(minimum, maximum)
    if len(minimum.shape):
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(
            x, minimum, maximum, num_bits=int(num_bits), narrow_range=bool(narrow_range))
    return tf.quantization.fake_quant_with_min_max_vars(
        x, minimum, maximum, num_bits=int(num_bits), narrow_range=bool(narrow_range))


def reduce_axes(rank, channel_axes):
    """The axes a per-channel reduction runs over: all but `channel_axes`."""
    keep = {a % rank for a in channel_axes}
    return tuple(a for a in range(rank) if a not in keep)


def weight_scales(w, channel_axes, num_bits=8):
    """Per-channel scales `max |w_c| / (2^(b-1) - 1)`, shaped to broadcast
    against `w` (1 where a channel is all zero: its weights stay 0)."""
    levels = float(2 ** (int(num_bits) - 1) - 1)
    largest = ops.max(ops.abs(w), axis=reduce_axes(len(w.shape), channel_axes), keepdims=True)
    return ops.where(largest > 0, largest / levels, ops.ones_like(largest))


def fake_quant_weights(w, channel_axes=(-1,), num_bits=8):
    """Symmetric per-channel fake quantization of a weight (see the module).

    Args:
        w: the weight tensor.
        channel_axes: the axes that index output channels (trailing axes
            together: a depthwise kernel's `(-2, -1)`). Defaults to `(-1,)`.
        num_bits: bits; the grid is `[-(2^(b-1) - 1), 2^(b-1) - 1]`. Defaults to 8.

    Returns:
        The quantized weight (straight-through gradient).
    """
    w = ops.convert_to_tensor(w)
    levels = float(2 ** (int(num_bits) - 1) - 1)
    scales = ops.stop_gradient(weight_scales(w, channel_axes, num_bits))
    quantized = ops.clip(ops.floor(w / scales + 0.5), -levels, levels) * scales
    return w + ops.stop_gradient(quantized - w)


def batch_range(x, per_axis=False, symmetric=False, narrow_range=False, num_bits=8):
    """`(min, max)` of `x` (per entry of the last axis with `per_axis`), with
    0 inside, widened to a symmetric range with `symmetric` (tfmot's rule)."""
    x = ops.stop_gradient(ops.convert_to_tensor(x))
    axes = tuple(range(len(x.shape) - 1)) if per_axis and len(x.shape) > 1 else None
    low, high = ops.min(x, axis=axes), ops.max(x, axis=axes)
    if symmetric:
        ratio = -1.0 if narrow_range else -((1 << int(num_bits)) - 2) / (1 << int(num_bits))
        return ops.minimum(low, high / ratio), ops.maximum(high, low * ratio)
    return ops.minimum(low, 0.0), ops.maximum(high, 0.0)


def moving_average(old, new, count, decay):
    """`decay' * old + (1 - decay') * new` with `decay' = min(decay, n / (n + 1))`
    after `n = count` batches: the mean of the batch ranges until `1 / (1 -
    decay)` batches have been seen, an exponential moving average after.

    Example:

    >>> float(moving_average(5.0, 1.0, 0, 0.999)), float(moving_average(1.0, 3.0, 1, 0.999))
    (1.0, 2.0)
    """
    count = ops.cast(count, "float32")
    weight = ops.minimum(float(decay), count / (count + 1.0))
    return weight * old + (1.0 - weight) * new
