"""Quantizers: how one tensor is fake-quantized, with the state its range needs (tfmot's `quantizers`).

A `Quantizer` is tfmot's contract: `build(tensor_shape, name, layer)` adds
the variables it needs to `layer` and returns them as a dict, which
`__call__(inputs, training, weights)` receives. `get_config()` is flat (the
constructor's arguments) and every quantizer here is registered with Keras,
so models that hold them load without `custom_objects`.

* `LastValueQuantizer`: the range of the current batch (training), the
  range of the last training batch (inference).
* `MovingAverageQuantizer`: a moving average of batch ranges (activations).
  kprune's average starts from the first batch's range (the mean of the
  ranges seen, then an exponential moving average with decay 0.999 after
  1000 batches); tfmot's starts from [-6, 6], which takes thousands of steps
  to forget.
* `AllValuesQuantizer`: the range of every value seen (the model's inputs).
* `PerChannelWeightsQuantizer`: kprune's weight quantizer, symmetric per
  output channel, from the current weights at every call (what the
  converter computes from the exported weights).

Example:

>>> import keras, numpy as np
>>> layer = keras.layers.Layer()
>>> quantizer = MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)
>>> state = quantizer.build((None, 4), "output", layer)
>>> y = quantizer(np.array([[0.0, 1.0, 2.0, 3.0]], "float32"), True, state)
>>> float(state["min_var"].value), float(state["max_var"].value)
(0.0, 3.0)
"""

import abc

import keras
from keras import ops

from kprune.quantization import quant_ops


class Quantizer(abc.ABC):
    """How a tensor is quantized (tfmot's `tfmot.quantization.keras.quantizers.Quantizer`).

    Subclasses implement `build(tensor_shape, name, layer)` (add variables to
    `layer` with `layer.add_weight(shape=..., name=...)` -- Keras 3 takes the
    shape first, tf.keras the name -- and return them in a dict),
    `__call__(inputs, training, weights, **kwargs)` and `get_config()`.

    Example:

    >>> import keras
    >>> class Clip(Quantizer):
    ...     def build(self, tensor_shape, name, layer):
    ...         return {}
    ...     def __call__(self, inputs, training, weights, **kwargs):
    ...         return keras.ops.clip(inputs, -1.0, 1.0)
    ...     def get_config(self):
    ...         return {}
    >>> float(Clip()(keras.ops.ones(()) * 3, False, {}))
    1.0
    """

    @abc.abstractmethod
    def build(self, tensor_shape, name, layer):
        """Add the quantizer's variables to `layer`; return them as a dict."""

    @abc.abstractmethod
    def __call__(self, inputs, training, weights, **kwargs):
        """`inputs` quantized; `weights` is what `build` returned."""

    @abc.abstractmethod
    def get_config(self):
        """The constructor's arguments."""

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


def _check_bits(num_bits):
    if isinstance(num_bits, bool) or not isinstance(num_bits, int) or not 2 <= num_bits <= 16:
        raise ValueError(f"Argument `num_bits` must be an integer in [2, 16]. Received: num_bits={num_bits!r}")
    return num_bits


class _RangeQuantizer(Quantizer):
    """A quantizer with tfmot's four settings and a `[min, max]` range."""

    def __init__(self, num_bits, per_axis, symmetric, narrow_range):
        self.num_bits = _check_bits(num_bits)
        self.per_axis = bool(per_axis)
        self.symmetric = bool(symmetric)
        self.narrow_range = bool(narrow_range)

    def get_config(self):
        return {"num_bits": self.num_bits, "per_axis": self.per_axis,
                "symmetric": self.symmetric, "narrow_range": self.narrow_range}

    def _range_weights(self, layer, name, tensor_shape, initial=(-6.0, 6.0), count=False):
        shape = (int(tensor_shape[-1]),) if self.per_axis and tensor_shape is not None else ()
        weights = {
            "min_var": layer.add_weight(shape=shape, name=f"{name}_min", trainable=False,
                                        initializer=keras.initializers.Constant(initial[0])),
            "max_var": layer.add_weight(shape=shape, name=f"{name}_max", trainable=False,
                                        initializer=keras.initializers.Constant(initial[1])),
        }
        if count:
            weights["count"] = layer.add_weight(shape=(), name=f"{name}_count", trainable=False,
                                                dtype="int32", initializer="zeros")
        return weights

    def _batch_range(self, inputs):
        return quant_ops.batch_range(inputs, self.per_axis, self.symmetric, self.narrow_range, self.num_bits)

    def _quantize(self, inputs, minimum, maximum):
        return quant_ops.fake_quant(inputs, minimum, maximum, self.num_bits, self.narrow_range)


@keras.saving.register_keras_serializable(package="kprune")
class LastValueQuantizer(_RangeQuantizer):
    """Quantize over the range of the last batch (tfmot's `LastValueQuantizer`).

    In training the range is the batch's (stored); at inference, the stored one.

    Args:
        num_bits: bits of the grid.
        per_axis: one range per entry of the last axis.
        symmetric: a range symmetric about 0.
        narrow_range: the grid `[1, 2^b - 1]` (int8: [-127, 127]) rather
            than `[0, 2^b - 1]`.

    Example:

    >>> import keras
    >>> q = LastValueQuantizer(num_bits=8, per_axis=False, symmetric=True, narrow_range=True)
    >>> state = q.build((3,), "kernel", keras.layers.Layer())
    >>> _ = q(keras.ops.convert_to_tensor([-0.5, 0.1, 1.0]), True, state)
    >>> float(state["min_var"].value), float(state["max_var"].value)
    (-1.0, 1.0)
    """

    def build(self, tensor_shape, name, layer):
        return self._range_weights(layer, name, tensor_shape)

    def __call__(self, inputs, training, weights, **kwargs):
        if not training:
            return self._quantize(inputs, weights["min_var"].value, weights["max_var"].value)
        low, high = self._batch_range(inputs)
        weights["min_var"].assign(low)
        weights["max_var"].assign(high)
        return self._quantize(inputs, low, high)


@keras.saving.register_keras_serializable(package="kprune")
class MovingAverageQuantizer(_RangeQuantizer):
    """Quantize over a moving average of batch ranges (tfmot's `MovingAverageQuantizer`).

    In training the range moves towards the batch's: the mean of the ranges
    of the batches seen so far, then (after `1 / (1 - 0.999)` batches) an
    exponential moving average with decay 0.999; the batch is quantized with
    the updated range. At inference the stored range is used. (tfmot starts
    the average at [-6, 6].)

    Args: as `LastValueQuantizer`.

    Example:

    >>> import keras, numpy as np
    >>> q = MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)
    >>> state = q.build((None, 2), "act", keras.layers.Layer())
    >>> for batch in ([[0.0, 2.0]], [[0.0, 4.0]]):
    ...     _ = q(np.array(batch, "float32"), True, state)
    >>> float(state["max_var"].value)
    3.0
    """

    EMA_DECAY = 0.999

    def build(self, tensor_shape, name, layer):
        return self._range_weights(layer, name, tensor_shape, count=True)

    def __call__(self, inputs, training, weights, **kwargs):
        if not training:
            return self._quantize(inputs, weights["min_var"].value, weights["max_var"].value)
        low, high = self._batch_range(inputs)
        count = weights["count"].value
        low = quant_ops.moving_average(weights["min_var"].value, low, count, self.EMA_DECAY)
        high = quant_ops.moving_average(weights["max_var"].value, high, count, self.EMA_DECAY)
        weights["min_var"].assign(low)
        weights["max_var"].assign(high)
        weights["count"].assign(count + 1)
        return self._quantize(inputs, low, high)


@keras.saving.register_keras_serializable(package="kprune")
class AllValuesQuantizer(_RangeQuantizer):
    """Quantize over the range of every value seen in training (tfmot's `AllValuesQuantizer`).

    Args: as `LastValueQuantizer` (`per_axis` is not supported, as in tfmot).

    Example:

    >>> import keras, numpy as np
    >>> q = AllValuesQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)
    >>> state = q.build((None, 2), "input", keras.layers.Layer())
    >>> for batch in ([[0.0, 2.0]], [[-1.0, 1.0]]):
    ...     _ = q(np.array(batch, "float32"), True, state)
    >>> float(state["min_var"].value), float(state["max_var"].value)
    (-1.0, 2.0)
    """

    def __init__(self, num_bits, per_axis, symmetric, narrow_range):
        if per_axis:
            raise ValueError("AllValuesQuantizer quantizes per tensor. Received: per_axis=True")
        super().__init__(num_bits, per_axis, symmetric, narrow_range)

    def build(self, tensor_shape, name, layer):
        return self._range_weights(layer, name, None, initial=(0.0, 0.0))

    def __call__(self, inputs, training, weights, **kwargs):
        if not training:
            return self._quantize(inputs, weights["min_var"].value, weights["max_var"].value)
        low, high = self._batch_range(inputs)
        low = ops.minimum(weights["min_var"].value, low)
        high = ops.maximum(weights["max_var"].value, high)
        weights["min_var"].assign(low)
        weights["max_var"].assign(high)
        return self._quantize(inputs, low, high)


@keras.saving.register_keras_serializable(package="kprune")
class PerChannelWeightsQuantizer(Quantizer):
    """Symmetric per-channel weight quantization, as TFLite's int8 kernels take weights.

    `w_c` is quantized to `[-(2^(b-1) - 1), 2^(b-1) - 1]` times
    `s_c = max |w_c| / (2^(b-1) - 1)`, from the current weights at every call
    (`kprune.quantization.quant_ops.fake_quant_weights`). No state.

    Args:
        channel_axes: the axes of the weight that index TFLite's output
            channels: `(-1,)` for Dense and Conv kernels, `(-2, -1)` for a
            depthwise kernel `(h, w, in, multiplier)`; `()` for one scale for
            the whole tensor. Defaults to `(-1,)`.
        num_bits: bits. Defaults to 8.

    Example:

    >>> import numpy as np
    >>> q = PerChannelWeightsQuantizer()
    >>> w = np.array([[1.0, 0.2], [0.5, -0.1]], "float32")
    >>> [[round(float(v), 4) for v in row] for row in q(w, True, {})]
    [[1.0, 0.2], [0.5039, -0.0992]]
    """

    def __init__(self, channel_axes=(-1,), num_bits=8):
        axes = (channel_axes,) if isinstance(channel_axes, int) else tuple(channel_axes)
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
            raise ValueError(
                "Argument `channel_axes` must be an axis or a tuple of axes of the weight. "
                f"Received: channel_axes={channel_axes!r}"
            )
        self.channel_axes = axes
        self.num_bits = _check_bits(num_bits)

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        return quant_ops.fake_quant_weights(inputs, self.channel_axes, self.num_bits)

    def get_config(self):
        return {"channel_axes": list(self.channel_axes), "num_bits": self.num_bits}
