"""How TFLite's int8 kernels treat each Keras layer type: the `quantize` part of its record.

Quantization-aware training (`kprune.quantization`) places fake
quantization where TFLite's int8 file quantizes: weights per output channel,
one range per tensor between ops, none between a convolution and the
BatchNormalization and ReLU that TFLite folds and fuses into it. What a layer
type contributes to that is a `QuantizeSpec`, stored in the layer's one
`LayerRule` (`kprune.registry.rules`) beside its pruning facts. The built-in
Keras layers get theirs from the table at the end of this module (kept
apart from `kprune.registry.keras_layers` because its groups differ: ReLU and
MaxPooling2D pass channels alike but quantize differently);
`kprune.register_layer(cls, quantize=...)` gives a custom layer one.

Example:

>>> import keras
>>> from kprune.registry import quantize_specs
>>> spec = quantize_specs.quantize_spec(keras.layers.DepthwiseConv2D(3))
>>> spec.role, spec.weights
('producer', (('kernel', (-2, -1)),))
>>> [quantize_specs.quantize_role(layer) for layer in (
...     keras.layers.ReLU(6.0), keras.layers.Activation("softmax"), keras.layers.MaxPooling2D())]
['activation', 'fixed', 'same_scale']
"""

from typing import Callable, NamedTuple, Optional, Union

from keras import layers as L

from kprune.registry import keras_layers  # noqa: F401  (registers the built-in records first)
from kprune.registry.queries import unwrap
from kprune.registry.rules import register_quantize, rule_for

ROLES = ("producer", "batch_norm", "activation", "merge", "requantize", "same_scale", "fixed")


class QuantizeSpec(NamedTuple):
    """How TFLite's int8 kernels treat a layer type, for quantization-aware training.

    `role` is one of (or a callable `layer -> role`, for layers whose role
    depends on their settings, such as `Activation`):

    * `"producer"`: a convolution or fully connected op with weights,
      quantized per output channel (`weights`); TFLite folds a following
      BatchNormalization into it and fuses a ReLU (its own `activation` or
      the next layer), so its output is quantized only after them;
    * `"batch_norm"`: folded into the producer before it (else a multiply
      and an add, output quantized);
    * `"activation"`: an activation op, output quantized; fused into the
      producer, folded BatchNormalization or merge before it when
      `fusable(layer)` (ReLU, ReLU6);
    * `"merge"`: elementwise or concatenation of tensors (Add, Concatenate):
      output quantized, a following fusable activation fused;
    * `"requantize"`: an op whose int8 kernel writes a new scale (average
      pooling, resizing, rescaling, LeakyReLU): output quantized;
    * `"same_scale"`: an op that keeps its input's scale (max pooling,
      reshape, dropout, padding): nothing quantized;
    * `"fixed"`: an op whose int8 output range TFLite fixes (softmax,
      sigmoid): nothing quantized.

    Attributes:
        role: the role (above).
        weights: `(attribute, channel_axes)` pairs: a weight quantized per
            output channel, and the axes that index TFLite's output channels
            (one axis, or trailing axes flattened: a depthwise kernel's input
            and multiplier axes).
        fusable: `layer -> bool` (activations): whether TFLite fuses this
            instance into the op before it. None: it does not.
    """

    role: Union[str, Callable]
    weights: tuple = ()
    fusable: Optional[Callable] = None


# TFLite fuses these activation functions into the op before them
# (`fused_activation_function`: RELU, RELU6; RELU_N1_TO_1 has no Keras name).
FUSED_ACTIVATIONS = ("relu", "relu6")
# Activation functions whose int8 TFLite kernel has a fixed output range.
FIXED_RANGE_ACTIVATIONS = ("softmax", "log_softmax", "sigmoid", "tanh")


def activation_name(function):
    """The Keras name of an activation function (`keras.activations.relu` -> "relu")."""
    return getattr(function, "__name__", type(function).__name__)


def activation_role(function):
    """The role of an activation function as TFLite runs it: "activation"
    (fused into the op before it), "same_scale" (linear), "fixed" (fixed
    output range) or "requantize" (its own op, new scale)."""
    name = activation_name(function)
    if name in FUSED_ACTIVATIONS:
        return "activation"
    if name == "linear":
        return "same_scale"
    if name in FIXED_RANGE_ACTIVATIONS:
        return "fixed"
    return "requantize"


def _relu_fusable(layer):
    return (layer.negative_slope == 0 and layer.threshold == 0
            and (layer.max_value is None or float(layer.max_value) == 6.0))


def quantize_spec(layer):
    """The `QuantizeSpec` of a layer (a kprune pruning wrapper: of its layer), or None."""
    rule = rule_for(unwrap(layer))
    return rule.quantize if rule is not None else None


def quantize_role(layer):
    """The role of a layer (see `QuantizeSpec`), or None if it has no spec."""
    spec = quantize_spec(layer)
    if spec is None:
        return None
    return spec.role(unwrap(layer)) if callable(spec.role) else spec.role


def fuses_into_previous(layer):
    """Whether TFLite fuses `layer` (an activation) into the op before it."""
    spec = quantize_spec(layer)
    return spec is not None and spec.fusable is not None and bool(spec.fusable(unwrap(layer)))


PRODUCER = QuantizeSpec("producer", (("kernel", (-1,)),))


def _register_builtins():
    table = [
        ((L.Conv1D, L.Conv2D, L.Dense), PRODUCER),
        # Kernels (h, w, in, multiplier): TFLite's output channel c * m + k.
        ((L.DepthwiseConv1D, L.DepthwiseConv2D), QuantizeSpec("producer", (("kernel", (-2, -1)),))),
        ((L.BatchNormalization,), QuantizeSpec("batch_norm")),
        ((L.ReLU,), QuantizeSpec("activation", fusable=_relu_fusable)),
        ((L.Activation,), QuantizeSpec(lambda layer: activation_role(layer.activation),
                                       fusable=lambda layer: activation_name(layer.activation)
                                       in FUSED_ACTIVATIONS)),
        ((L.Add, L.Subtract, L.Multiply, L.Concatenate), QuantizeSpec("merge")),
        ((L.Average, L.Maximum, L.Minimum, L.LeakyReLU, L.ELU, L.PReLU, L.Rescaling,
          L.AveragePooling1D, L.AveragePooling2D, L.GlobalAveragePooling1D,
          L.GlobalAveragePooling2D, L.UpSampling1D, L.UpSampling2D), QuantizeSpec("requantize")),
        ((L.MaxPooling1D, L.MaxPooling2D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D,
          L.Reshape, L.Flatten, L.Permute, L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D,
          L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization,
          L.ZeroPadding1D, L.ZeroPadding2D, L.Cropping1D, L.Cropping2D,
          getattr(L, "Identity", None)), QuantizeSpec("same_scale")),
        ((L.Softmax,), QuantizeSpec("fixed")),
    ]
    for classes, spec in table:
        for cls in classes:
            if cls is not None:
                register_quantize(cls, spec)


_register_builtins()
