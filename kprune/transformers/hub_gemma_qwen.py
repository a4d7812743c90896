"""`PrunedGemmaBackbone` and `PrunedQwen3Backbone`: per-layer widths for Gemma and Qwen3.

Gemma and Qwen3 take `head_dim` in their config, so the same widths in every
layer are a stock config (`kprune.transformers.hub_rebuild`); these
subclasses hold what the stock classes cannot say: a head count and an FFN
width per layer (`layer_query_heads`, `layer_intermediate_dims`) and, for
Gemma, each layer's attention type (`layer_sliding_window`): Gemma derives
local/global attention from the layer index (`i % 2 == 0` when
`use_sliding_window_attention`), so removing blocks would shift it; the
kept layers keep their own. Key/value heads are one count for every layer
(`num_key_value_heads`): KerasHub's causal LMs keep one KV cache tensor.
The blocks are KerasHub's own (`GemmaDecoderBlock`, `Qwen3TransformerDecoder`,
which take their widths and `head_dim`). Gemma's `layer_intermediate_dims`
are its blocks' `intermediate_dim`: twice the units of each gate.

Example:

>>> import numpy as np
>>> backbone = PrunedQwen3Backbone(vocabulary_size=32, hidden_dim=16, head_dim=4,
...     num_key_value_heads=1, layer_query_heads=[2, 1], layer_intermediate_dims=[8, 4])
>>> [tuple(v.shape) for v in backbone.weights if v.path.endswith("self_attention/query/kernel")]
[(16, 2, 4), (16, 1, 4)]
"""

import keras
from keras_hub.src.models.backbone import Backbone
from keras_hub.src.models.gemma.gemma_backbone import GemmaBackbone
from keras_hub.src.models.gemma.gemma_decoder_block import GemmaDecoderBlock
from keras_hub.src.models.gemma.rms_normalization import RMSNormalization
from keras_hub.src.models.qwen3.qwen3_backbone import Qwen3Backbone
from keras_hub.src.models.qwen3.qwen3_decoder import Qwen3TransformerDecoder
from keras_hub.src.models.qwen3.qwen3_layernorm import Qwen3LayerNorm

from kprune.transformers.family import (
    Family,
    backbone_inputs,
    base_config,
    check_query_heads,
    hidden_width,
    one_kv,
    set_widths,
    stock_config,
    uniform_widths,
)
from kprune.transformers.widths import check_lists


@keras.saving.register_keras_serializable(package="kprune")
class PrunedGemmaBackbone(GemmaBackbone):
    """A Gemma backbone with per-layer query heads, FFN widths and attention types.

    Args:
        vocabulary_size, hidden_dim, head_dim, layer_norm_epsilon, dropout,
            query_head_dim_normalize, use_post_ffw_norm, use_post_attention_norm,
            attention_logit_soft_cap, final_logit_soft_cap, sliding_window_size,
            dtype: as for `keras_hub.models.GemmaBackbone`.
        num_key_value_heads: key/value heads of every layer.
        layer_query_heads: query heads of each layer.
        layer_intermediate_dims: each layer's `intermediate_dim` (twice its units).
        layer_sliding_window: whether each layer attends locally.
    """

    def __init__(self, vocabulary_size, hidden_dim, head_dim, num_key_value_heads, layer_query_heads,
                 layer_intermediate_dims, layer_sliding_window, query_head_dim_normalize=True,
                 use_post_ffw_norm=False, use_post_attention_norm=False, attention_logit_soft_cap=None,
                 final_logit_soft_cap=None, sliding_window_size=4096, layer_norm_epsilon=1e-6, dropout=0,
                 dtype=None, **kwargs):
        owner = type(self).__name__
        layer_query_heads, layer_intermediate_dims = check_lists(
            owner, layer_query_heads=layer_query_heads, layer_intermediate_dims=layer_intermediate_dims)
        if len(layer_sliding_window) != len(layer_query_heads):
            raise ValueError(f"Argument `layer_sliding_window` of {owner} needs one entry per layer. "
                             f"Received: layer_sliding_window={layer_sliding_window!r}")
        check_query_heads(owner, layer_query_heads, num_key_value_heads)
        self.token_embedding = keras.layers.ReversibleEmbedding(
            input_dim=vocabulary_size, output_dim=hidden_dim, tie_weights=True,
            embeddings_initializer=keras.initializers.VarianceScaling(
                scale=1.0, mode="fan_in", distribution="untruncated_normal"),
            dtype=dtype, logit_soft_cap=final_logit_soft_cap, name="token_embedding")
        self.transformer_layers = []
        for i, (heads, width, local) in enumerate(
                zip(layer_query_heads, layer_intermediate_dims, layer_sliding_window)):
            self.transformer_layers.append(GemmaDecoderBlock(
                intermediate_dim=width, hidden_dim=hidden_dim, num_query_heads=heads, head_dim=head_dim,
                num_key_value_heads=num_key_value_heads, query_head_dim_normalize=query_head_dim_normalize,
                use_post_ffw_norm=use_post_ffw_norm, use_post_attention_norm=use_post_attention_norm,
                logit_soft_cap=attention_logit_soft_cap, use_sliding_window_attention=bool(local),
                sliding_window_size=sliding_window_size, dropout=dropout, dtype=dtype,
                name=f"decoder_block_{i}"))
        self.layer_norm = RMSNormalization(epsilon=layer_norm_epsilon, dtype=dtype, name="final_normalization")
        token_ids, padding_mask = backbone_inputs()
        x = self.token_embedding(token_ids)
        x = x * keras.ops.cast(keras.ops.sqrt(hidden_dim), x.dtype)
        for layer in self.transformer_layers:
            x = layer(x, padding_mask=padding_mask)
        Backbone.__init__(self, inputs={"token_ids": token_ids, "padding_mask": padding_mask},
                          outputs=self.layer_norm(x), dtype=dtype, **kwargs)
        set_widths(self, vocabulary_size, hidden_dim, head_dim, num_key_value_heads, layer_query_heads,
                    layer_intermediate_dims, layer_norm_epsilon, dropout)
        self.layer_sliding_window = [bool(v) for v in layer_sliding_window]
        self.query_head_dim_normalize = query_head_dim_normalize
        self.use_post_ffw_norm = use_post_ffw_norm
        self.use_post_attention_norm = use_post_attention_norm
        self.attention_logit_soft_cap = attention_logit_soft_cap
        self.final_logit_soft_cap = final_logit_soft_cap
        self.sliding_window_size = sliding_window_size
        self.use_sliding_window_attention = any(self.layer_sliding_window)

    def get_config(self):
        config = Backbone.get_config(self)
        names = ("vocabulary_size", "hidden_dim", "head_dim", "num_key_value_heads", "layer_norm_epsilon",
                 "dropout", "query_head_dim_normalize", "use_post_ffw_norm", "use_post_attention_norm",
                 "attention_logit_soft_cap", "final_logit_soft_cap", "sliding_window_size")
        config.update({name: getattr(self, name) for name in names})
        config.update(layer_query_heads=list(self.layer_query_heads),
                      layer_intermediate_dims=list(self.layer_intermediate_dims),
                      layer_sliding_window=list(self.layer_sliding_window))
        return config


@keras.saving.register_keras_serializable(package="kprune")
class PrunedQwen3Backbone(Qwen3Backbone):
    """A Qwen3 backbone with per-layer query heads and FFN widths.

    Args:
        vocabulary_size, hidden_dim, head_dim, rope_max_wavelength,
            rope_scaling_factor, layer_norm_epsilon, dropout,
            tie_word_embeddings, sliding_window_size, dtype: as for
            `keras_hub.models.Qwen3Backbone`.
        num_key_value_heads: key/value heads of every layer.
        layer_query_heads: query heads of each layer.
        layer_intermediate_dims: FFN width of each layer.
    """

    def __init__(self, vocabulary_size, hidden_dim, head_dim, num_key_value_heads, layer_query_heads,
                 layer_intermediate_dims, rope_max_wavelength=10000, rope_scaling_factor=1.0,
                 layer_norm_epsilon=1e-6, dropout=0.0, tie_word_embeddings=True, sliding_window_size=32768,
                 dtype=None, **kwargs):
        owner = type(self).__name__
        layer_query_heads, layer_intermediate_dims = check_lists(
            owner, layer_query_heads=layer_query_heads, layer_intermediate_dims=layer_intermediate_dims)
        check_query_heads(owner, layer_query_heads, num_key_value_heads)
        self.token_embedding = keras.layers.ReversibleEmbedding(
            input_dim=vocabulary_size, output_dim=hidden_dim, tie_weights=tie_word_embeddings,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.01), dtype=dtype,
            name="token_embedding")
        self.transformer_layers = []
        for i, (heads, width) in enumerate(zip(layer_query_heads, layer_intermediate_dims)):
            self.transformer_layers.append(Qwen3TransformerDecoder(
                intermediate_dim=width, head_dim=head_dim, num_query_heads=heads,
                num_key_value_heads=num_key_value_heads, rope_max_wavelength=rope_max_wavelength,
                rope_scaling_factor=rope_scaling_factor, layer_norm_epsilon=layer_norm_epsilon,
                activation=keras.ops.silu, kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
                dropout=dropout, sliding_window_size=sliding_window_size, dtype=dtype,
                name=f"transformer_layer_{i}"))
        self.layer_norm = Qwen3LayerNorm(epsilon=layer_norm_epsilon, dtype=dtype,
                                         name="sequence_output_layernorm")
        token_ids, padding_mask = backbone_inputs()
        x = self.token_embedding(token_ids)
        for layer in self.transformer_layers:
            x = layer(x, decoder_padding_mask=padding_mask)
        Backbone.__init__(self, inputs={"token_ids": token_ids, "padding_mask": padding_mask},
                          outputs=self.layer_norm(x), dtype=dtype, **kwargs)
        set_widths(self, vocabulary_size, hidden_dim, head_dim, num_key_value_heads, layer_query_heads,
                    layer_intermediate_dims, layer_norm_epsilon, dropout)
        self.rope_max_wavelength = rope_max_wavelength
        self.rope_scaling_factor = rope_scaling_factor
        self.tie_word_embeddings = tie_word_embeddings
        self.sliding_window_size = sliding_window_size

    def get_config(self):
        config = Backbone.get_config(self)
        names = ("vocabulary_size", "hidden_dim", "head_dim", "num_key_value_heads", "rope_max_wavelength",
                 "rope_scaling_factor", "layer_norm_epsilon", "dropout", "tie_word_embeddings",
                 "sliding_window_size")
        config.update({name: getattr(self, name) for name in names})
        config.update(layer_query_heads=list(self.layer_query_heads),
                      layer_intermediate_dims=list(self.layer_intermediate_dims))
        return config


def _sliding(backbone, kept):
    """Whether each kept Gemma layer attends locally, and the stock pattern for as many layers."""
    flags = [bool(backbone.transformer_layers[i].use_sliding_window_attention) for i in kept]
    stock = [bool(backbone.use_sliding_window_attention) and j % 2 == 0 for j in range(len(kept))]
    return flags, stock


def _gemma_stock(backbone, widths, kept):
    q, kv, ffn = uniform_widths(widths)
    flags, stock = _sliding(backbone, kept)
    if None in (q, kv, ffn) or flags != stock:
        return None
    return stock_config(backbone, PrunedGemmaBackbone, kept, num_query_heads=q, num_key_value_heads=kv,
                        intermediate_dim=2 * ffn, hidden_dim=hidden_width(backbone, widths))


def _gemma_pruned(backbone, widths, kept):
    config = base_config(backbone, (
        "head_dim", "layer_norm_epsilon", "dropout", "query_head_dim_normalize", "use_post_ffw_norm",
        "use_post_attention_norm", "attention_logit_soft_cap", "final_logit_soft_cap", "sliding_window_size"),
        widths)
    config.update(num_key_value_heads=one_kv(backbone, widths),
                  layer_query_heads=[w.query_heads for w in widths],
                  layer_intermediate_dims=[2 * w.ffn for w in widths],
                  layer_sliding_window=_sliding(backbone, kept)[0])
    return PrunedGemmaBackbone, config


def _qwen3_stock(backbone, widths, kept):
    q, kv, ffn = uniform_widths(widths)
    if None in (q, kv, ffn):
        return None
    return stock_config(backbone, PrunedQwen3Backbone, kept, num_query_heads=q, num_key_value_heads=kv,
                        intermediate_dim=ffn, hidden_dim=hidden_width(backbone, widths))


def _qwen3_pruned(backbone, widths, kept):
    config = base_config(backbone, ("head_dim", "rope_max_wavelength", "rope_scaling_factor", "layer_norm_epsilon",
                                    "dropout", "sliding_window_size"), widths)
    config.update(num_key_value_heads=one_kv(backbone, widths),
                  layer_query_heads=[w.query_heads for w in widths],
                  layer_intermediate_dims=[w.ffn for w in widths],
                  tie_word_embeddings=bool(backbone.token_embedding.tie_weights))
    return PrunedQwen3Backbone, config


FAMILIES = {
    # Gemma 2 is a GemmaBackbone too (post norms, soft caps, sliding window).
    "keras_hub.src.models.gemma.gemma_backbone.GemmaBackbone": Family(
        "ffw_linear", _gemma_stock, _gemma_pruned, PrunedGemmaBackbone, hidden=True),
    "keras_hub.src.models.qwen3.qwen3_backbone.Qwen3Backbone": Family(
        "feedforward_output_dense", _qwen3_stock, _qwen3_pruned, PrunedQwen3Backbone, hidden=True),
}
