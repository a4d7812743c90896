"""`QuantizeConfig`: which weights, activations and outputs of a layer are quantized, and how (tfmot's).

A config names a layer's weights and activation functions with the
`Quantizer` for each, and the quantizers of its outputs. The default 8-bit
scheme makes one per layer from the layer registry
(`kprune.quantization.default_8bit`); a custom layer, or a layer to quantize
otherwise, gets one through `quantize_annotate_layer(layer, config)`, as in
tfmot's comprehensive guide.

Keras 3 difference: `QuantizeWrapper` substitutes the quantized weights for
the variables that `get_weights_and_quantizers` returns (Keras 3's `Dense.kernel`
is a read-only property), so `set_quantize_weights` is not called; it may be
left out. `set_quantize_activations` is called at each call and its changes
undone after it.

The configs here: `NoOpQuantizeConfig` (quantize nothing), `OutputQuantizeConfig`
(only the output, over a moving-average range), `OutputOnlyConfig` (another
config's activations and outputs, not its weights) and `FusedOutputConfig`
(another config's weights only: its output is quantized after the op TFLite
fuses into it).

Example:

>>> cfg = OutputQuantizeConfig()
>>> [type(q).__name__ for q in cfg.get_output_quantizers(None)]
['MovingAverageQuantizer']
>>> OutputQuantizeConfig.from_config(cfg.get_config()).quantize_output
True
"""

import abc

import keras

from kprune.quantization.quantizers import MovingAverageQuantizer


class QuantizeConfig(abc.ABC):
    """How to quantize a layer (tfmot's `tfmot.quantization.keras.QuantizeConfig`).

    Implement `get_weights_and_quantizers(layer)` (`[(variable, Quantizer)]`),
    `get_activations_and_quantizers(layer)` (`[(activation function,
    Quantizer)]`), `set_quantize_activations(layer, activations)` (put the
    quantize-aware activations in place, e.g. `layer.activation =
    activations[0]`), `get_output_quantizers(layer)` (`[Quantizer]`) and
    `get_config()`. `set_quantize_weights` is optional in Keras 3 (see the
    module).

    Example:

    >>> import keras
    >>> from kprune.quantization.quantizers import LastValueQuantizer
    >>> class KernelOnly(QuantizeConfig):
    ...     def get_weights_and_quantizers(self, layer):
    ...         return [(layer.kernel, LastValueQuantizer(8, False, True, True))]
    ...     def get_activations_and_quantizers(self, layer):
    ...         return []
    ...     def set_quantize_activations(self, layer, activations):
    ...         pass
    ...     def get_output_quantizers(self, layer):
    ...         return []
    ...     def get_config(self):
    ...         return {}
    >>> dense = keras.layers.Dense(2)
    >>> dense.build((None, 3))
    >>> [w.name for w, _ in KernelOnly().get_weights_and_quantizers(dense)]
    ['kernel']
    """

    @abc.abstractmethod
    def get_weights_and_quantizers(self, layer):
        """`[(variable, Quantizer)]`: the layer's weights to quantize."""

    @abc.abstractmethod
    def get_activations_and_quantizers(self, layer):
        """`[(activation function, Quantizer)]`: the layer's activations to quantize."""

    def set_quantize_weights(self, layer, quantize_weights):  # noqa: B027 -- tfmot's API; empty on purpose
        """Not called in Keras 3: `QuantizeWrapper` substitutes the quantized weights itself."""

    @abc.abstractmethod
    def set_quantize_activations(self, layer, quantize_activations):
        """Put the quantize-aware activations in the layer (undone after each call)."""

    @abc.abstractmethod
    def get_output_quantizers(self, layer):
        """`[Quantizer]` for the layer's outputs (at most one: one output)."""

    @abc.abstractmethod
    def get_config(self):
        """The constructor's arguments."""

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def default_activation_quantizer():
    """The activation quantizer of the default 8-bit scheme: per tensor,
    asymmetric, over a moving-average range (TFLite's int8 activations)."""
    return MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)


@keras.saving.register_keras_serializable(package="kprune")
class NoOpQuantizeConfig(QuantizeConfig):
    """Quantize nothing of the layer (tfmot's `NoOpQuantizeConfig`)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="kprune")
class OutputQuantizeConfig(NoOpQuantizeConfig):
    """Quantize only the layer's output, per tensor over a moving-average range
    (tfmot's `Default8BitOutputQuantizeConfig`).

    Args:
        quantize_output: whether to quantize it. Defaults to True.
    """

    def __init__(self, quantize_output=True):
        self.quantize_output = bool(quantize_output)

    def get_output_quantizers(self, layer):
        return [default_activation_quantizer()] if self.quantize_output else []

    def get_config(self):
        return {"quantize_output": self.quantize_output}


class _Delegating(QuantizeConfig):
    """A config built on another one (`quantize_config`), serialized inside it."""

    def __init__(self, quantize_config):
        if isinstance(quantize_config, dict):
            quantize_config = keras.saving.deserialize_keras_object(quantize_config)
        if not isinstance(quantize_config, QuantizeConfig):
            raise TypeError(
                f"Argument `quantize_config` of {type(self).__name__} must be a QuantizeConfig. "
                f"Received: quantize_config={quantize_config!r}"
            )
        self.quantize_config = quantize_config

    def get_config(self):
        return {"quantize_config": keras.saving.serialize_keras_object(self.quantize_config)}


@keras.saving.register_keras_serializable(package="kprune")
class OutputOnlyConfig(_Delegating):
    """`quantize_config`'s activations and outputs, not its weights (tfmot's `OutputOnlyConfig`)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return self.quantize_config.get_activations_and_quantizers(layer)

    def set_quantize_activations(self, layer, quantize_activations):
        self.quantize_config.set_quantize_activations(layer, quantize_activations)

    def get_output_quantizers(self, layer):
        return self.quantize_config.get_output_quantizers(layer)


@keras.saving.register_keras_serializable(package="kprune")
class FusedOutputConfig(_Delegating):
    """`quantize_config`'s weights only: the layer's output goes, unquantized,
    into an op that TFLite folds or fuses into it (a Conv2D followed by
    BatchNormalization and ReLU is one int8 op), whose output is quantized."""

    def get_weights_and_quantizers(self, layer):
        return self.quantize_config.get_weights_and_quantizers(layer)

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []
