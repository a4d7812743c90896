"""The records of attention layers and of KerasHub's transformer layers.

* Keras' `MultiHeadAttention` (and KerasHub's `CachedMultiHeadAttention`, its
  subclass): prunable projections, MACs, and a channel rule that reads the
  query, key and value inputs, writes the output channels and holds heads
  (`kprune.registry.attention.HeadSpec`, head counts under `num_heads`).
* KerasHub's attention layers (Llama, Mistral, Qwen, Qwen3, Phi-3, Gemma,
  Gemma 3), registered by qualified name so that kprune never imports
  KerasHub: the same rule, reading their first argument (the hidden states).
  They have no MACs record: `kprune.stats` counts the calls they make.
* KerasHub's RMS/layer normalizations: they normalize across channels, so
  the channels reaching them are not pruned (the residual stream of a
  transformer), as for Keras' `LayerNormalization`.

The transformer blocks themselves (`LlamaTransformerDecoder`,
`TransformerEncoder`, ...) need no record: the channel graph traces their
calls (`kprune.dependency.channel_graph`) and finds the FFN's units (a gated
FFN's gate and up projections tied by their product) and the attention
layer's heads inside.

Example:

>>> import keras
>>> from kprune.registry import queries
>>> mha = keras.layers.MultiHeadAttention(num_heads=4, key_dim=2)
>>> _ = mha(keras.ops.ones((1, 3, 8)), keras.ops.ones((1, 3, 8)))
>>> spec = queries.channel_spec(mha, (1, 3, 8))
>>> spec.kind, spec.heads.num_query, spec.width_key
('producer', 4, 'output_shape')
"""

from kprune._internal import keras_layers as keras_internals
from kprune.registry import attention
from kprune.registry.einsum import einsum_input_axis
from kprune.registry.rules import (
    ACROSS_CHANNELS,
    ChannelSpec,
    LayerRule,
    PrunableWeight,
    block,
    register_named,
)


def _einsum_weights(part):
    return [PrunableWeight(part.kernel, einsum_input_axis(part.equation))]


def attention_macs(layer, ins, outs):
    """Projections (query, key, value, output) plus the two attention matmuls
    `Q K^T` and `A V`. Keys are as long as the second input (the value) when
    it has the query's rank, else as the query (self-attention)."""
    q_len = _length(outs[0])
    kv = ins[1] if len(ins) > 1 and len(ins[1]) == len(ins[0]) else ins[0]
    k_len = _length(kv)
    query, key, value, output = keras_internals.attention_projections(layer)
    d_q, heads, key_dim = (int(d) for d in query.kernel.shape)
    d_k = int(key.kernel.shape[0])
    d_v, _, value_dim = (int(d) for d in value.kernel.shape)
    d_out = int(output.kernel.shape[-1])
    projections = (q_len * d_q * heads * key_dim + k_len * d_k * heads * key_dim
                   + k_len * d_v * heads * value_dim + q_len * heads * value_dim * d_out)
    return projections + heads * q_len * k_len * (key_dim + value_dim)


def _length(shape):
    """Product of the axes between batch and channels."""
    total = 1
    for d in shape[1:-1]:
        total *= int(d or 1)
    return total


def attention_weights(layer):
    """The prunable kernels of an attention layer's projections."""
    return [w for part in attention.projections(layer).values() for w in _einsum_weights(part)]


def _reads(part, repeat=1):
    return ((part.kernel, attention.einsum_model_axis(part), repeat),)


def _attention_channels(inputs, query_key=None, kv_key=None, width_key=None):
    """A channel rule for attention layers: `inputs` maps the query, key and
    value projections to the call arguments they read."""
    def channels(layer, shape):
        spec = attention.head_spec(layer, query_key, kv_key)
        if spec is None:
            return block("its projections are not head-indexed EinsumDense layers "
                         "(LoRA-enabled, quantized, or another layout)")
        parts = attention.projections(layer)
        output = parts["attention_output"]
        out = ((output.kernel, -1, 1),)
        if getattr(output, "bias", None) is not None:
            out += ((output.bias, -1, 1),)
        reads = []
        for arguments, names in inputs:
            slices = sum((_reads(parts[n]) for n in names if n in parts), ())
            reads.append((arguments, slices))
        return ChannelSpec("producer", (), out, width_key, input_slices=tuple(reads), heads=spec)
    return channels


ATTENTION = LayerRule(
    prunable=attention_weights,
    channels=_attention_channels(
        ((("query",), ("query", "gate")), (("key", "value"), ("key",)), (("value",), ("value",))),
        query_key="num_heads", kv_key="num_heads", width_key="output_shape"),
    macs=attention_macs,
)

# KerasHub's attention layers: one input (the hidden states, the first argument).
HUB_ATTENTION = LayerRule(
    prunable=attention_weights,
    channels=_attention_channels((((0,), ("query", "key", "value")),)),
)

_HUB = "keras_hub.src.models."

HUB_ATTENTION_CLASSES = (
    "llama.llama_attention.LlamaAttention",
    "mistral.mistral_attention.CachedMistralAttention",
    "qwen.qwen_attention.QwenAttention",
    "qwen3.qwen3_attention.Qwen3Attention",
    "phi3.phi3_attention.Phi3Attention",
    "gemma.gemma_attention.CachedGemmaAttention",
    "gemma3.gemma3_attention.CachedGemma3Attention",
)

HUB_NORMALIZATIONS = (
    "llama.llama_layernorm.LlamaLayerNorm",
    "mistral.mistral_layer_norm.MistralLayerNormalization",
    "qwen.qwen_layernorm.QwenLayerNorm",
    "qwen3.qwen3_layernorm.Qwen3LayerNorm",
    "phi3.phi3_layernorm.Phi3LayerNorm",
    "gemma.rms_normalization.RMSNormalization",
    "gemma3.gemma3_layers.RMSNormalization",
)


def register_keras_hub():
    """Record KerasHub's attention and normalization layers by qualified name."""
    for name in HUB_ATTENTION_CLASSES:
        register_named(_HUB + name, HUB_ATTENTION)
    for name in HUB_NORMALIZATIONS:
        register_named(_HUB + name, ACROSS_CHANNELS)
    register_named("keras_hub.src.layers.modeling.rms_normalization.RMSNormalization", ACROSS_CHANNELS)


register_keras_hub()
