"""All knowledge of Keras layer types lives here.

For each supported layer type a handler says which of its weights are
prunable and which axis of each weight indexes the layer's input channels
(the axis M:N groups run along). Everything else in kprune asks this module;
nothing else branches on layer type.

Layers fall in three classes (`classify`):

* ``"prunable"``: a registered type, a subclass of one, or a layer that
  implements the `PrunableLayer` protocol;
* ``"pass_through"``: no trainable weights (activations, pooling, Flatten,
  merges, ...) or weights that are deliberately left dense (normalization
  layers, PReLU);
* ``"unsupported"``: trainable weights kprune does not know how to prune.
"""

import re
from typing import NamedTuple

import keras
from keras import layers as L


class PrunableWeight(NamedTuple):
    """A prunable weight and the axis of it that indexes input channels."""

    variable: keras.Variable
    input_axis: int


class PrunableLayer:
    """Protocol for custom layers that kprune can prune.

    Implement `get_prunable_weights()` returning the list of weight variables
    to prune (the layer must be built). M:N sparsity groups run along axis -2
    of each weight unless the layer also defines
    `get_prunable_weight_input_axes()` returning one axis per weight.

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


def _variable(layer, *names):
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


def _einsum_input_axis(layer):
    """Axis of an EinsumDense kernel contracted with the input (the last one)."""
    match = re.match(r"([\w.]+),([\w.]+)->", layer.equation.replace(" ", ""))
    if match:
        inputs, kernel = match.groups()
        contracted = [i for i, ch in enumerate(kernel) if ch in inputs]
        if contracted:
            return contracted[-1] - len(kernel)
    return -2


def _dense(layer):
    return [PrunableWeight(_variable(layer, "_kernel", "kernel"), -2)]


def _einsum_dense(layer):
    return [PrunableWeight(_variable(layer, "_kernel", "kernel"), _einsum_input_axis(layer))]


def _conv(layer):
    return [PrunableWeight(_variable(layer, "_kernel", "kernel"), -2)]


def _conv_transpose(layer):
    # Transposed kernels are (..., out_channels, in_channels).
    return [PrunableWeight(_variable(layer, "_kernel", "kernel"), -1)]


def _depthwise(layer):
    return [PrunableWeight(_variable(layer, "kernel"), -2)]


def _separable(layer):
    return [
        PrunableWeight(_variable(layer, "depthwise_kernel"), -2),
        PrunableWeight(_variable(layer, "pointwise_kernel"), -2),
    ]


def _embedding(layer):
    return [PrunableWeight(_variable(layer, "_embeddings", "embeddings"), -2)]


def _rnn(layer):
    cell = layer.cell
    return [
        PrunableWeight(_variable(cell, "kernel"), -2),
        PrunableWeight(_variable(cell, "recurrent_kernel"), -2),
    ]


def _bidirectional(layer):
    return prunable_weights(layer.forward_layer) + prunable_weights(layer.backward_layer)


def _time_distributed(layer):
    return prunable_weights(layer.layer)


def _multi_head_attention(layer):
    parts = (layer._query_dense, layer._key_dense, layer._value_dense, layer._output_dense)
    return [w for part in parts for w in _einsum_dense(part)]


# Order matters only for subclasses: the first matching base wins.
_HANDLERS = (
    (L.Dense, _dense),
    (L.EinsumDense, _einsum_dense),
    (L.SeparableConv1D, _separable),
    (L.SeparableConv2D, _separable),
    (L.DepthwiseConv1D, _depthwise),
    (L.DepthwiseConv2D, _depthwise),
    (L.Conv1DTranspose, _conv_transpose),
    (L.Conv2DTranspose, _conv_transpose),
    (L.Conv3DTranspose, _conv_transpose),
    (L.Conv1D, _conv),
    (L.Conv2D, _conv),
    (L.Conv3D, _conv),
    (L.Embedding, _embedding),
    (L.SimpleRNN, _rnn),
    (L.GRU, _rnn),
    (L.LSTM, _rnn),
    (L.Bidirectional, _bidirectional),
    (L.TimeDistributed, _time_distributed),
    (L.MultiHeadAttention, _multi_head_attention),
)

# Layers with trainable weights that are left dense on purpose.
_DENSE_BY_DESIGN = tuple(
    cls
    for cls in (
        L.BatchNormalization,
        L.LayerNormalization,
        L.GroupNormalization,
        getattr(L, "RMSNormalization", None),
        L.UnitNormalization,
        L.PReLU,
        L.Normalization,
    )
    if cls is not None
)


# Layers that override `build` but never create trainable weights, so they
# can be classified before they are built.
_WEIGHTLESS = tuple(
    cls
    for cls in (
        L.Add,
        L.Subtract,
        L.Multiply,
        L.Average,
        L.Maximum,
        L.Minimum,
        L.Concatenate,
        L.Dot,
        getattr(L, "AugMix", None),
        getattr(L, "RandAugment", None),
        getattr(L, "RandomColorJitter", None),
        getattr(L, "TextVectorization", None),
    )
    if cls is not None
)


def _handler(layer):
    for cls, fn in _HANDLERS:
        if isinstance(layer, cls):
            return fn
    return None


def is_prunable_layer(layer):
    """Whether `layer` implements the `PrunableLayer` protocol."""
    return callable(getattr(layer, "get_prunable_weights", None))


def classify(layer):
    """Return ``"prunable"``, ``"pass_through"`` or ``"unsupported"`` for a layer."""
    if is_prunable_layer(layer):
        return "prunable"
    if isinstance(layer, L.TimeDistributed):
        return classify(layer.layer)
    if isinstance(layer, L.Bidirectional):
        return classify(layer.forward_layer)
    if _handler(layer) is not None:
        return "prunable"
    if isinstance(layer, _DENSE_BY_DESIGN + _WEIGHTLESS) or isinstance(layer, L.InputLayer):
        return "pass_through"
    if layer.built:
        return "unsupported" if layer.trainable_weights else "pass_through"
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
    fn = _handler(layer)
    return fn(layer) if fn is not None else []


def describe(layer):
    """`'name' (ClassName)`, for messages."""
    return f"'{layer.name}' ({type(layer).__name__})"


# --------------------------------------------------------------------------
# Channel knowledge, for structured (channel) pruning.
#
# A layer's `ChannelSpec` says how it treats the last (channel) axis of the
# tensors it reads and writes, and which weight slices belong to each input or
# output channel:
#
# * "producer": reads input channels (`in_slices`) and makes new output
#   channels (`out_slices`); its width is config key `width_key`.
# * "grouped": a grouped convolution (`multiplier` groups): input channel i is
#   row `i % (C_in / groups)` of the kernel in every group, so channels
#   i, i + C_in/groups, ... are pruned together (and likewise output filters
#   j, j + C_out/groups, ...), which keeps the groups equal in size.
# * "depthwise": output channel `c * multiplier + k` comes from input channel c.
# * "pass": output channel c is input channel c (per-channel weights in
#   `out_slices`, e.g. BatchNormalization's gamma and statistics).
# * "merge": inputs are combined elementwise (Add, Multiply, ...): channel c of
#   every input and of the output is one channel.
# * "concat": output channels are the inputs' channels one after another.
# * "flatten": channels-last flatten: feature `p * C + c` is channel c.
# * "block": anything else; channels reaching it are not pruned (`reason`).
#
# A slice is `(variable, axis, repeat)`: channel i owns indices
# `i * repeat ... i * repeat + repeat - 1` along `axis`.


class ChannelSpec(NamedTuple):
    kind: str
    in_slices: tuple = ()
    out_slices: tuple = ()
    width_key: str = None
    multiplier: int = 1
    reason: str = ""


def _block(reason):
    return ChannelSpec("block", reason=reason)


def _channels_last(layer):
    fmt = getattr(layer, "data_format", "channels_last")
    return fmt in (None, "channels_last")


def _with_bias(layer, axis=0):
    bias = getattr(layer, "bias", None)
    return ((bias, axis, 1),) if isinstance(bias, keras.Variable) else ()


def _last_axis(axis, rank):
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return all(a == -1 or a == rank - 1 for a in axes)


_PASS_THROUGH_TYPES = tuple(
    cls
    for cls in (
        L.Activation, L.ReLU, L.LeakyReLU, L.ELU, getattr(L, "Identity", None),
        L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
        L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization,
        L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
        L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
        L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
        L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
        L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D,
        L.Cropping1D, L.Cropping2D, L.Cropping3D,
        L.UpSampling1D, L.UpSampling2D, L.UpSampling3D,
        L.Rescaling,
    )
    if cls is not None
)

_MERGE_TYPES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)

_SOFTMAX_NAMES = ("softmax", "log_softmax")


def channel_spec(layer, input_shape=None):
    """The `ChannelSpec` of a layer called on inputs of shape `input_shape` (a
    kprune wrapper: of its layer)."""
    layer = unwrap(layer)
    rank = len(input_shape) if input_shape is not None else None
    if isinstance(layer, L.InputLayer):
        return _block("model input")
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        if not _channels_last(layer):
            return _block("channels_first data format")
        kernel = _variable(layer, "_kernel", "kernel")
        return ChannelSpec("producer", ((kernel, -1, 1),), ((kernel, -2, 1),) + _with_bias(layer), "filters")
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        if not _channels_last(layer):
            return _block("channels_first data format")
        m = layer.depth_multiplier
        dw, pw = layer.depthwise_kernel, layer.pointwise_kernel
        return ChannelSpec(
            "producer", ((dw, -2, 1), (pw, -2, m)), ((pw, -1, 1),) + _with_bias(layer), "filters"
        )
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        if not _channels_last(layer):
            return _block("channels_first data format")
        m = layer.depth_multiplier
        # The kernel (..., C, m) is cut along the input axis; bias by output.
        return ChannelSpec("depthwise", ((layer.kernel, -2, 1),), _with_bias(layer), multiplier=m)
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        if not _channels_last(layer):
            return _block("channels_first data format")
        kernel = _variable(layer, "_kernel", "kernel")
        kind = "producer" if layer.groups == 1 else "grouped"
        return ChannelSpec(
            kind, ((kernel, -2, 1),), ((kernel, -1, 1),) + _with_bias(layer), "filters",
            multiplier=layer.groups,
        )
    if isinstance(layer, L.Dense):
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            return _block("LoRA-enabled or quantized Dense")
        kernel = _variable(layer, "_kernel", "kernel")
        return ChannelSpec("producer", ((kernel, 0, 1),), ((kernel, 1, 1),) + _with_bias(layer), "units")
    if isinstance(layer, L.BatchNormalization):
        if rank is None or not _last_axis(layer.axis, rank):
            return _block(f"normalizes axis {layer.axis}, not the channel axis")
        params = tuple(
            (v, 0, 1)
            for v in (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance)
            if isinstance(v, keras.Variable)
        )
        return ChannelSpec("pass", out_slices=params)
    if isinstance(layer, (L.LayerNormalization, L.GroupNormalization, getattr(L, "RMSNormalization", L.LayerNormalization), L.UnitNormalization)):
        return _block("normalizes across channels: removing channels changes its statistics")
    if isinstance(layer, L.PReLU):
        alpha = layer.alpha
        shared = layer.shared_axes or []
        if alpha.shape[-1] == 1 or -1 in shared:
            return ChannelSpec("pass")
        return ChannelSpec("pass", out_slices=((alpha, -1, 1),))
    if isinstance(layer, L.Softmax) or (
        isinstance(layer, L.Activation) and getattr(layer.activation, "__name__", "") in _SOFTMAX_NAMES
    ):
        return _block("softmax mixes channels")
    if isinstance(layer, _PASS_THROUGH_TYPES):
        if not _channels_last(layer):
            return _block("channels_first data format")
        return ChannelSpec("pass")
    if isinstance(layer, _MERGE_TYPES):
        return ChannelSpec("merge")
    if isinstance(layer, L.Concatenate):
        return ChannelSpec("concat") if rank and _last_axis(layer.axis, rank) else ChannelSpec("merge")
    if isinstance(layer, L.Flatten):
        if not _channels_last(layer):
            return _block("channels_first data format")
        return ChannelSpec("flatten")
    if isinstance(layer, L.Reshape):
        # Row-major reshapes that keep the last axis keep channel c at c.
        if input_shape is not None and input_shape[-1] is not None and tuple(layer.target_shape)[-1] == input_shape[-1]:
            return ChannelSpec("pass", width_key="target_shape")
        return _block("reshape changes the channel axis")
    if isinstance(layer, L.Embedding):
        emb = _variable(layer, "_embeddings", "embeddings")
        return ChannelSpec("producer", (), ((emb, 1, 1),), "output_dim")
    return _block(f"kprune has no channel rule for {type(layer).__name__}")


def unwrap(layer):
    """The layer a kprune wrapper (`PruneLowMagnitude`, `PruneChannels`) wraps,
    or `layer` itself."""
    while type(layer).__name__ in _WRAPPER_NAMES and getattr(layer, "layer", None) is not None:
        layer = layer.layer
    return layer


_WRAPPER_NAMES = ("PruneLowMagnitude", "PruneChannels")


def channel_scale(layer):
    """The per-channel scale (`gamma`) of a normalization layer, or None."""
    if isinstance(layer, L.BatchNormalization) and layer.scale:
        return layer.gamma
    return None


def resized_config(layer, width_key, width):
    """`layer`'s config with `width` channels under `width_key` (from its `ChannelSpec`)."""
    config = layer.get_config()
    if width_key == "target_shape":
        config[width_key] = tuple(config[width_key][:-1]) + (int(width),)
    else:
        config[width_key] = int(width)
    return config


# --------------------------------------------------------------------------
# Compute: multiply-accumulates of one call, for reports.


def _spatial(shape):
    """Product of the axes between batch and channels."""
    n = 1
    for d in shape[1:-1]:
        n *= int(d or 1)
    return n


def macs(layer, input_shapes, output_shapes):
    """Multiply-accumulates of one call of `layer` on one example.

    Counts the layers that dominate compute -- convolutions, Dense and
    EinsumDense, recurrent cells, attention projections -- and returns 0 for the
    rest (elementwise ops, pooling, normalization), as Torch-Pruning and most
    papers do. Shapes include the batch axis.

    Example:

    >>> import keras
    >>> from kprune import handlers
    >>> conv = keras.layers.Conv2D(8, 3, padding="same")
    >>> handlers.macs(conv, [(None, 16, 16, 4)], [(None, 16, 16, 8)])
    73728
    """
    layer = unwrap(layer)
    if not input_shapes or not output_shapes:
        return 0
    inp, out = tuple(input_shapes[0]), tuple(output_shapes[0])
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        k = 1
        for d in layer.kernel_size:
            k *= d
        return _spatial(inp) * k * int(inp[-1]) * layer.filters
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        k = 1
        for d in layer.kernel_size:
            k *= d
        mid = int(inp[-1]) * layer.depth_multiplier
        return _spatial(out) * (k * mid + mid * layer.filters)
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        k = 1
        for d in layer.kernel_size:
            k *= d
        return _spatial(out) * k * int(out[-1])
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        k = 1
        for d in layer.kernel_size:
            k *= d
        spatial = _spatial(out) if _channels_last(layer) else _spatial((None,) + out[2:] + (None,))
        cin = int(inp[-1] if _channels_last(layer) else inp[1])
        return spatial * k * (cin // layer.groups) * layer.filters
    if isinstance(layer, L.Dense):
        return _spatial(out) * int(inp[-1]) * layer.units
    if isinstance(layer, L.EinsumDense):
        return _einsum_macs(layer.equation, inp, tuple(layer.kernel.shape), out)
    if isinstance(layer, (L.SimpleRNN, L.GRU, L.LSTM)):
        gates = 4 if isinstance(layer, L.LSTM) else 3 if isinstance(layer, L.GRU) else 1
        steps = int(inp[1] or 1)
        return steps * gates * (int(inp[-1]) + layer.units) * layer.units
    if isinstance(layer, L.Bidirectional):
        half = out[:-1] + (int(out[-1]) // 2,) if layer.merge_mode == "concat" else out
        return macs(layer.forward_layer, [inp], [half]) + macs(layer.backward_layer, [inp], [half])
    if isinstance(layer, L.TimeDistributed):
        steps = int(inp[1] or 1)
        return steps * macs(layer.layer, [(inp[0],) + inp[2:]], [(out[0],) + out[2:]])
    return 0


def _einsum_macs(equation, inp, kernel, out):
    """Product of the sizes of every index of an EinsumDense equation (batch
    and ellipsis axes count once per example)."""
    lhs, out_spec = equation.split("->")
    in_spec, kernel_spec = lhs.split(",")
    sizes = {}
    extra = 1
    for spec, shape, skip_batch in ((in_spec, inp, True), (kernel_spec, kernel, False), (out_spec, out, True)):
        letters = spec.replace("...", "")
        dims = list(shape[len(shape) - len(letters):]) if "..." in spec else list(shape)
        if "..." in spec and spec is in_spec:
            for d in shape[1 : len(shape) - len(letters)]:
                extra *= int(d or 1)
        for position, (letter, d) in enumerate(zip(letters, dims)):
            if skip_batch and position == 0 and "..." not in spec and spec.index(letter) == 0:
                sizes.setdefault(letter, 1)
            elif d is not None:
                sizes.setdefault(letter, int(d))
    total = extra
    for d in sizes.values():
        total *= d
    return total
