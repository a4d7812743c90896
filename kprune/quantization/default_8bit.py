"""The default 8-bit scheme: what TFLite's int8 kernels compute (tfmot's `default_8bit`).

* Weights of convolutions, depthwise convolutions and Dense layers:
  symmetric, per output channel, in [-127, 127]
  (`PerChannelWeightsQuantizer`). tfmot quantizes Dense kernels per tensor
  and depthwise kernels effectively per tensor (its axis is the depth
  multiplier); TFLite's kernels and its post-training quantizer use one
  scale per output channel, and so does kprune.
* Activations: per tensor, asymmetric, over a moving-average range
  (`MovingAverageQuantizer`), placed where the int8 file has a tensor: after
  a convolution and the BatchNormalization and ReLU fused into it
  (`kprune.quantization.layout`), after Add, Concatenate, average pooling,
  standalone activations; none after max pooling, reshapes and dropout (their
  int8 kernels keep the scale) or softmax (TFLite fixes its range).

What each layer type is comes from the layer registry
(`kprune.registry.quantize_specs`), which `kprune.register_layer(cls,
quantize=...)` extends; this module turns it into `QuantizeConfig`s.

Example:

>>> import keras
>>> registry = Default8BitQuantizeRegistry()
>>> conv = keras.layers.Conv2D(8, 3, activation="relu")
>>> conv.build((None, 16, 16, 3))
>>> config = registry.get_quantize_config(conv)
>>> [(w.name, type(q).__name__) for w, q in config.get_weights_and_quantizers(conv)]
[('kernel', 'PerChannelWeightsQuantizer')]
>>> type(registry.get_quantize_config(keras.layers.MaxPooling2D())).__name__
'NoOpQuantizeConfig'
"""

import abc

import keras

from kprune.quantization import layout
from kprune.quantization.quantize_config import (
    NoOpQuantizeConfig,
    OutputQuantizeConfig,
    QuantizeConfig,
    default_activation_quantizer,
)
from kprune.quantization.quantizers import LastValueQuantizer, PerChannelWeightsQuantizer
from kprune.registry.quantize_specs import quantize_role, quantize_spec
from kprune.registry.queries import describe


@keras.saving.register_keras_serializable(package="kprune")
class Default8BitQuantizeConfig(QuantizeConfig):
    """Weights, activation functions and output of a layer, the default 8-bit way (tfmot's).

    Args:
        weight_attrs: names of the weight attributes to quantize (`["kernel"]`).
        activation_attrs: names of the activation-function attributes to
            quantize (`["activation"]`).
        quantize_output: whether to quantize the output.
        weight_channel_axes: per weight, the axes that index its output
            channels (quantized per channel, `PerChannelWeightsQuantizer`), or
            None: per tensor (tfmot's `LastValueQuantizer`). Defaults to None.

    Example:

    >>> cfg = Default8BitQuantizeConfig(["kernel"], ["activation"], False, [[-1]])
    >>> Default8BitQuantizeConfig.from_config(cfg.get_config()).weight_channel_axes
    [(-1,)]
    """

    def __init__(self, weight_attrs, activation_attrs, quantize_output, weight_channel_axes=None):
        self.weight_attrs = list(weight_attrs)
        self.activation_attrs = list(activation_attrs)
        self.quantize_output = bool(quantize_output)
        if weight_channel_axes is not None:
            weight_channel_axes = [tuple(axes) for axes in weight_channel_axes]
            if len(weight_channel_axes) != len(self.weight_attrs):
                raise ValueError(
                    "Argument `weight_channel_axes` needs one entry per weight attribute. Received: "
                    f"weight_attrs={self.weight_attrs}, weight_channel_axes={weight_channel_axes}"
                )
        self.weight_channel_axes = weight_channel_axes

    def weight_quantizer(self, index):
        """The quantizer of the `index`-th weight."""
        if self.weight_channel_axes is None:
            return LastValueQuantizer(num_bits=8, per_axis=False, symmetric=True, narrow_range=True)
        return PerChannelWeightsQuantizer(self.weight_channel_axes[index])

    def get_weights_and_quantizers(self, layer):
        return [(_attribute(layer, name), self.weight_quantizer(i)) for i, name in enumerate(self.weight_attrs)]

    def get_activations_and_quantizers(self, layer):
        return [(_attribute(layer, name), default_activation_quantizer()) for name in self.activation_attrs]

    def set_quantize_activations(self, layer, quantize_activations):
        for name, activation in zip(self.activation_attrs, quantize_activations):
            setattr(layer, name, activation)

    def get_output_quantizers(self, layer):
        return [default_activation_quantizer()] if self.quantize_output else []

    def get_config(self):
        return {
            "weight_attrs": list(self.weight_attrs),
            "activation_attrs": list(self.activation_attrs),
            "quantize_output": self.quantize_output,
            "weight_channel_axes": (None if self.weight_channel_axes is None
                                    else [list(axes) for axes in self.weight_channel_axes]),
        }


def _attribute(layer, name):
    value = getattr(layer, name, None)
    if value is None:
        raise ValueError(
            f"Layer {describe(layer)} has no attribute '{name}' to quantize. Check the "
            "QuantizeConfig's attribute names."
        )
    return value


class QuantizeRegistry(abc.ABC):
    """Which layers a scheme quantizes and their `QuantizeConfig`s (tfmot's `QuantizeRegistry`)."""

    @abc.abstractmethod
    def supports(self, layer):
        """Whether the scheme knows how to quantize `layer`."""

    @abc.abstractmethod
    def get_quantize_config(self, layer):
        """The `QuantizeConfig` of `layer`."""


class Default8BitQuantizeRegistry(QuantizeRegistry):
    """The default 8-bit configs, from the layer registry's `QuantizeSpec`s.

    Args:
        disable_per_axis: quantize weights per tensor (tfmot's option).
            Defaults to False.
    """

    def __init__(self, disable_per_axis=False):
        self.disable_per_axis = bool(disable_per_axis)

    def supports(self, layer):
        return quantize_role(layer) is not None

    def get_quantize_config(self, layer):
        role = quantize_role(layer)
        if role is None:
            raise ValueError(
                f"Layer {describe(layer)} is not supported by the default 8-bit scheme: kprune "
                "does not know how TFLite quantizes it. Pass a QuantizeConfig to "
                "kprune.quantization.quantize_annotate_layer(layer, quantize_config), describe "
                "its type with kprune.register_layer(cls, quantize=...), or leave it unquantized "
                "(annotate the other layers only)."
            )
        if role == "producer":
            return self.producer_config(layer, quantize_spec(layer).weights)
        if role in ("batch_norm", "activation", "merge", "requantize"):
            return OutputQuantizeConfig()
        return NoOpQuantizeConfig()

    def producer_config(self, layer, weights):
        """The config of a layer with weights `[(attribute, channel axes)]`."""
        names = [name for name, _ in weights]
        axes = None if self.disable_per_axis else [tuple(a) for _, a in weights]
        activations = ["activation"] if callable(getattr(layer, "activation", None)) else []
        return Default8BitQuantizeConfig(names, activations, False, axes)


class QuantizeScheme(abc.ABC):
    """A quantization scheme: its registry and layout (tfmot's `QuantizeScheme`)."""

    @abc.abstractmethod
    def get_quantize_registry(self):
        """The scheme's `QuantizeRegistry`."""

    def get_layout_transformer(self):
        """The layout: `Default8BitQuantizeLayoutTransform` (TFLite's fusions)."""
        return Default8BitQuantizeLayoutTransform()


class Default8BitQuantizeLayoutTransform:
    """TFLite's fusions (`kprune.quantization.layout`): no fake quantization
    between a producer, the BatchNormalization folded into it and the ReLU
    fused into it (tfmot's layout transforms, which rewrite the model; here
    the model keeps its layers and the configs change)."""

    def fused_outputs(self, model, layers):
        """The layers among `layers` whose output TFLite fuses into the next op."""
        return layout.fused_outputs(model, layers)


class Default8BitQuantizeScheme(QuantizeScheme):
    """The default 8-bit scheme (tfmot's `Default8BitQuantizeScheme`).

    Args:
        disable_per_axis: per-tensor weights. Defaults to False.

    Example:

    >>> scheme = Default8BitQuantizeScheme()
    >>> type(scheme.get_quantize_registry()).__name__
    'Default8BitQuantizeRegistry'
    """

    def __init__(self, disable_per_axis=False):
        self.disable_per_axis = bool(disable_per_axis)

    def get_quantize_registry(self):
        return Default8BitQuantizeRegistry(self.disable_per_axis)
