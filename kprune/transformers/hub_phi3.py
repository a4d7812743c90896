"""`PrunedPhi3Backbone`: a KerasHub Phi-3 with per-layer widths and an explicit head_dim.

KerasHub's `Phi3Attention` computes `head_dim = hidden_dim //
num_query_heads` (`phi3_attention.py`), as Llama does: fewer heads need this
subclass even when every layer keeps the same number (the same widths with
all heads kept, FFN pruning alone, are a stock `Phi3Backbone` config). Its
attention (`PrunedPhi3Attention`) builds its projections from a given
`head_dim` and its rotary embedding as KerasHub's does: plain, or "su"
scaled (`rope_scaling_type="su"`, with `rope_scaling_short_factor` and
`rope_scaling_long_factor` of `head_dim // 2` entries each, kept as they
are: whole-head removal leaves `head_dim` unchanged).

`Phi3CausalLM` sizes its KV cache with `hidden_dim // num_query_heads`, so
that attribute of `PrunedPhi3Backbone` is `hidden_dim // head_dim` (the
query heads of the model it was pruned from); the per-layer counts are
`layer_query_heads`, and the key/value heads one count for every layer
(`num_key_value_heads`: one cache tensor). Registered with Keras as
`kprune>PrunedPhi3Backbone`, so `keras_hub.models.Backbone.from_preset` loads
it once kprune is imported.

Example:

>>> backbone = PrunedPhi3Backbone(vocabulary_size=32, hidden_dim=16, head_dim=4,
...     num_key_value_heads=2, layer_query_heads=[4, 2], layer_intermediate_dims=[8, 4])
>>> [tuple(v.shape) for v in backbone.weights if v.path.endswith("attention/query/kernel")]
[(16, 4, 4), (16, 2, 4)]
"""

import math

import keras
from keras_hub.src.layers.modeling.rotary_embedding import RotaryEmbedding
from keras_hub.src.models.backbone import Backbone
from keras_hub.src.models.phi3.phi3_attention import Phi3Attention
from keras_hub.src.models.phi3.phi3_backbone import Phi3Backbone
from keras_hub.src.models.phi3.phi3_decoder import Phi3Decoder
from keras_hub.src.models.phi3.phi3_layernorm import Phi3LayerNorm
from keras_hub.src.models.phi3.phi3_rotary_embedding import Phi3SuScaledRotaryEmbedding

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

_ROPE = ("max_sequence_length", "pretraining_sequence_length", "rope_max_wavelength", "rope_scaling_type",
         "rope_scaling_short_factor", "rope_scaling_long_factor")


@keras.saving.register_keras_serializable(package="kprune")
class PrunedPhi3Attention(HeadDim, Phi3Attention):
    """`Phi3Attention` with its head size given (`head_dim`), not computed.

    Its `build` is KerasHub's with `head_dim` in place of
    `hidden_dim // num_query_heads`; everything else is inherited.
    """

    def build(self, inputs_shape):
        self._inv_norm_factor = 1.0 / math.sqrt(self.head_dim)
        query, key, value, output = gqa_projections(self, inputs_shape, self.head_dim)
        self.query_dense, self.key_dense, self.value_dense = query, key, value
        self.softmax = keras.layers.Softmax(axis=-1, dtype="float32", name="attention_softmax")
        self.dropout_layer = keras.layers.Dropout(rate=self.dropout, dtype=self.dtype_policy)
        self.output_dense = output
        self.rotary_embedding_layer = self._rotary_embedding(self.head_dim)
        self.built = True

    def _rotary_embedding(self, head_dim):
        """KerasHub's choice of rotary embedding, checked against `head_dim`."""
        if self.rope_scaling_type is None:
            return RotaryEmbedding(max_wavelength=self.rope_max_wavelength, dtype=self.dtype_policy)
        if self.rope_scaling_type != "su":
            raise ValueError(
                f"Argument `rope_scaling_type` of layer '{self.name}' must be None or \"su\" (KerasHub's "
                f"Phi-3 knows no other). Received: rope_scaling_type={self.rope_scaling_type!r}"
            )
        for name in ("rope_scaling_short_factor", "rope_scaling_long_factor"):
            factors = getattr(self, name)
            if factors is None or len(factors) != head_dim // 2:
                raise ValueError(
                    f"Argument `{name}` of layer '{self.name}' must hold head_dim // 2 = {head_dim // 2} "
                    f"factors. Received: {name}={factors!r}"
                )
        return Phi3SuScaledRotaryEmbedding(
            inverese_freq_short_factor=self.rope_scaling_short_factor,
            inverese_freq_long_factor=self.rope_scaling_long_factor,
            max_sequence_length=self.max_sequence_length,
            pretraining_sequence_length=self.pretraining_sequence_length,
            max_wavelength=self.rope_max_wavelength, dtype=self.dtype_policy)


@keras.saving.register_keras_serializable(package="kprune")
class PrunedPhi3Decoder(GivenHeadDim, Phi3Decoder):
    """`Phi3Decoder` whose attention (`PrunedPhi3Attention`) has a given `head_dim`."""

    attention_attribute = "attention"
    stock_attention = Phi3Attention
    pruned_attention = PrunedPhi3Attention


@keras.saving.register_keras_serializable(package="kprune")
class PrunedPhi3Backbone(Phi3Backbone):
    """A Phi-3 backbone with per-layer query heads and FFN widths and a given `head_dim`.

    Args:
        vocabulary_size, hidden_dim, layer_norm_epsilon, dropout,
            max_sequence_length, pretraining_sequence_length,
            rope_max_wavelength, rope_scaling_type, rope_scaling_short_factor,
            rope_scaling_long_factor, dtype: as for
            `keras_hub.models.Phi3Backbone`.
        head_dim: channels per attention head.
        num_key_value_heads: key/value heads of every layer.
        layer_query_heads: query heads of each layer (multiples of
            `num_key_value_heads`); its length is the number of layers.
        layer_intermediate_dims: FFN width of each layer.
    """

    def __init__(self, vocabulary_size, hidden_dim, head_dim, num_key_value_heads, layer_query_heads,
                 layer_intermediate_dims, layer_norm_epsilon=1e-6, dropout=0.0, max_sequence_length=4096,
                 pretraining_sequence_length=4096, rope_max_wavelength=10000, rope_scaling_type=None,
                 rope_scaling_short_factor=None, rope_scaling_long_factor=None, dtype=None, **kwargs):
        owner = type(self).__name__
        layer_query_heads, layer_intermediate_dims = check_lists(
            owner, layer_query_heads=layer_query_heads, layer_intermediate_dims=layer_intermediate_dims)
        check_query_heads(owner, layer_query_heads, num_key_value_heads)
        cache_heads = cache_query_heads(owner, hidden_dim, head_dim)
        rope = dict(max_sequence_length=max_sequence_length, pretraining_sequence_length=pretraining_sequence_length,
                    rope_max_wavelength=rope_max_wavelength, rope_scaling_type=rope_scaling_type,
                    rope_scaling_short_factor=rope_scaling_short_factor,
                    rope_scaling_long_factor=rope_scaling_long_factor)
        self.token_embedding = keras.layers.ReversibleEmbedding(
            input_dim=vocabulary_size, output_dim=hidden_dim, tie_weights=False,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.01), dtype=dtype,
            name="token_embedding")
        self.transformer_layers = []
        for i, (heads, width) in enumerate(zip(layer_query_heads, layer_intermediate_dims)):
            self.transformer_layers.append(PrunedPhi3Decoder(
                head_dim=head_dim, hidden_dim=hidden_dim, intermediate_dim=width, num_query_heads=heads,
                num_key_value_heads=num_key_value_heads, layer_norm_epsilon=layer_norm_epsilon, activation="silu",
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.02), dropout=dropout, dtype=dtype,
                name=f"transformer_layer_{i}", **rope))
        self.layer_norm = Phi3LayerNorm(epsilon=layer_norm_epsilon, dtype=dtype, name="sequence_output_layernorm")
        token_ids, padding_mask = backbone_inputs()
        x = self.token_embedding(token_ids)
        for layer in self.transformer_layers:
            x = layer(x, decoder_padding_mask=padding_mask)
        Backbone.__init__(self, inputs={"token_ids": token_ids, "padding_mask": padding_mask},
                          outputs=self.layer_norm(x), dtype=dtype, **kwargs)
        set_widths(self, vocabulary_size, hidden_dim, head_dim, num_key_value_heads, layer_query_heads,
                   layer_intermediate_dims, layer_norm_epsilon, dropout)
        self.num_query_heads = cache_heads  # what Phi3CausalLM reads to size its KV cache
        for key, value in rope.items():
            setattr(self, key, value)

    def get_config(self):
        config = Backbone.get_config(self)
        names = ("vocabulary_size", "hidden_dim", "head_dim", "num_key_value_heads", "layer_norm_epsilon",
                 "dropout") + _ROPE
        config.update({name: getattr(self, name) for name in names})
        config.update(layer_query_heads=list(self.layer_query_heads),
                      layer_intermediate_dims=list(self.layer_intermediate_dims))
        return config


def _stock(backbone, widths, kept):
    """The stock config when every layer keeps the same widths and
    `hidden_dim // heads` is the head size (no head was removed)."""
    q, kv, ffn = uniform_widths(widths)
    if None in (q, kv, ffn) or backbone.hidden_dim // q != widths[0].head_dim:
        return None
    return stock_config(backbone, PrunedPhi3Backbone, kept, num_query_heads=q, num_key_value_heads=kv,
                        intermediate_dim=ffn)


def _pruned(backbone, widths, kept):
    config = base_config(backbone, ("layer_norm_epsilon", "dropout") + _ROPE)
    config.update(head_dim=widths[0].head_dim, num_key_value_heads=one_kv(backbone, widths),
                  layer_query_heads=[w.query_heads for w in widths],
                  layer_intermediate_dims=[w.ffn for w in widths])
    return PrunedPhi3Backbone, config


FAMILIES = {
    "keras_hub.src.models.phi3.phi3_backbone.Phi3Backbone": Family(
        "feedforward_output_dense", _stock, _pruned, PrunedPhi3Backbone),
}
