"""`PrunedGemma3Backbone` and `PrunedDistilBertBackbone`: per-layer widths for Gemma 3 and DistilBERT.

Gemma 3 (`keras_hub.models.Gemma3Backbone`, text-only) takes `head_dim` in
its config, so the same widths in every layer are a stock config. It derives
each layer's attention type *and* its rotary embedding from the layer index:
layer `i` attends locally when `use_sliding_window_attention` and
`i % 6 < 5`, with RoPE wavelength 10,000 and `local_rope_scaling_factor`,
else globally with wavelength 1,000,000 and `global_rope_scaling_factor`.
Removing blocks would shift both, so the stock class is kept only when the
kept layers' types are the stock pattern for their count; otherwise
`PrunedGemma3Backbone` holds each layer's type (`layer_sliding_window`) and
derives its RoPE from it as KerasHub does. It also holds a query-head count
and an FFN width per layer (`layer_query_heads`, `layer_intermediate_dims`;
each of Gemma 3's two gates has `intermediate_dim` units, not half as in
Gemma 1/2); key/value heads are one count for every layer
(`num_key_value_heads`: Gemma3CausalLM's cache sizes every layer's with
it). As in KerasHub 0.32 the blocks get neither `layer_norm_epsilon` (only
the final norm does) nor `query_head_dim_normalize`: their attention scales
queries by `1/sqrt(head_dim)`, which whole-head removal keeps. A layer whose
attention scales by `1/sqrt(hidden_dim // num_query_heads)` instead would
change scale with its head count: rebuilding it with fewer heads raises.

DistilBERT's blocks are KerasHub's `TransformerEncoder`, whose attention
computes `key_dim = hidden_dim // num_heads`: fewer heads need
`PrunedDistilBertBackbone` (blocks `PrunedTransformerEncoder`, which take
`head_dim`; per-layer `layer_heads` and `layer_intermediate_dims`). FFN or
depth pruning alone is a stock config.

Example:

>>> backbone = PrunedGemma3Backbone(vocabulary_size=32, hidden_dim=16, head_dim=4,
...     num_key_value_heads=1, layer_query_heads=[2, 1], layer_intermediate_dims=[8, 4],
...     layer_sliding_window=[False, True])
>>> [(b.num_query_heads, b.use_sliding_window_attention, b.rope_wavelength)
...  for b in backbone.transformer_layers]
[(2, False, 1000000.0), (1, True, 10000.0)]
>>> bert = PrunedDistilBertBackbone(vocabulary_size=32, hidden_dim=16, head_dim=8,
...     layer_heads=[2, 1], layer_intermediate_dims=[8, 4], max_sequence_length=8)
>>> [tuple(v.shape) for v in bert.weights if v.path.endswith("self_attention_layer/query/kernel")]
[(16, 2, 8), (16, 1, 8)]
"""

import keras
from keras_hub.src.layers.modeling.token_and_position_embedding import TokenAndPositionEmbedding
from keras_hub.src.models.backbone import Backbone
from keras_hub.src.models.distil_bert.distil_bert_backbone import (
    DistilBertBackbone,
    distilbert_kernel_initializer,
)
from keras_hub.src.models.gemma3.gemma3_backbone import Gemma3Backbone
from keras_hub.src.models.gemma3.gemma3_decoder_block import Gemma3DecoderBlock
from keras_hub.src.models.gemma3.gemma3_layers import RMSNormalization

from kprune.transformers.family import Family, base_config, one_kv, stock_config, uniform_widths
from kprune.transformers.hub_gpt2_bert import PrunedTransformerEncoder, mha_pruned, mha_stock
from kprune.transformers.widths import check_lists, uniform

# KerasHub's Gemma 3 RoPE wavelengths of local and global layers (gemma3_backbone.py).
LOCAL_ROPE_WAVELENGTH, GLOBAL_ROPE_WAVELENGTH = 10_000.0, 1_000_000.0


def gemma3_rope(local, local_rope_scaling_factor, global_rope_scaling_factor):
    """`(wavelength, scaling factor)` of a local or global Gemma 3 layer's RoPE, as KerasHub sets them.

    >>> gemma3_rope(False, 1.0, 8.0)
    (1000000.0, 8.0)
    """
    if local:
        return LOCAL_ROPE_WAVELENGTH, local_rope_scaling_factor
    return GLOBAL_ROPE_WAVELENGTH, global_rope_scaling_factor


@keras.saving.register_keras_serializable(package="kprune")
class PrunedGemma3Backbone(Gemma3Backbone):
    """A text-only Gemma 3 backbone with per-layer query heads, FFN widths and attention types.

    Args:
        vocabulary_size, hidden_dim, head_dim, query_head_dim_normalize,
            use_query_key_norm, use_post_ffw_norm, use_post_attention_norm,
            attention_logit_soft_cap, final_logit_soft_cap,
            sliding_window_size, local_rope_scaling_factor,
            global_rope_scaling_factor, layer_norm_epsilon,
            use_bidirectional_attention, dropout, dtype: as for
            `keras_hub.models.Gemma3Backbone`.
        num_key_value_heads: key/value heads of every layer.
        layer_query_heads: query heads of each layer (multiples of
            `num_key_value_heads`).
        layer_intermediate_dims: FFN units of each layer (of each gate).
        layer_sliding_window: whether each layer attends locally (it then
            has the local RoPE, else the global one).
    """

    def __init__(self, vocabulary_size, hidden_dim, head_dim, num_key_value_heads, layer_query_heads,
                 layer_intermediate_dims, layer_sliding_window, query_head_dim_normalize=True,
                 use_query_key_norm=True, use_post_ffw_norm=False, use_post_attention_norm=False,
                 attention_logit_soft_cap=None, final_logit_soft_cap=None, sliding_window_size=1024,
                 local_rope_scaling_factor=1.0, global_rope_scaling_factor=1.0, layer_norm_epsilon=1e-6,
                 use_bidirectional_attention=False, dropout=0, dtype=None, **kwargs):
        owner = type(self).__name__
        layer_query_heads, layer_intermediate_dims = check_lists(
            owner, layer_query_heads=layer_query_heads, layer_intermediate_dims=layer_intermediate_dims)
        if not isinstance(layer_sliding_window, (list, tuple)) or len(layer_sliding_window) != len(
                layer_query_heads):
            raise ValueError(f"Argument `layer_sliding_window` of {owner} must be a list with one entry per "
                             f"layer ({len(layer_query_heads)}). Received: "
                             f"layer_sliding_window={layer_sliding_window!r}")
        if any(heads % num_key_value_heads for heads in layer_query_heads):
            raise ValueError(f"Argument `layer_query_heads` of {owner} must hold multiples of "
                             f"num_key_value_heads={num_key_value_heads}. Received: "
                             f"layer_query_heads={layer_query_heads}")
        self.token_embedding = keras.layers.ReversibleEmbedding(
            input_dim=vocabulary_size, output_dim=hidden_dim, tie_weights=True,
            embeddings_initializer=keras.initializers.VarianceScaling(
                scale=1.0, mode="fan_in", distribution="untruncated_normal"),
            dtype=dtype, logit_soft_cap=final_logit_soft_cap, name="token_embedding")
        self.transformer_layers = []
        for i, (heads, width, local) in enumerate(
                zip(layer_query_heads, layer_intermediate_dims, layer_sliding_window)):
            wavelength, scaling = gemma3_rope(local, local_rope_scaling_factor, global_rope_scaling_factor)
            # Arguments as Gemma3Backbone passes them (no layer_norm_epsilon: its blocks keep the default).
            self.transformer_layers.append(Gemma3DecoderBlock(
                hidden_dim=hidden_dim, intermediate_dim=width, head_dim=head_dim, num_query_heads=heads,
                num_key_value_heads=num_key_value_heads, query_head_dim_normalize=query_head_dim_normalize,
                use_query_key_norm=use_query_key_norm, use_post_ffw_norm=use_post_ffw_norm,
                use_post_attention_norm=use_post_attention_norm, gate_dim_reduction=1,
                logit_soft_cap=attention_logit_soft_cap, use_sliding_window_attention=bool(local),
                sliding_window_size=sliding_window_size, rope_wavelength=wavelength, rope_scaling_factor=scaling,
                use_bidirectional_attention=use_bidirectional_attention, dropout=dropout, dtype=dtype,
                name=f"decoder_block_{i}"))
        self.layer_norm = RMSNormalization(epsilon=layer_norm_epsilon, dtype=dtype, name="final_normalization")
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        x = self.token_embedding(token_ids)
        x = x * keras.ops.cast(keras.ops.sqrt(hidden_dim), x.dtype)
        for layer in self.transformer_layers:
            x = layer(x, padding_mask=padding_mask, vision_mask=None)
        Backbone.__init__(self, inputs={"token_ids": token_ids, "padding_mask": padding_mask},
                          outputs=self.layer_norm(x), dtype=dtype, **kwargs)
        self.vocabulary_size = vocabulary_size
        self.num_layers = len(layer_query_heads)
        self.hidden_dim = hidden_dim
        self.head_dim = head_dim
        self.num_key_value_heads = num_key_value_heads
        self.layer_query_heads = layer_query_heads
        self.layer_intermediate_dims = layer_intermediate_dims
        self.layer_sliding_window = [bool(v) for v in layer_sliding_window]
        # The stock names of one width hold the widest layer's.
        self.num_query_heads = max(layer_query_heads)
        self.intermediate_dim = max(layer_intermediate_dims)
        self.use_sliding_window_attention = any(self.layer_sliding_window)
        for name, value in (("query_head_dim_normalize", query_head_dim_normalize),
                            ("use_query_key_norm", use_query_key_norm), ("use_post_ffw_norm", use_post_ffw_norm),
                            ("use_post_attention_norm", use_post_attention_norm),
                            ("attention_logit_soft_cap", attention_logit_soft_cap),
                            ("final_logit_soft_cap", final_logit_soft_cap),
                            ("sliding_window_size", sliding_window_size),
                            ("local_rope_scaling_factor", local_rope_scaling_factor),
                            ("global_rope_scaling_factor", global_rope_scaling_factor),
                            ("layer_norm_epsilon", layer_norm_epsilon),
                            ("use_bidirectional_attention", use_bidirectional_attention), ("dropout", dropout)):
            setattr(self, name, value)
        # What Gemma3CausalLM and the stock class's methods read: text only, no pooling head.
        self.vision_encoder = None
        self.text_only_model = True
        self.image_size = None
        self.is_embedding_model = False
        self.pooling_intermediate_dim = None
        self.embedding_dim = None

    def get_config(self):
        config = Backbone.get_config(self)
        config.update({name: getattr(self, name) for name in _GEMMA3_KEYS})
        config.update(vocabulary_size=self.vocabulary_size, hidden_dim=self.hidden_dim,
                      num_key_value_heads=self.num_key_value_heads,
                      layer_query_heads=list(self.layer_query_heads),
                      layer_intermediate_dims=list(self.layer_intermediate_dims),
                      layer_sliding_window=list(self.layer_sliding_window))
        return config

    @classmethod
    def from_config(cls, config):
        # Backbone's (Gemma3Backbone's reads a vision encoder this class does not take).
        return super(Gemma3Backbone, cls).from_config(config)


# The config entries PrunedGemma3Backbone takes as they are from the backbone it is pruned from.
_GEMMA3_KEYS = ("head_dim", "query_head_dim_normalize", "use_query_key_norm", "use_post_ffw_norm",
                "use_post_attention_norm", "attention_logit_soft_cap", "final_logit_soft_cap",
                "sliding_window_size", "local_rope_scaling_factor", "global_rope_scaling_factor",
                "layer_norm_epsilon", "use_bidirectional_attention", "dropout")


@keras.saving.register_keras_serializable(package="kprune")
class PrunedDistilBertBackbone(DistilBertBackbone):
    """A DistilBERT backbone with per-layer heads and FFN widths and a given `head_dim`.

    Args:
        vocabulary_size, hidden_dim, dropout, max_sequence_length, dtype: as
            for `keras_hub.models.DistilBertBackbone`.
        head_dim: channels per head.
        layer_heads: heads of each layer.
        layer_intermediate_dims: FFN width of each layer.
    """

    def __init__(self, vocabulary_size, hidden_dim, head_dim, layer_heads, layer_intermediate_dims,
                 dropout=0.1, max_sequence_length=512, dtype=None, **kwargs):
        layer_heads, layer_intermediate_dims = check_lists(
            type(self).__name__, layer_heads=layer_heads, layer_intermediate_dims=layer_intermediate_dims)
        self.embeddings = TokenAndPositionEmbedding(
            vocabulary_size=vocabulary_size, sequence_length=max_sequence_length, embedding_dim=hidden_dim,
            embeddings_initializer=distilbert_kernel_initializer(), dtype=dtype,
            name="token_and_position_embedding")
        self.token_embedding = self.embeddings.token_embedding
        self.embeddings_layer_norm = keras.layers.LayerNormalization(
            axis=-1, epsilon=1e-12, dtype=dtype, name="embeddings_layer_norm")
        self.embeddings_dropout = keras.layers.Dropout(dropout, dtype=dtype, name="embeddings_dropout")
        self.transformer_layers = [
            PrunedTransformerEncoder(
                head_dim=head_dim, num_heads=heads, intermediate_dim=width, activation="gelu", dropout=dropout,
                layer_norm_epsilon=1e-12, kernel_initializer=distilbert_kernel_initializer(), dtype=dtype,
                name=f"transformer_layer_{i}")
            for i, (heads, width) in enumerate(zip(layer_heads, layer_intermediate_dims))
        ]
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        x = self.embeddings_dropout(self.embeddings_layer_norm(self.embeddings(token_ids)))
        for layer in self.transformer_layers:
            x = layer(x, padding_mask=padding_mask)
        Backbone.__init__(self, inputs={"token_ids": token_ids, "padding_mask": padding_mask}, outputs=x,
                          dtype=dtype, **kwargs)
        self.vocabulary_size = vocabulary_size
        self.num_layers = len(layer_heads)
        self.hidden_dim = hidden_dim
        self.head_dim = int(head_dim)
        self.layer_heads = layer_heads
        self.layer_intermediate_dims = layer_intermediate_dims
        self.num_heads = uniform(layer_heads)  # None when the layers differ
        self.intermediate_dim = max(layer_intermediate_dims)
        self.dropout = dropout
        self.max_sequence_length = max_sequence_length
        self.cls_token_index = 0

    def get_config(self):
        config = Backbone.get_config(self)
        config.update(vocabulary_size=self.vocabulary_size, hidden_dim=self.hidden_dim, head_dim=self.head_dim,
                      layer_heads=list(self.layer_heads), layer_intermediate_dims=list(self.layer_intermediate_dims),
                      dropout=self.dropout, max_sequence_length=self.max_sequence_length)
        return config


def _gemma3_layers(backbone, kept):
    """Each kept layer's `(local, rope wavelength, rope scaling)`, and the
    stock class's for as many layers (derived from the new indices)."""
    own = [(bool(b.use_sliding_window_attention), float(b.rope_wavelength), float(b.rope_scaling_factor))
           for b in (backbone.transformer_layers[i] for i in kept)]
    scaling = (backbone.local_rope_scaling_factor, backbone.global_rope_scaling_factor)
    flags = [bool(backbone.use_sliding_window_attention) and j % 6 < 5 for j in range(len(kept))]
    return own, [(flag, *map(float, gemma3_rope(flag, *scaling))) for flag in flags]


def _check_gemma3(backbone, widths, kept):
    """Raise where the rebuilt Gemma 3 would not compute what `backbone`'s kept layers compute."""
    if not getattr(backbone, "text_only_model", True):
        raise ValueError(
            f"kprune rebuilds (and masks the channels of) text-only Gemma 3 backbones; backbone "
            f"'{backbone.name}' has a vision encoder. Build it with vision_encoder=None, or prune its "
            "weights without removing channels (kprune.prune_low_magnitude).")
    for i, width in zip(kept, widths):
        attention = backbone.transformer_layers[i].attention
        old, new = attention.num_query_heads, width.query_heads
        if not attention.query_head_dim_normalize and backbone.hidden_dim // old != backbone.hidden_dim // new:
            raise ValueError(
                f"Layer '{backbone.transformer_layers[i].name}' of backbone '{backbone.name}' scales its "
                f"queries by 1/sqrt(hidden_dim // num_query_heads) = 1/sqrt({backbone.hidden_dim // old}) "
                f"(its attention has query_head_dim_normalize=False); with {new} query heads it would "
                f"scale by 1/sqrt({backbone.hidden_dim // new}). Keep its query heads (prune FFN units "
                "or blocks only).")


def _gemma3_stock(backbone, widths, kept):
    _check_gemma3(backbone, widths, kept)
    q, kv, ffn = uniform_widths(widths)
    own, stock = _gemma3_layers(backbone, kept)
    if None in (q, kv, ffn) or own != stock:
        return None
    return stock_config(backbone, PrunedGemma3Backbone, kept, num_query_heads=q, num_key_value_heads=kv,
                        intermediate_dim=ffn)


def _gemma3_pruned(backbone, widths, kept):
    if backbone.is_embedding_model:
        raise ValueError(
            f"Backbone '{backbone.name}' is a Gemma 3 embedding model (is_embedding_model=True); kprune "
            "rebuilds one only as the stock class: the same number of heads and FFN units in every layer "
            "(local ranking) and, when removing blocks, kept layers whose local/global pattern is the "
            "stock one for their count. PrunedGemma3Backbone has no pooling head.")
    own, _ = _gemma3_layers(backbone, kept)
    scaling = (backbone.local_rope_scaling_factor, backbone.global_rope_scaling_factor)
    for i, (local, *rope) in zip(kept, own):
        if tuple(rope) != tuple(map(float, gemma3_rope(local, *scaling))):
            raise ValueError(
                f"Layer '{backbone.transformer_layers[i].name}' of backbone '{backbone.name}' has RoPE "
                f"(wavelength, scaling) {tuple(rope)}, not the one KerasHub gives a "
                f"{'local' if local else 'global'} Gemma 3 layer, which PrunedGemma3Backbone would give it.")
    config = base_config(backbone, _GEMMA3_KEYS)
    config.update(num_key_value_heads=one_kv(backbone, widths),
                  layer_query_heads=[w.query_heads for w in widths],
                  layer_intermediate_dims=[w.ffn for w in widths],
                  layer_sliding_window=[local for local, _, _ in own])
    return PrunedGemma3Backbone, config


FAMILIES = {
    "keras_hub.src.models.gemma3.gemma3_backbone.Gemma3Backbone": Family(
        "ffw_linear", _gemma3_stock, _gemma3_pruned, PrunedGemma3Backbone),
    "keras_hub.src.models.distil_bert.distil_bert_backbone.DistilBertBackbone": Family(
        "feedforward_output_dense", mha_stock(PrunedDistilBertBackbone),
        mha_pruned(PrunedDistilBertBackbone, ("dropout", "max_sequence_length")), PrunedDistilBertBackbone),
}
