"""`PrunedLlama3Backbone`: a KerasHub Llama 3 with per-layer widths and an explicit head_dim.

KerasHub's `LlamaBackbone` takes one head count and one FFN width for every
layer, and its attention computes `head_dim = hidden_dim // num_query_heads`
(`llama_attention.py`): removing whole heads, the only exact way, changes
that quotient. This subclass takes the widths of each layer
(`layer_query_heads`, `layer_intermediate_dims`) and `head_dim`; its
attention layer (`PrunedLlamaAttention`) builds its projections with that
`head_dim`. Key/value heads stay one count for every layer
(`num_key_value_heads`): KerasHub's `LlamaCausalLM` keeps one KV cache
tensor `[batch, layers, 2, length, kv_heads, head_dim]`.

`LlamaCausalLM` sizes that cache with `hidden_dim // num_query_heads` as the
head size, so this backbone's `num_query_heads` attribute is
`hidden_dim // head_dim` -- the query-head count of the model it was pruned
from -- and `Llama3CausalLM(backbone=small)` generates as it does on the
stock backbone. The per-layer counts are `layer_query_heads`. Its
`get_config` keeps `tie_word_embeddings` (the stock one drops it: a tied
Llama would reload untied). Registered with Keras as
`kprune>PrunedLlama3Backbone`, so `keras_hub.models.Backbone.from_preset`
loads it once kprune is imported.

Example:

>>> import numpy as np
>>> backbone = PrunedLlama3Backbone(vocabulary_size=32, hidden_dim=16, head_dim=4,
...     num_key_value_heads=2, layer_query_heads=[4, 2], layer_intermediate_dims=[24, 8])
>>> [tuple(v.shape) for v in backbone.weights if v.path.endswith("self_attention/query/kernel")]
[(16, 4, 4), (16, 2, 4)]
>>> outputs = backbone({"token_ids": np.ones((1, 5), "int32"), "padding_mask": np.ones((1, 5), "int32")})
>>> tuple(outputs.shape)
(1, 5, 16)
"""

import math

import keras
from keras_hub.src.models.backbone import Backbone
from keras_hub.src.models.llama.llama_attention import LlamaAttention
from keras_hub.src.models.llama.llama_decoder import LlamaTransformerDecoder
from keras_hub.src.models.llama.llama_layernorm import LlamaLayerNorm
from keras_hub.src.models.llama.llama_rotary_embedding import LlamaRotaryEmbedding
from keras_hub.src.models.llama3.llama3_backbone import Llama3Backbone

from kprune.transformers.family import (
    Family,
    base_config,
    cache_query_heads,
    check_query_heads,
    hidden_width,
    one_kv,
    stock_config,
    uniform_widths,
)
from kprune.transformers.head_size import GivenHeadDim, HeadDim, gqa_projections
from kprune.transformers.widths import check_lists


@keras.saving.register_keras_serializable(package="kprune")
class PrunedLlamaAttention(HeadDim, LlamaAttention):
    """`LlamaAttention` with its head size given (`head_dim`), not computed.

    Its `build` is KerasHub's with `head_dim` in place of
    `hidden_dim // num_query_heads`; everything else is inherited.
    """

    def build(self, inputs_shape):
        self._inv_norm_factor = 1.0 / math.sqrt(self.head_dim)
        query, key, value, output = gqa_projections(self, inputs_shape, self.head_dim)
        self._query_dense, self._key_dense, self._value_dense = query, key, value
        self._softmax = keras.layers.Softmax(axis=-1, dtype="float32", name="attention_softmax")
        self._dropout_layer = keras.layers.Dropout(rate=self.dropout, dtype=self.dtype_policy)
        self._output_dense = output
        self.rotary_embedding_layer = LlamaRotaryEmbedding(
            max_wavelength=self.rope_max_wavelength,
            position_scaling_factor=self.rope_position_scaling_factor,
            frequency_adjustment_factor=self.rope_frequency_adjustment_factor,
            low_freq_factor=self.rope_low_freq_factor,
            high_freq_factor=self.rope_high_freq_factor,
            pretraining_sequence_length=self.rope_pretraining_sequence_length,
            dtype=self.dtype_policy,
        )
        self._dot_product_equation = "bquh,bkuh->buqk"
        self._combine_equation = "buqk,bkuh->bquh"
        self.built = True


@keras.saving.register_keras_serializable(package="kprune")
class PrunedLlamaDecoder(GivenHeadDim, LlamaTransformerDecoder):
    """`LlamaTransformerDecoder` whose attention has a given `head_dim`.

    KerasHub's `build` makes a `LlamaAttention`; this class swaps it, as it is
    assigned, for a `PrunedLlamaAttention` with the same settings and
    `head_dim` (the rest of `build` runs unchanged).
    """

    stock_attention = LlamaAttention
    pruned_attention = PrunedLlamaAttention

    def pruned_from(self, stock):
        # LlamaAttention's get_config names an attribute it does not set: its settings, one by one.
        names = ("num_query_heads", "num_key_value_heads", "rope_max_wavelength", "rope_position_scaling_factor",
                 "rope_frequency_adjustment_factor", "rope_low_freq_factor", "rope_high_freq_factor",
                 "rope_pretraining_sequence_length", "kernel_initializer", "dropout")
        return PrunedLlamaAttention(head_dim=self.head_dim, dtype=stock.dtype_policy, name=stock.name,
                                    **{name: getattr(stock, name) for name in names})


@keras.saving.register_keras_serializable(package="kprune")
class PrunedLlama3Backbone(Llama3Backbone):
    """A Llama 3 backbone with per-layer query heads and FFN widths.

    Args:
        vocabulary_size, hidden_dim, rope_*, layer_norm_epsilon, dropout,
            dtype, tie_word_embeddings: as for `keras_hub.models.Llama3Backbone`.
        head_dim: channels per attention head.
        num_key_value_heads: key/value heads of every layer.
        layer_query_heads: query heads of each layer (a multiple of
            `num_key_value_heads`); its length is the number of layers.
        layer_intermediate_dims: FFN width of each layer.
    """

    def __init__(
        self,
        vocabulary_size,
        hidden_dim,
        head_dim,
        num_key_value_heads,
        layer_query_heads,
        layer_intermediate_dims,
        rope_max_wavelength=10000,
        rope_position_scaling_factor=1.0,
        rope_frequency_adjustment_factor=None,
        rope_low_freq_factor=None,
        rope_high_freq_factor=None,
        rope_pretraining_sequence_length=None,
        layer_norm_epsilon=1e-6,
        dropout=0,
        dtype=None,
        tie_word_embeddings=False,
        **kwargs,
    ):
        layer_query_heads, layer_intermediate_dims = check_lists(
            type(self).__name__, layer_query_heads=layer_query_heads,
            layer_intermediate_dims=layer_intermediate_dims)
        check_query_heads(type(self).__name__, layer_query_heads, num_key_value_heads)
        rope = dict(
            rope_max_wavelength=rope_max_wavelength,
            rope_position_scaling_factor=rope_position_scaling_factor,
            rope_frequency_adjustment_factor=rope_frequency_adjustment_factor,
            rope_low_freq_factor=rope_low_freq_factor,
            rope_high_freq_factor=rope_high_freq_factor,
            rope_pretraining_sequence_length=rope_pretraining_sequence_length,
        )
        self.token_embedding = keras.layers.ReversibleEmbedding(
            input_dim=vocabulary_size, output_dim=hidden_dim, tie_weights=tie_word_embeddings,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.01),
            dtype=dtype, name="token_embedding",
        )
        self.transformer_layers = []
        for i, (heads, width) in enumerate(zip(layer_query_heads, layer_intermediate_dims)):
            self.transformer_layers.append(PrunedLlamaDecoder(
                head_dim=head_dim, intermediate_dim=width, num_query_heads=heads,
                num_key_value_heads=num_key_value_heads, layer_norm_epsilon=layer_norm_epsilon,
                activation=keras.ops.silu, kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
                dropout=dropout, dtype=dtype, name=f"transformer_layer_{i}", **rope,
            ))
        self.layer_norm = LlamaLayerNorm(epsilon=layer_norm_epsilon, dtype=dtype,
                                         name="sequence_output_layernorm")
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        x = self.token_embedding(token_ids)
        for layer in self.transformer_layers:
            x = layer(x, decoder_padding_mask=padding_mask)
        Backbone.__init__(
            self, inputs={"token_ids": token_ids, "padding_mask": padding_mask},
            outputs=self.layer_norm(x), dtype=dtype, **kwargs)
        self.vocabulary_size = vocabulary_size
        self.num_layers = len(layer_query_heads)
        self.hidden_dim = hidden_dim
        self.head_dim = int(head_dim)
        self.num_key_value_heads = num_key_value_heads
        self.layer_query_heads = layer_query_heads
        self.layer_intermediate_dims = layer_intermediate_dims
        # What LlamaCausalLM reads to size its KV cache (see the module docstring).
        self.num_query_heads = cache_query_heads(type(self).__name__, hidden_dim, self.head_dim)
        self.intermediate_dim = max(layer_intermediate_dims)
        for key, value in rope.items():
            setattr(self, key, value)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.tie_word_embeddings = tie_word_embeddings

    def get_config(self):
        config = Backbone.get_config(self)
        config.update({
            "vocabulary_size": self.vocabulary_size,
            "hidden_dim": self.hidden_dim,
            "head_dim": self.head_dim,
            "num_key_value_heads": self.num_key_value_heads,
            "layer_query_heads": list(self.layer_query_heads),
            "layer_intermediate_dims": list(self.layer_intermediate_dims),
            "rope_max_wavelength": self.rope_max_wavelength,
            "rope_position_scaling_factor": self.rope_position_scaling_factor,
            "rope_frequency_adjustment_factor": self.rope_frequency_adjustment_factor,
            "rope_low_freq_factor": self.rope_low_freq_factor,
            "rope_high_freq_factor": self.rope_high_freq_factor,
            "rope_pretraining_sequence_length": self.rope_pretraining_sequence_length,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "dropout": self.dropout,
            "tie_word_embeddings": self.tie_word_embeddings,
        })
        return config


def _stock(backbone, widths, kept):
    """The stock config when every layer keeps the same widths, the head size
    is `hidden_dim // heads` and the embeddings are untied."""
    q, kv, ffn = uniform_widths(widths)
    hidden = hidden_width(backbone, widths)
    if None in (q, kv, ffn) or hidden // q != widths[0].head_dim or backbone.token_embedding.tie_weights:
        return None
    return stock_config(backbone, PrunedLlama3Backbone, kept, num_query_heads=q, num_key_value_heads=kv,
                        intermediate_dim=ffn, hidden_dim=hidden)


def _pruned(backbone, widths, kept):
    hidden, head_dim = hidden_width(backbone, widths), widths[0].head_dim
    if hidden % head_dim:
        raise ValueError(
            f"Argument `hidden` of plan_channels leaves backbone '{backbone.name}' a hidden size of "
            f"{hidden}, not a multiple of its head_dim={head_dim}: KerasHub's LlamaCausalLM sizes its "
            "KV cache's heads as hidden_dim // num_query_heads, which PrunedLlama3Backbone sets to "
            f"hidden_dim // head_dim. Plan with round_to={head_dim} (or a multiple of it)."
        )
    config = base_config(backbone, (
        "rope_max_wavelength", "rope_position_scaling_factor", "rope_frequency_adjustment_factor",
        "rope_low_freq_factor", "rope_high_freq_factor", "rope_pretraining_sequence_length",
        "layer_norm_epsilon", "dropout"), widths)
    config.update(head_dim=widths[0].head_dim, num_key_value_heads=one_kv(backbone, widths),
                  layer_query_heads=[w.query_heads for w in widths],
                  layer_intermediate_dims=[w.ffn for w in widths],
                  tie_word_embeddings=bool(backbone.token_embedding.tie_weights))
    return PrunedLlama3Backbone, config


FAMILIES = {
    "keras_hub.src.models.llama.llama_backbone.LlamaBackbone": Family(
        "feedforward_output_dense", _stock, _pruned, PrunedLlama3Backbone, hidden=True),
}
