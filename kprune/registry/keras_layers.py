"""kprune's knowledge of Keras layers: one `LayerRule` per layer type.

Each built-in Keras layer type is described once below -- its prunable
weights, its channel rule and its MACs -- and registered in `kprune.registry.rules`,
the table that `kprune.register_layer` extends for custom layers. The rest of
kprune asks this module (`classify`, `prunable_weights`, `channel_spec`,
`macs`, ..., defined with the table in `kprune.registry.rules`); nothing else branches
on layer type.

Layers fall in three classes (`classify`):

* ``"prunable"``: a type whose record has prunable weights, or a layer that
  implements `kprune.PrunableLayer`;
* ``"pass_through"``: a registered type without prunable weights
  (normalization, activations, merges, ...), a layer without trainable
  weights, or a layer whose trainable weights are all vectors or scalars
  (a learned per-channel scale such as ConvNeXt's LayerScale, a bias);
* ``"unsupported"``: a layer with a matrix-or-larger trainable weight and no
  record.

Example:

>>> import keras
>>> from kprune.registry import keras_layers
>>> conv = keras.layers.Conv2D(8, 3, padding="same")
>>> keras_layers.macs(conv, [(None, 16, 16, 4)], [(None, 16, 16, 8)])
73728

An untied `ReversibleEmbedding` (Llama 3's): both matrices are pruned, and
its reverse call (hidden states in, logits out) is the LM-head matmul:

>>> embedding = keras.layers.ReversibleEmbedding(100, 8, tie_weights=False)
>>> embedding.build()
>>> [w.variable.name for w in keras_layers.prunable_weights(embedding)]
['embeddings', 'reverse_embeddings']
>>> keras_layers.macs(embedding, [(None, 10, 8)], [(None, 10, 100)])
8000
"""

import math
import re

import keras
from keras import layers as L

from kprune.registry.einsum import einsum_input_axis, einsum_macs
from kprune.registry.embeddings import EMBEDDING, POSITION_EMBEDDING, REVERSIBLE_EMBEDDING
from kprune.registry.linear import conv_view, dense_view, einsum_view

# The queries the rest of kprune asks (kprune.registry.queries; importing them from here
# guarantees the built-in records are registered).
from kprune.registry.queries import (  # noqa: F401
    channel_scale,
    channel_spec,
    classify,
    counted_inside,
    describe,
    is_prunable_layer,
    linear_view,
    macs,
    prunable_weights,
    resized_config,
    unwrap,
)
from kprune.registry.rules import (  # noqa: F401
    ACROSS_CHANNELS,
    DEPTHWISE_FILTERS,
    NORMALIZATION_BLOCKED,
    ChannelSpec,
    LayerRule,
    PrunableWeight,
    block,
    register,
    register_named,
    rule_for,
    variable,
)
from kprune.registry.transformer_layers import ATTENTION


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") in (None, "channels_last")


def _bias(layer, axis=0):
    bias = getattr(layer, "bias", None)
    return ((bias, axis, 1),) if isinstance(bias, keras.Variable) else ()


def _last_axis(axis, rank):
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return all(a == -1 or a == rank - 1 for a in axes)


def _spatial(shape):
    """Product of the axes between batch and channels."""
    return math.prod(int(d or 1) for d in shape[1:-1])


def _window(layer):
    return math.prod(layer.kernel_size)


def _channels_last_only(rule):
    """A channel rule that blocks channels_first layers."""
    def channels(layer, shape):
        if not _channels_last(layer):
            return block("channels_first data format")
        return rule(layer, shape)
    return channels


def _kernel(layer):
    return variable(layer, "_kernel", "kernel")


# ------------------------------------------------------------ convolutions


def _conv_channels(layer, shape):
    kernel = _kernel(layer)
    if layer.groups > 1 and shape is not None and shape[-1] == layer.groups:
        # One input channel per group: a depthwise convolution written as a
        # grouped one (ConvNeXt). Output c * m + k comes from input c.
        m = layer.filters // layer.groups
        return ChannelSpec("depthwise", (), ((kernel, -1, 1),) + _bias(layer),
                           DEPTHWISE_FILTERS, multiplier=m)
    return ChannelSpec("producer" if layer.groups == 1 else "grouped", ((kernel, -2, 1),),
                       ((kernel, -1, 1),) + _bias(layer), "filters", multiplier=layer.groups)


def _conv_macs(layer, ins, outs):
    inp, out = ins[0], outs[0]
    if _channels_last(layer):
        spatial, cin = _spatial(out), int(inp[-1])
    else:
        spatial, cin = _spatial((None,) + tuple(out[2:]) + (None,)), int(inp[1])
    return spatial * _window(layer) * (cin // layer.groups) * layer.filters


CONV = LayerRule(
    prunable=lambda layer: [PrunableWeight(_kernel(layer), -2)],
    channels=_channels_last_only(_conv_channels),
    macs=_conv_macs,
    linear=lambda layer: conv_view(layer, _kernel(layer)),
)

CONV_TRANSPOSE = LayerRule(
    # Transposed kernels are (..., out_channels, in_channels).
    prunable=lambda layer: [PrunableWeight(_kernel(layer), -1)],
    channels=_channels_last_only(lambda layer, shape: ChannelSpec(
        "producer", ((_kernel(layer), -1, 1),), ((_kernel(layer), -2, 1),) + _bias(layer), "filters")),
    macs=lambda layer, ins, outs: _spatial(ins[0]) * _window(layer) * int(ins[0][-1]) * layer.filters,
)


def _separable_macs(layer, ins, outs):
    mid = int(ins[0][-1]) * layer.depth_multiplier
    return _spatial(outs[0]) * (_window(layer) * mid + mid * layer.filters)


SEPARABLE = LayerRule(
    prunable=lambda layer: [PrunableWeight(variable(layer, "depthwise_kernel"), -2),
                            PrunableWeight(variable(layer, "pointwise_kernel"), -2)],
    channels=_channels_last_only(lambda layer, shape: ChannelSpec(
        "producer", ((layer.depthwise_kernel, -2, 1), (layer.pointwise_kernel, -2, layer.depth_multiplier)),
        ((layer.pointwise_kernel, -1, 1),) + _bias(layer), "filters")),
    macs=_separable_macs,
)

DEPTHWISE = LayerRule(
    prunable=lambda layer: [PrunableWeight(variable(layer, "kernel"), -2)],
    # The kernel (..., C, m) is cut along the input axis; the bias by output.
    channels=_channels_last_only(lambda layer, shape: ChannelSpec(
        "depthwise", ((layer.kernel, -2, 1),), _bias(layer), multiplier=layer.depth_multiplier)),
    macs=lambda layer, ins, outs: _spatial(outs[0]) * _window(layer) * int(outs[0][-1]),
)


# ------------------------------------------------------ dense and attention


def _dense_channels(layer, shape):
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return block("LoRA-enabled or quantized Dense")
    kernel = _kernel(layer)
    return ChannelSpec("producer", ((kernel, 0, 1),), ((kernel, 1, 1),) + _bias(layer), "units")


DENSE = LayerRule(
    prunable=lambda layer: [PrunableWeight(_kernel(layer), -2)],
    channels=_dense_channels,
    macs=lambda layer, ins, outs: _spatial(outs[0]) * int(ins[0][-1]) * layer.units,
    linear=lambda layer: dense_view(layer, _kernel(layer)),
)

def _einsum_channels(layer, shape):
    """An `EinsumDense` that is a Dense on the last axis (`"btd,df->btf"`:
    Gemma's FFN) is a producer; any other equation keeps its channels."""
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return block("LoRA-enabled or quantized EinsumDense")
    match = re.match(r"(\w+),(\w)(\w)->(\w+)$", layer.equation.replace(" ", ""))
    if not match:
        return block(f"equation {layer.equation!r} is not a Dense on the last axis")
    inputs, contracted, made, output = match.groups()
    bias_axes = getattr(layer, "bias_axes", None)
    if inputs[-1] != contracted or output != inputs[:-1] + made or bias_axes not in (None, made):
        return block(f"equation {layer.equation!r} is not a Dense on the last axis")
    kernel = _kernel(layer)
    return ChannelSpec("producer", ((kernel, 0, 1),), ((kernel, 1, 1),) + _bias(layer), "output_shape")


EINSUM_DENSE = LayerRule(
    prunable=lambda layer: [PrunableWeight(_kernel(layer), einsum_input_axis(layer.equation))],
    channels=_einsum_channels,
    macs=lambda layer, ins, outs: einsum_macs(layer.equation, ins[0], tuple(layer.kernel.shape), outs[0]),
    linear=lambda layer: einsum_view(layer, _kernel(layer)),
)


# ---------------------------------------------------------------- recurrent


def _rnn_macs(layer, ins, outs):
    gates = 4 if isinstance(layer, L.LSTM) else 3 if isinstance(layer, L.GRU) else 1
    return int(ins[0][1] or 1) * gates * (int(ins[0][-1]) + layer.units) * layer.units


RNN = LayerRule(
    prunable=lambda layer: [PrunableWeight(variable(layer.cell, "kernel"), -2),
                            PrunableWeight(variable(layer.cell, "recurrent_kernel"), -2)],
    macs=_rnn_macs,
)


def _bidirectional_macs(layer, ins, outs):
    out = tuple(outs[0])
    half = out[:-1] + (int(out[-1]) // 2,) if layer.merge_mode == "concat" else out
    return macs(layer.forward_layer, ins[:1], [half]) + macs(layer.backward_layer, ins[:1], [half])


BIDIRECTIONAL = LayerRule(
    prunable=lambda layer: prunable_weights(layer.forward_layer) + prunable_weights(layer.backward_layer),
    macs=_bidirectional_macs,
)


def _time_distributed_macs(layer, ins, outs):
    inp, out = tuple(ins[0]), tuple(outs[0])
    return int(inp[1] or 1) * macs(layer.layer, [(inp[0],) + inp[2:]], [(out[0],) + out[2:]])


TIME_DISTRIBUTED = LayerRule(
    prunable=lambda layer: prunable_weights(layer.layer), macs=_time_distributed_macs)


# ---------------------------------------------------- normalization, scales


def _batch_norm_channels(layer, shape):
    if shape is None or not _last_axis(layer.axis, len(shape)):
        return block(f"normalizes axis {layer.axis}, not the channel axis")
    params = tuple((v, 0, 1) for v in (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance)
                   if isinstance(v, keras.Variable))
    return ChannelSpec("pass", out_slices=params)


BATCH_NORM = LayerRule(channels=_batch_norm_channels,
                       scale=lambda layer: layer.gamma if layer.scale else None)


def _prelu_channels(layer, shape):
    if layer.alpha.shape[-1] == 1 or -1 in (layer.shared_axes or []):
        return ChannelSpec("pass")
    return ChannelSpec("pass", out_slices=((layer.alpha, -1, 1),))


def _activation_channels(layer, shape):
    if getattr(layer.activation, "__name__", "") in ("softmax", "log_softmax"):
        return block("softmax mixes channels")
    return ChannelSpec("pass")


PASS = LayerRule(channels=_channels_last_only(lambda layer, shape: ChannelSpec("pass")))
MERGE = LayerRule(channels=lambda layer, shape: ChannelSpec("merge"))


def _reshape_channels(layer, shape):
    # Row-major reshapes that keep the last axis keep channel c at c.
    if shape is not None and shape[-1] is not None and tuple(layer.target_shape)[-1] == shape[-1]:
        return ChannelSpec("pass", width_key="target_shape")
    return block("reshape changes the channel axis")


def _register_builtins():
    table = [
        ((L.Conv1D, L.Conv2D, L.Conv3D), CONV),
        ((L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose), CONV_TRANSPOSE),
        ((L.SeparableConv1D, L.SeparableConv2D), SEPARABLE),
        ((L.DepthwiseConv1D, L.DepthwiseConv2D), DEPTHWISE),
        ((L.Dense,), DENSE),
        ((L.EinsumDense,), EINSUM_DENSE),
        ((L.MultiHeadAttention,), ATTENTION),
        ((L.Embedding,), EMBEDDING),
        ((getattr(L, "ReversibleEmbedding", None),), REVERSIBLE_EMBEDDING),
        ((L.SimpleRNN, L.GRU, L.LSTM), RNN),
        ((L.Bidirectional,), BIDIRECTIONAL),
        ((L.TimeDistributed,), TIME_DISTRIBUTED),
        ((L.BatchNormalization,), BATCH_NORM),
        ((L.LayerNormalization, getattr(L, "RMSNormalization", None), L.UnitNormalization), ACROSS_CHANNELS),
        ((L.GroupNormalization, L.Normalization), NORMALIZATION_BLOCKED),
        ((L.PReLU,), LayerRule(channels=_prelu_channels)),
        ((L.Softmax,), LayerRule(channels=lambda layer, shape: block("softmax mixes channels"))),
        ((L.Activation,), LayerRule(channels=_activation_channels)),
        ((L.ReLU, L.LeakyReLU, L.ELU, getattr(L, "Identity", None), L.Dropout,
          L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise,
          L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization,
          L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D,
          L.AveragePooling2D, L.AveragePooling3D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D,
          L.GlobalMaxPooling3D, L.GlobalAveragePooling1D, L.GlobalAveragePooling2D,
          L.GlobalAveragePooling3D, L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D,
          L.Cropping1D, L.Cropping2D, L.Cropping3D, L.UpSampling1D, L.UpSampling2D,
          L.UpSampling3D, L.Rescaling), PASS),
        ((L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum), MERGE),
        ((L.Concatenate,), LayerRule(channels=lambda layer, shape: ChannelSpec(
            "concat" if shape and _last_axis(layer.axis, len(shape)) else "merge"))),
        ((L.Flatten,), LayerRule(channels=_channels_last_only(lambda layer, shape: ChannelSpec("flatten")))),
        ((L.Reshape,), LayerRule(channels=_reshape_channels)),
        ((L.InputLayer,), LayerRule(channels=lambda layer, shape: block("model input"))),
        ((L.Dot,), LayerRule()),
    ]
    # Preprocessing layers that build state but no trainable weights.
    weightless = [getattr(L, n, None) for n in ("AugMix", "RandAugment", "RandomColorJitter",
                                                 "TextVectorization")]
    table.append((tuple(weightless), LayerRule()))
    for classes, rule in table:
        for cls in classes:
            if cls is not None:
                register(cls, rule)
    register_named("keras_hub.src.layers.modeling.position_embedding.PositionEmbedding",
                   POSITION_EMBEDDING)
    # KerasHub's own class, for Keras versions without keras.layers.ReversibleEmbedding.
    register_named("keras_hub.src.layers.modeling.reversible_embedding.ReversibleEmbedding",
                   REVERSIBLE_EMBEDDING)


_register_builtins()
