"""`PrunedMistralBackbone` and `PrunedQwenBackbone`: Mistral and Qwen2 with per-layer widths.

Mistral takes `head_dim` in its config (`None`: `hidden_dim //
num_query_heads`), so the same widths in every layer are a stock
`MistralBackbone` config (`kprune.transformers.hub_rebuild`);
`PrunedMistralBackbone` holds what that config cannot say: a query-head
count and an FFN width per layer (`layer_query_heads`,
`layer_intermediate_dims`), with KerasHub's own `MistralTransformerDecoder`
blocks, which take their widths and `head_dim`.

KerasHub's Qwen2 (`QwenBackbone`, `QwenCausalLM`) computes `head_dim =
hidden_dim // num_query_heads` in its attention (`qwen_attention.py`), as
Llama does: fewer heads need `PrunedQwenBackbone` even when every layer keeps
the same number. Its attention (`PrunedQwenAttention`) builds its
projections, with their biases, from a given `head_dim`. `QwenCausalLM`
sizes its KV cache with `hidden_dim // num_query_heads`, so that attribute of
`PrunedQwenBackbone` is `hidden_dim // head_dim` (the query heads of the
model it was pruned from) and the per-layer counts are `layer_query_heads`.

Both keep one key/value head count for every layer (`num_key_value_heads`:
the causal LMs keep one KV cache tensor), and their sliding windows
(Mistral's `sliding_window`, Qwen2's `use_sliding_window_attention` and
`sliding_window_size`). Registered with Keras as `kprune>...`, so
`keras_hub.models.Backbone.from_preset` loads them once kprune is imported.

Example:

>>> import numpy as np
>>> backbone = PrunedQwenBackbone(vocabulary_size=32, hidden_dim=16, head_dim=4,
...     num_key_value_heads=1, layer_query_heads=[2, 1], layer_intermediate_dims=[8, 4])
>>> [tuple(v.shape) for v in backbone.weights if v.path.endswith("self_attention/query/bias")]
[(2, 4), (1, 4)]
>>> backbone.num_query_heads  # what QwenCausalLM reads to size its cache: 16 // 4
4
"""

import math

import keras
from keras_hub.src.layers.modeling.rotary_embedding import RotaryEmbedding
from keras_hub.src.models.backbone import Backbone
from keras_hub.src.models.mistral.mistral_backbone import MistralBackbone
from keras_hub.src.models.mistral.mistral_layer_norm import MistralLayerNormalization
from keras_hub.src.models.mistral.mistral_transformer_decoder import MistralTransformerDecoder
from keras_hub.src.models.qwen.qwen_attention import QwenAttention
from keras_hub.src.models.qwen.qwen_backbone import QwenBackbone
from keras_hub.src.models.qwen.qwen_decoder import QwenTransformerDecoder
from keras_hub.src.models.qwen.qwen_layernorm import QwenLayerNorm

from kprune.transformers.family import (
    Family,
    backbone_inputs,
    base_config,
    cache_query_heads,
    check_query_heads,
    one_kv,
    set_widths,
    stock_config,
    uniform_widths,
)
from kprune.transformers.head_size import GivenHeadDim, HeadDim, gqa_projections
from kprune.transformers.widths import check_lists


def _embedding(vocabulary_size, hidden_dim, tie, dtype):
    return keras.layers.ReversibleEmbedding(
        input_dim=vocabulary_size, output_dim=hidden_dim, tie_weights=tie,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=0.01), dtype=dtype,
        name="token_embedding")


def _checked(owner, layer_query_heads, layer_intermediate_dims, num_key_value_heads):
    lists = check_lists(owner, layer_query_heads=layer_query_heads,
                        layer_intermediate_dims=layer_intermediate_dims)
    check_query_heads(owner, lists[0], num_key_value_heads)
    return lists


@keras.saving.register_keras_serializable(package="kprune")
class PrunedMistralBackbone(MistralBackbone):
    """A Mistral backbone with per-layer query heads and FFN widths.

    Args:
        vocabulary_size, hidden_dim, rope_max_wavelength, rope_scaling_factor,
            layer_norm_epsilon, sliding_window, dropout, dtype: as for
            `keras_hub.models.MistralBackbone`.
        head_dim: channels per attention head.
        num_key_value_heads: key/value heads of every layer.
        layer_query_heads: query heads of each layer (multiples of
            `num_key_value_heads`); its length is the number of layers.
        layer_intermediate_dims: FFN width of each layer.
    """

    def __init__(self, vocabulary_size, hidden_dim, head_dim, num_key_value_heads, layer_query_heads,
                 layer_intermediate_dims, rope_max_wavelength=10000, rope_scaling_factor=1.0,
                 layer_norm_epsilon=1e-6, sliding_window=512, dropout=0, dtype=None, **kwargs):
        layer_query_heads, layer_intermediate_dims = _checked(
            type(self).__name__, layer_query_heads, layer_intermediate_dims, num_key_value_heads)
        self.token_embedding = _embedding(vocabulary_size, hidden_dim, False, dtype)
        self.transformer_layers = []
        for i, (heads, width) in enumerate(zip(layer_query_heads, layer_intermediate_dims)):
            self.transformer_layers.append(MistralTransformerDecoder(
                intermediate_dim=width, num_query_heads=heads, num_key_value_heads=num_key_value_heads,
                rope_max_wavelength=rope_max_wavelength, rope_scaling_factor=rope_scaling_factor,
                layer_norm_epsilon=layer_norm_epsilon, activation=keras.ops.silu,
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.02), sliding_window=sliding_window,
                head_dim=head_dim, dropout=dropout, dtype=dtype, name=f"transformer_layer_{i}"))
        self.layer_norm = MistralLayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype,
                                                    name="sequence_output_layernorm")
        token_ids, padding_mask = backbone_inputs()
        x = self.token_embedding(token_ids)
        for layer in self.transformer_layers:
            x = layer(x, decoder_padding_mask=padding_mask)
        Backbone.__init__(self, inputs={"token_ids": token_ids, "padding_mask": padding_mask},
                          outputs=self.layer_norm(x), dtype=dtype, **kwargs)
        # MistralCausalLM sizes its cache with `head_dim` when set: the widest
        # layer's query heads may stand in `num_query_heads`.
        set_widths(self, vocabulary_size, hidden_dim, head_dim, num_key_value_heads, layer_query_heads,
                   layer_intermediate_dims, layer_norm_epsilon, dropout)
        self.rope_max_wavelength = rope_max_wavelength
        self.rope_scaling_factor = rope_scaling_factor
        self.sliding_window = sliding_window

    def get_config(self):
        config = Backbone.get_config(self)
        names = ("vocabulary_size", "hidden_dim", "head_dim", "num_key_value_heads", "rope_max_wavelength",
                 "rope_scaling_factor", "layer_norm_epsilon", "sliding_window", "dropout")
        config.update({name: getattr(self, name) for name in names})
        config.update(layer_query_heads=list(self.layer_query_heads),
                      layer_intermediate_dims=list(self.layer_intermediate_dims))
        return config


@keras.saving.register_keras_serializable(package="kprune")
class PrunedQwenAttention(HeadDim, QwenAttention):
    """`QwenAttention` with its head size given (`head_dim`), not computed.

    Its `build` is KerasHub's with `head_dim` in place of
    `hidden_dim // num_query_heads`; everything else is inherited.
    """

    def build(self, inputs_shape):
        self._inv_norm_factor = 1.0 / math.sqrt(self.head_dim)
        query, key, value, output = gqa_projections(self, inputs_shape, self.head_dim, qkv_bias=True)
        self._query_dense, self._key_dense, self._value_dense = query, key, value
        self._softmax = keras.layers.Softmax(axis=-1, dtype="float32", name="attention_softmax")
        self._dropout_layer = keras.layers.Dropout(rate=self.dropout, dtype=self.dtype_policy)
        self._output_dense = output
        self.rotary_embedding_layer = RotaryEmbedding(
            max_wavelength=self.rope_max_wavelength, scaling_factor=self.rope_scaling_factor,
            dtype=self.dtype_policy)
        self._dot_product_equation = "bquh,bkuh->buqk"
        self._combine_equation = "buqk,bkuh->bquh"
        self.built = True


@keras.saving.register_keras_serializable(package="kprune")
class PrunedQwenDecoder(GivenHeadDim, QwenTransformerDecoder):
    """`QwenTransformerDecoder` whose attention (`PrunedQwenAttention`) has a given `head_dim`."""

    stock_attention = QwenAttention
    pruned_attention = PrunedQwenAttention


@keras.saving.register_keras_serializable(package="kprune")
class PrunedQwenBackbone(QwenBackbone):
    """A Qwen2 backbone with per-layer query heads and FFN widths and a given `head_dim`.

    Args:
        vocabulary_size, hidden_dim, rope_max_wavelength, rope_scaling_factor,
            layer_norm_epsilon, dropout, tie_word_embeddings,
            use_sliding_window_attention, sliding_window_size, dtype: as for
            `keras_hub.models.QwenBackbone`.
        head_dim: channels per attention head.
        num_key_value_heads: key/value heads of every layer.
        layer_query_heads: query heads of each layer (multiples of
            `num_key_value_heads`); its length is the number of layers.
        layer_intermediate_dims: FFN width of each layer.
    """

    def __init__(self, vocabulary_size, hidden_dim, head_dim, num_key_value_heads, layer_query_heads,
                 layer_intermediate_dims, rope_max_wavelength=10000, rope_scaling_factor=1.0,
                 layer_norm_epsilon=1e-6, dropout=0, tie_word_embeddings=True, use_sliding_window_attention=False,
                 sliding_window_size=32768, dtype=None, **kwargs):
        owner = type(self).__name__
        layer_query_heads, layer_intermediate_dims = _checked(
            owner, layer_query_heads, layer_intermediate_dims, num_key_value_heads)
        cache_heads = cache_query_heads(owner, hidden_dim, head_dim)
        self.token_embedding = _embedding(vocabulary_size, hidden_dim, tie_word_embeddings, dtype)
        self.transformer_layers = []
        for i, (heads, width) in enumerate(zip(layer_query_heads, layer_intermediate_dims)):
            self.transformer_layers.append(PrunedQwenDecoder(
                head_dim=head_dim, intermediate_dim=width, num_query_heads=heads,
                num_key_value_heads=num_key_value_heads, rope_max_wavelength=rope_max_wavelength,
                rope_scaling_factor=rope_scaling_factor, layer_norm_epsilon=layer_norm_epsilon,
                activation=keras.ops.silu, kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
                dropout=dropout, use_sliding_window_attention=use_sliding_window_attention,
                sliding_window_size=sliding_window_size, dtype=dtype, name=f"transformer_layer_{i}"))
        self.layer_norm = QwenLayerNorm(epsilon=layer_norm_epsilon, dtype=dtype, name="sequence_output_layernorm")
        token_ids, padding_mask = backbone_inputs()
        x = self.token_embedding(token_ids)
        for layer in self.transformer_layers:
            x = layer(x, decoder_padding_mask=padding_mask)
        Backbone.__init__(self, inputs={"token_ids": token_ids, "padding_mask": padding_mask},
                          outputs=self.layer_norm(x), dtype=dtype, **kwargs)
        set_widths(self, vocabulary_size, hidden_dim, head_dim, num_key_value_heads, layer_query_heads,
                   layer_intermediate_dims, layer_norm_epsilon, dropout)
        self.num_query_heads = cache_heads  # what QwenCausalLM reads to size its KV cache
        self.rope_max_wavelength = rope_max_wavelength
        self.rope_scaling_factor = rope_scaling_factor
        self.tie_word_embeddings = tie_word_embeddings
        self.use_sliding_window_attention = use_sliding_window_attention
        self.sliding_window_size = sliding_window_size

    def get_config(self):
        config = Backbone.get_config(self)
        names = ("vocabulary_size", "hidden_dim", "head_dim", "num_key_value_heads", "rope_max_wavelength",
                 "rope_scaling_factor", "layer_norm_epsilon", "dropout", "tie_word_embeddings",
                 "use_sliding_window_attention", "sliding_window_size")
        config.update({name: getattr(self, name) for name in names})
        config.update(layer_query_heads=list(self.layer_query_heads),
                      layer_intermediate_dims=list(self.layer_intermediate_dims))
        return config


def _mistral_stock(backbone, widths, kept):
    """The stock config when every layer keeps the same widths (`head_dim`
    stays None when `hidden_dim // heads` still gives it)."""
    q, kv, ffn = uniform_widths(widths)
    if None in (q, kv, ffn):
        return None
    head_dim = widths[0].head_dim
    if backbone.head_dim is None and backbone.hidden_dim // q == head_dim:
        head_dim = None
    return stock_config(backbone, PrunedMistralBackbone, kept, num_query_heads=q, num_key_value_heads=kv,
                        intermediate_dim=ffn, head_dim=head_dim)


def _mistral_pruned(backbone, widths, kept):
    config = base_config(backbone, ("rope_max_wavelength", "rope_scaling_factor", "layer_norm_epsilon",
                                    "sliding_window", "dropout"))
    config.update(head_dim=widths[0].head_dim, num_key_value_heads=one_kv(backbone, widths),
                  layer_query_heads=[w.query_heads for w in widths],
                  layer_intermediate_dims=[w.ffn for w in widths])
    return PrunedMistralBackbone, config


def _qwen_stock(backbone, widths, kept):
    """The stock config when every layer keeps the same widths and
    `hidden_dim // heads` is the head size (no head was removed)."""
    q, kv, ffn = uniform_widths(widths)
    if None in (q, kv, ffn) or backbone.hidden_dim // q != widths[0].head_dim:
        return None
    return stock_config(backbone, PrunedQwenBackbone, kept, num_query_heads=q, num_key_value_heads=kv,
                        intermediate_dim=ffn)


def _qwen_pruned(backbone, widths, kept):
    config = base_config(backbone, ("rope_max_wavelength", "rope_scaling_factor", "layer_norm_epsilon", "dropout",
                                    "use_sliding_window_attention", "sliding_window_size"))
    config.update(head_dim=widths[0].head_dim, num_key_value_heads=one_kv(backbone, widths),
                  layer_query_heads=[w.query_heads for w in widths],
                  layer_intermediate_dims=[w.ffn for w in widths],
                  tie_word_embeddings=bool(backbone.token_embedding.tie_weights))
    return PrunedQwenBackbone, config


FAMILIES = {
    "keras_hub.src.models.mistral.mistral_backbone.MistralBackbone": Family(
        "feedforward_output_dense", _mistral_stock, _mistral_pruned, PrunedMistralBackbone),
    "keras_hub.src.models.qwen.qwen_backbone.QwenBackbone": Family(
        "feedforward_output_dense", _qwen_stock, _qwen_pruned, PrunedQwenBackbone),
}
