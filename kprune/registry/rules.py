"""The layer registry: one record (`LayerRule`) per layer type.

A `LayerRule` says everything kprune knows about a layer type:

* `prunable(layer)`: the weights magnitude pruning may zero, each with the
  axis that indexes input channels (the axis M:N groups run along);
* `channels(layer, input_shape)`: how the layer treats the channel (last)
  axis -- a `ChannelSpec`, the rule the channel dependency graph and channel
  removal follow;
* `macs(layer, input_shapes, output_shapes)`: multiply-accumulates of one
  call on one example;
* `scale(layer)`: a per-channel scale that `importance="bn_scale"` reads
  (BatchNormalization's gamma), or None;
* `linear(layer)`: the layer as a matrix product `y = x W`
  (`kprune.registry.linear.LinearView`), or None -- what one-shot pruning of
  language models (`kprune.llm`) prunes.
* `quantize`: how TFLite's int8 kernels treat the layer (a `QuantizeSpec`
  of `kprune.registry.quantize_specs`: its role, the weights quantized per
  output channel), which quantization-aware training simulates; None: it
  is not quantized.

kprune's built-in records (`kprune.registry.keras_layers`) and the records users add with
`kprune.register_layer` live in the same table, which the queries at the end
of this module (`classify`, `prunable_weights`, `channel_spec`, `macs`, ...)
read; a layer is described by the record of
the nearest class in its method resolution order, so a subclass of `Dense`
is a `Dense` unless it has a record of its own.

Example:

>>> import keras, kprune
>>> @keras.saving.register_keras_serializable(package="docs")
... class Scale(keras.layers.Layer):
...     def build(self, shape):
...         self.w = self.add_weight(shape=(shape[-1], shape[-1]))
...     def call(self, x):
...         return x @ self.w
>>> _ = kprune.register_layer(Scale, prunable=["w"], channels={
...     "reads": {"w": 0}, "writes": {"w": 1}},
...     macs=lambda layer, ins, outs: ins[0][-1] * outs[0][-1])
>>> layer = Scale()
>>> layer.build((None, 4))
>>> from kprune.registry import keras_layers
>>> [tuple(w.variable.shape) for w in keras_layers.prunable_weights(layer)]
[(4, 4)]
"""

import dataclasses
from typing import Callable, NamedTuple, Optional

import keras
from keras import layers as L

from kprune._internal.functional import sublayers
from kprune.registry.einsum import einsum_kernel_input_axis


class PrunableWeight(NamedTuple):
    """A prunable weight and the axis of it that indexes input channels."""

    variable: keras.Variable
    input_axis: int


class ChannelSpec(NamedTuple):
    """How a layer treats the last (channel) axis of the tensors it reads and writes.

    `kind` is one of:

    * `"producer"`: reads input channels (`in_slices`) and makes new output
      channels (`out_slices`); its width is config key `width_key`;
    * `"grouped"`: a grouped convolution with `multiplier` groups: channels
      `i, i + C/groups, ...` are one unit (rows and filters), so groups stay
      equal;
    * `"depthwise"`: output channel `c * multiplier + k` comes from input `c`;
    * `"pass"`: output channel c is input channel c (per-channel weights in
      `out_slices`, e.g. BatchNormalization's gamma and statistics);
    * `"merge"`: inputs combined elementwise (Add, Multiply, ...): channel c
      of every input of full width and of the output is one channel;
    * `"concat"`: output channels are the inputs' channels one after another;
    * `"flatten"`: channels-last flatten: feature `p * C + c` is channel c;
    * `"block"`: anything else: channels reaching it are not pruned (`reason`).

    A slice is `(variable, axis, repeat)`: channel i owns indices
    `i * repeat ... i * repeat + repeat - 1` along `axis`.

    A producer that reads several inputs (attention's query, key and value)
    gives `input_slices`: `((arguments, slices), ...)`, the slices read from
    the first of `arguments` (names or positions of its `call`'s parameters)
    that the call passes -- `(("key", "value"), key_slices)` for a key that
    defaults to the value. An attention layer's `heads`
    (`kprune.registry.attention.HeadSpec`) are units of their own, inside the
    layer: the channel graph makes them prunable groups.
    """

    kind: str
    in_slices: tuple = ()
    out_slices: tuple = ()
    width_key: str = None
    multiplier: int = 1
    reason: str = ""
    input_slices: tuple = ()
    heads: object = None


def block(reason):
    """A `ChannelSpec` that leaves the channels reaching a layer whole."""
    return ChannelSpec("block", reason=reason)


@dataclasses.dataclass(frozen=True)
class LayerRule:
    """Everything kprune knows about one layer type (see the module docstring).

    Attributes:
        prunable: `layer -> [PrunableWeight]`, or None if magnitude pruning
            leaves the layer dense.
        channels: `(layer, input_shape) -> ChannelSpec`, or None: channels
            reaching the layer are not pruned.
        macs: `(layer, input_shapes, output_shapes) -> int`, or None (0).
        scale: `layer -> variable or None`, the per-channel scale that
            `importance="bn_scale"` reads.
        linear: `layer -> LinearView or None`, the layer as `y = x W`
            (`kprune.registry.linear`).
        quantize: a `kprune.registry.QuantizeSpec`
            (`kprune.registry.quantize_specs`), or None: quantization-aware
            training does not know the layer.
    """

    prunable: Optional[Callable] = None
    channels: Optional[Callable] = None
    macs: Optional[Callable] = None
    scale: Optional[Callable] = None
    linear: Optional[Callable] = None
    quantize: Optional[tuple] = None


_RULES = {}

# Normalizations across channels (LayerNormalization, RMS norms): removing a
# channel changes every output, so the channels reaching them stay whole.
ACROSS_CHANNELS = LayerRule(channels=lambda layer, shape: block(
    "normalizes across channels: removing channels changes its statistics"))

# Width key of a grouped convolution with one input channel per group: its
# `filters` and `groups` shrink together (see `resized_config`).
DEPTHWISE_FILTERS = "filters/groups"


# Records of classes from optional packages (KerasHub), keyed by
# "module.QualifiedName", so that kprune need not import the package.
_NAMED_RULES = {}


def register(cls, rule):
    """Record `rule` for `cls` (and its subclasses without a record of their own)."""
    _RULES[cls] = rule


def register_quantize(cls, spec):
    """Add `spec` (a `kprune.registry.QuantizeSpec`) to the record of `cls` (a record of its
    own, which keeps the rest of the nearest record it had)."""
    own = _RULES.get(cls)
    if own is None:
        inherited = rule_for_class(cls)
        own = inherited if inherited is not None else LayerRule()
    _RULES[cls] = dataclasses.replace(own, quantize=spec)


def register_named(qualified_name, rule):
    """Record `rule` for the class named `qualified_name` ("module.Class"),
    without importing its module."""
    _NAMED_RULES[qualified_name] = rule


def rule_for(layer):
    """The `LayerRule` of the nearest registered class of `layer`, or None."""
    return rule_for_class(type(layer))


def rule_for_class(layer_class):
    """The `LayerRule` of the nearest registered class in `layer_class`'s MRO, or None."""
    for cls in layer_class.__mro__:
        rule = _RULES.get(cls)
        if rule is None and _NAMED_RULES:
            rule = _NAMED_RULES.get(f"{cls.__module__}.{cls.__qualname__}")
        if rule is not None:
            return rule
    return None


def variable(layer, *names):
    """The first attribute in `names` that holds a Keras variable."""
    for name in names:
        value = getattr(layer, name, None)
        if isinstance(value, keras.Variable):
            return value
    raise ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}) has none of the weights "
        f"{names} kprune prunes; LoRA-enabled or quantized layers are not supported. "
        "Leave the layer unwrapped."
    )


class PrunableLayer:
    """Protocol for custom layers that kprune can prune (tfmot's `PrunableLayer`).

    Implement `get_prunable_weights()` returning the list of weight variables
    to prune (the layer must be built). M:N sparsity groups run along axis -2
    of each weight unless the layer also defines
    `get_prunable_weight_input_axes()` returning one axis per weight.
    `kprune.register_layer` describes a class without changing it, and can
    also give it channel rules and MACs.

    Example:

    >>> import keras, kprune
    >>> class MyDense(keras.layers.Dense, kprune.PrunableLayer):
    ...     def get_prunable_weights(self):
    ...         return [self.kernel]
    >>> layer = kprune.prune_low_magnitude(MyDense(4))
    >>> type(layer).__name__
    'PruneLowMagnitude'
    """

    def get_prunable_weights(self):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `get_prunable_weights()`."
        )


# ------------------------------------------------------------------ queries

_WRAPPER_NAMES = ("PruneLowMagnitude", "PruneChannels", "QuantizeAnnotate", "QuantizeWrapper")


def unwrap(layer):
    """The layer a kprune wrapper (`PruneLowMagnitude`, `PruneChannels`,
    `QuantizeAnnotate`, `QuantizeWrapper`) wraps, or `layer` itself."""
    while type(layer).__name__ in _WRAPPER_NAMES and getattr(layer, "layer", None) is not None:
        layer = layer.layer
    return layer


def describe(layer):
    """`'name' (ClassName)`, for messages."""
    return f"'{layer.name}' ({type(layer).__name__})"


def is_prunable_layer(layer):
    """Whether `layer` implements the `PrunableLayer` protocol."""
    return callable(getattr(layer, "get_prunable_weights", None))


def _vector_only(layer):
    """Whether a built layer's trainable weights are all vectors or scalars."""
    return layer.built and all(len(v.shape) <= 1 for v in layer.trainable_weights)


def classify(layer):
    """Return ``"prunable"``, ``"pass_through"`` or ``"unsupported"`` for a layer."""
    if is_prunable_layer(layer):
        return "prunable"
    if isinstance(layer, L.TimeDistributed):
        return classify(layer.layer)
    if isinstance(layer, L.Bidirectional):
        return classify(layer.forward_layer)
    rule = rule_for(layer)
    if rule is not None:
        return "prunable" if rule.prunable is not None else "pass_through"
    if layer.built:
        return "pass_through" if _vector_only(layer) else "unsupported"
    # An unbuilt layer that never overrides `build` creates no weights.
    return "pass_through" if type(layer).build is L.Layer.build else "unsupported"


def prunable_weights(layer):
    """The `PrunableWeight`s of a built layer (an empty list for pass-through layers)."""
    if is_prunable_layer(layer):
        variables = list(layer.get_prunable_weights())
        axes_fn = getattr(layer, "get_prunable_weight_input_axes", None)
        axes = list(axes_fn()) if callable(axes_fn) else [-2] * len(variables)
        if len(axes) != len(variables):
            raise ValueError(
                f"Layer '{layer.name}': `get_prunable_weight_input_axes()` returned "
                f"{len(axes)} axes for {len(variables)} prunable weights."
            )
        for v in variables:
            if not isinstance(v, keras.Variable):
                raise TypeError(
                    f"Layer '{layer.name}': `get_prunable_weights()` must return Keras "
                    f"variables. Received: {type(v).__name__}"
                )
        return [PrunableWeight(v, a) for v, a in zip(variables, axes)]
    rule = rule_for(layer)
    return rule.prunable(layer) if rule is not None and rule.prunable is not None else []


def _vector_channels(layer, shape):
    """A layer with only per-channel (or scalar) weights passes channels
    through; removal slices its vectors and resizes the config key that
    holds its width (the one integer setting equal to the channel count)."""
    channels = shape[-1] if shape else None
    slices = []
    for v in layer.weights:
        size = int(v.shape[0]) if len(v.shape) == 1 else 1
        if len(v.shape) == 1 and size != 1:
            if size != channels:
                return block(f"weight '{v.name}' of size {size} is not per-channel ({channels} channels)")
            slices.append((v, 0, 1))
    if not slices:
        return ChannelSpec("pass")
    keys = [k for k, value in layer.get_config().items()
            if isinstance(value, int) and not isinstance(value, bool) and value == channels]
    if len(keys) > 1:
        return block(f"its config keys {keys} all equal its width: which one sets it is unknown")
    return ChannelSpec("pass", out_slices=tuple(slices), width_key=keys[0] if keys else None)


def channel_spec(layer, input_shape=None):
    """The `ChannelSpec` of a layer called on inputs of shape `input_shape` (a
    kprune wrapper: of its layer)."""
    layer = unwrap(layer)
    rule = rule_for(layer)
    if rule is not None:
        if rule.channels is None:
            return block(f"kprune has no channel rule for {type(layer).__name__}")
        return rule.channels(layer, tuple(input_shape) if input_shape is not None else None)
    if layer.weights and _vector_only(layer) and input_shape is not None:
        return _vector_channels(layer, tuple(input_shape))
    return block(f"kprune has no channel rule for {type(layer).__name__}")


def reader_input_axis(layer, variable, axis):
    """The axis of `layer`'s input that its weight `variable`'s `axis` reads
    (an `"in"` slice of the channel graph), or None: the last axis for a
    Dense or channels-last convolution kernel's input axis, the contracted
    input axis of an `EinsumDense` (an attention output projection's heads:
    -2). Data criteria read a unit's activations there."""
    layer = unwrap(layer)
    equation = getattr(layer, "equation", None)
    shape = tuple(variable.shape)
    axis = axis % len(shape)
    if isinstance(equation, str):
        return einsum_kernel_input_axis(equation, axis)
    weights = prunable_weights(layer) if rule_for(layer) is not None else []
    for weight in weights:
        if weight.variable is variable and weight.input_axis % len(shape) == axis:
            return -1
    return None


def channel_scale(layer):
    """The per-channel scale (`gamma`) of a normalization layer, or None."""
    rule = rule_for(unwrap(layer))
    return rule.scale(unwrap(layer)) if rule is not None and rule.scale is not None else None


def linear_view(layer):
    """The `LinearView` of a built layer (`y = rows(x) @ matrix(kernel)`), or
    None for a layer that is not a plain matrix product (a kprune wrapper: of
    its layer)."""
    layer = unwrap(layer)
    rule = rule_for(layer)
    if rule is None or rule.linear is None or not layer.built:
        return None
    return rule.linear(layer)


def resized_config(layer, width_key, width, config=None):
    """`layer`'s config (or `config`, to resize several keys) with `width`
    channels under `width_key` (from its `ChannelSpec`, or a `HeadSpec`'s
    head-count key). A shape-valued key (`target_shape`, `EinsumDense`'s
    `output_shape`) gets `width` as its last entry."""
    config = dict(layer.get_config() if config is None else config)
    if width_key == DEPTHWISE_FILTERS:
        multiplier = config["filters"] // config["groups"]
        config["filters"], config["groups"] = int(width), int(width) // multiplier
    elif isinstance(config.get(width_key), (tuple, list)):
        config[width_key] = tuple(config[width_key][:-1]) + (int(width),)
    else:
        config[width_key] = int(width)
    return config


def counted_inside(layer):
    """Whether the MACs of a call of `layer` are those of the calls it makes:
    it has no MACs record of its own and holds layers (KerasHub's
    transformer blocks and attention layers, a user's residual block).
    `kprune.stats` traces such a call (`kprune._internal.tracing.trace_call`) and counts
    each layer and `keras.ops` call inside it."""
    layer = unwrap(layer)
    rule = rule_for(layer)
    if rule is not None and rule.macs is not None:
        return False
    return bool(sublayers(layer, recursive=False))


def macs(layer, input_shapes, output_shapes):
    """Multiply-accumulates of one call of `layer` on one example.

    Counts what its record says: convolutions, Dense and EinsumDense,
    recurrent cells, attention (projections and both attention matmuls),
    embeddings used as a language-model head, and the `keras.ops` matmuls and
    einsums between layers (`kprune.registry.ops`). Elementwise work
    (activations, normalization, pooling, adds) counts 0, as in Torch-Pruning
    and most papers. A layer that holds layers and has no record counts 0
    here: its calls are counted (`counted_inside`). Shapes include the batch
    axis.
    """
    layer = unwrap(layer)
    if not input_shapes or not output_shapes:
        return 0
    ins = [tuple(s) for s in input_shapes]
    outs = [tuple(s) for s in output_shapes]
    rule = rule_for(layer)
    if rule is None or rule.macs is None:
        return 0
    return int(rule.macs(layer, ins, outs))
