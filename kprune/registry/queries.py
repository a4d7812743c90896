"""What kprune asks of a layer, answered from its record in the registry.

`classify`, `prunable_weights`, `channel_spec`, `macs`, `linear_view`,
`channel_scale`, `resized_config`, ... read the `LayerRule` of the nearest
registered class (`kprune.registry.rules`); a kprune wrapper
(`PruneLowMagnitude`, `PruneChannels`, `QuantizeAnnotate`, `QuantizeWrapper`)
is answered for the layer it wraps. Import them from
`kprune.registry.keras_layers`, which also registers the built-in records.

Example:

>>> import keras
>>> from kprune.registry import keras_layers
>>> from kprune.registry.queries import classify, unwrap
>>> dense = keras.layers.Dense(3)
>>> classify(dense), classify(keras.layers.ReLU())
('prunable', 'pass_through')
>>> unwrap(dense) is dense
True
"""

import keras
from keras import layers as L

from kprune._internal.functional import sublayers
from kprune.registry.einsum import einsum_kernel_input_axis
from kprune.registry.rules import DEPTHWISE_FILTERS, ChannelSpec, PrunableWeight, block, rule_for

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


def channel_spec(layer, input_shape=None, hidden=False):
    """The `ChannelSpec` of a layer called on inputs of shape `input_shape` (a
    kprune wrapper: of its layer); with `hidden`, its hidden-size rule
    (`LayerRule.hidden`) where it has one."""
    layer = unwrap(layer)
    rule = rule_for(layer)
    if rule is not None:
        if hidden and rule.hidden is not None:
            return rule.hidden(layer, tuple(input_shape) if input_shape is not None else None)
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


def weight_owner(layer, variable):
    """The layer that holds `variable` itself: `layer`, or the sublayer that
    does (an attention layer's output projection, for the heads' `"in"`
    slices of the channel graph).

    >>> mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=2, name="mha")
    >>> _ = mha(keras.ops.ones((1, 3, 4)), keras.ops.ones((1, 3, 4)))
    >>> weight_owner(mha, mha.output_dense.kernel).name
    'attention_output'
    """
    for candidate in [layer] + sublayers(layer):
        if not sublayers(candidate, recursive=False) and any(w is variable for w in candidate.weights):
            return candidate
    return layer


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
