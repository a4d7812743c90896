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
`kprune.register_layer` live in the same table, which the queries of
`kprune.registry.queries` (`classify`, `prunable_weights`, `channel_spec`,
`macs`, ...) read; a layer is described by the record of
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
    * `"reader"`: reads input channels (`in_slices`) into outputs that are
      not channels kprune prunes (a `ReversibleEmbedding` called as the LM
      head: hidden states in, logits out);
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

    `inexact` says why removing the channels a layer reads changes its
    outputs even though its weights are sliced (a normalization's statistics
    over the channels); only the hidden-size rules (`LayerRule.hidden`) give
    it, and the channel graph makes such channels a `"hidden"` group.
    """

    kind: str
    in_slices: tuple = ()
    out_slices: tuple = ()
    width_key: str = None
    multiplier: int = 1
    reason: str = ""
    input_slices: tuple = ()
    heads: object = None
    inexact: str = ""


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
        hidden: `(layer, input_shape) -> ChannelSpec`, the channel rule
            when the hidden size (a transformer's residual stream) is pruned
            on request (`kprune.plan_channels(..., hidden=...)`), for a layer
            whose `channels` rule blocks it because removal is not
            output-equivalent (a normalization) or not expressible by one
            producer rule (an embedding that is also the LM head); None: the
            `channels` rule holds in that mode too.
    """

    prunable: Optional[Callable] = None
    channels: Optional[Callable] = None
    macs: Optional[Callable] = None
    scale: Optional[Callable] = None
    linear: Optional[Callable] = None
    quantize: Optional[tuple] = None
    hidden: Optional[Callable] = None


_RULES = {}

NORMALIZES = "normalizes across channels: removing channels changes its statistics"


def normalized_channels(layer, shape):
    """The hidden-size rule of a normalization across the last axis: its
    per-channel weights (scale, offset: every vector as long as the channels)
    are sliced, and the channels are `inexact` (its statistics change). A
    normalization of other axes, or with other weights, stays a block."""
    axis = getattr(layer, "axis", -1)
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    if shape is None or shape[-1] is None or any(int(a) % len(shape) != len(shape) - 1 for a in axes):
        return block(f"normalizes axis {axis}, not the channel axis alone")
    slices = []
    for variable in layer.weights:
        if tuple(variable.shape) != (shape[-1],):
            return block(f"weight '{variable.name}' of shape {tuple(variable.shape)} is not per-channel")
        slices.append((variable, 0, 1))
    return ChannelSpec("pass", out_slices=tuple(slices), inexact=NORMALIZES)


# Normalizations across channels (LayerNormalization, RMS norms): removing a
# channel changes every output, so the channels reaching them stay whole --
# unless the hidden size is pruned on request (`normalized_channels`).
ACROSS_CHANNELS = LayerRule(channels=lambda layer, shape: block(NORMALIZES), hidden=normalized_channels)
# Normalizations whose statistics are not one per position over the last
# axis (GroupNormalization's groups, the preprocessing Normalization's
# adapted statistics): blocked in every mode.
NORMALIZATION_BLOCKED = LayerRule(channels=lambda layer, shape: block(NORMALIZES))

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
