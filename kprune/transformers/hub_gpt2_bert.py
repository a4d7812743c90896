"""`PrunedGPT2Backbone` and `PrunedBertBackbone`: GPT-2 and BERT with fewer heads.

KerasHub's `TransformerDecoder` (GPT-2) and `TransformerEncoder` (BERT)
compute their attention's `key_dim` as `hidden_dim // num_heads`: whole-head
removal changes that quotient, so even the same head count in every layer
needs these subclasses. `PrunedTransformerDecoder` and
`PrunedTransformerEncoder` take `head_dim` and swap the attention layer
KerasHub's `build` makes, as it is assigned, for one of that head size (the
rest of `build` runs unchanged); the backbones take per-layer head counts
and FFN widths (`layer_heads`, `layer_intermediate_dims`).

GPT-2's cache holds every head (`[batch, layers, 2, length, heads,
head_dim]`) and `GPT2CausalLM` sizes it with `hidden_dim // num_heads`:
`PrunedGPT2CausalLM` sizes it from the backbone's `head_dim` (its layers
must then keep the same number of heads), and `kprune.remove_channels` of a
`GPT2CausalLM` with fewer heads returns one.

Example:

>>> import numpy as np
>>> backbone = PrunedBertBackbone(vocabulary_size=32, hidden_dim=16, head_dim=8,
...     layer_heads=[2, 1], layer_intermediate_dims=[8, 4], max_sequence_length=8)
>>> [tuple(v.shape) for v in backbone.weights if v.path.endswith("self_attention_layer/query/kernel")]
[(16, 2, 8), (16, 1, 8)]
"""

import keras
from keras_hub.src.layers.modeling.position_embedding import PositionEmbedding
from keras_hub.src.layers.modeling.transformer_decoder import TransformerDecoder
from keras_hub.src.layers.modeling.transformer_encoder import TransformerEncoder
from keras_hub.src.models.backbone import Backbone
from keras_hub.src.models.bert.bert_backbone import BertBackbone
from keras_hub.src.models.gpt2.gpt2_backbone import GPT2Backbone
from keras_hub.src.models.gpt2.gpt2_causal_lm import GPT2CausalLM
from keras_hub.src.utils.keras_utils import gelu_approximate

from kprune.transformers.family import Family, base_config, hidden_width, stock_config, uniform_widths
from kprune.transformers.widths import check_lists, uniform


def _with_head_dim(attention, head_dim):
    """A copy of an unbuilt `MultiHeadAttention` with `head_dim` as its key and value size."""
    config = attention.get_config()
    config.update(key_dim=head_dim, value_dim=head_dim)
    return type(attention).from_config(config)


@keras.saving.register_keras_serializable(package="kprune")
class PrunedTransformerDecoder(TransformerDecoder):
    """KerasHub's `TransformerDecoder` with its attention's head size given (`head_dim`)."""

    def __init__(self, head_dim, **kwargs):
        # Set before KerasHub's __init__, which may build the layer at once.
        object.__setattr__(self, "_pruned_head_dim", int(head_dim))
        super().__init__(**kwargs)

    def __setattr__(self, name, value):
        if name in ("_self_attention_layer", "_cross_attention_layer") and isinstance(
                value, keras.layers.MultiHeadAttention) and not value.built:
            value = _with_head_dim(value, self._pruned_head_dim)
        super().__setattr__(name, value)

    def get_config(self):
        return {**super().get_config(), "head_dim": self._pruned_head_dim}


@keras.saving.register_keras_serializable(package="kprune")
class PrunedTransformerEncoder(TransformerEncoder):
    """KerasHub's `TransformerEncoder` with its attention's head size given (`head_dim`)."""

    def __init__(self, head_dim, **kwargs):
        # Set before KerasHub's __init__, which may build the layer at once.
        object.__setattr__(self, "_pruned_head_dim", int(head_dim))
        super().__init__(**kwargs)

    def __setattr__(self, name, value):
        if name == "_self_attention_layer" and isinstance(value, keras.layers.MultiHeadAttention) \
                and not value.built:
            value = _with_head_dim(value, self._pruned_head_dim)
        super().__setattr__(name, value)

    def get_config(self):
        return {**super().get_config(), "head_dim": self._pruned_head_dim}


def _lists(owner, layer_heads, layer_intermediate_dims):
    return check_lists(owner, layer_heads=layer_heads, layer_intermediate_dims=layer_intermediate_dims)


@keras.saving.register_keras_serializable(package="kprune")
class PrunedGPT2Backbone(GPT2Backbone):
    """A GPT-2 backbone with per-layer heads and FFN widths and a given `head_dim`.

    Args:
        vocabulary_size, hidden_dim, dropout, max_sequence_length, dtype: as
            for `keras_hub.models.GPT2Backbone`.
        head_dim: channels per head.
        layer_heads: heads of each layer.
        layer_intermediate_dims: FFN width of each layer.
    """

    def __init__(self, vocabulary_size, hidden_dim, head_dim, layer_heads, layer_intermediate_dims,
                 dropout=0.1, max_sequence_length=1024, dtype=None, **kwargs):
        layer_heads, layer_intermediate_dims = _lists(type(self).__name__, layer_heads, layer_intermediate_dims)
        init = keras.initializers.RandomNormal
        self.token_embedding = keras.layers.ReversibleEmbedding(
            input_dim=vocabulary_size, output_dim=hidden_dim, embeddings_initializer=init(stddev=0.01),
            dtype=dtype, name="token_embedding")
        self.position_embedding = PositionEmbedding(
            initializer=init(stddev=0.02), sequence_length=max_sequence_length, dtype=dtype,
            name="position_embedding")
        self.embeddings_add = keras.layers.Add(dtype=dtype, name="embeddings_add")
        self.embeddings_dropout = keras.layers.Dropout(dropout, dtype=dtype, name="embeddings_dropout")
        self.transformer_layers = [
            PrunedTransformerDecoder(
                head_dim=head_dim, intermediate_dim=width, num_heads=heads, dropout=dropout,
                layer_norm_epsilon=1e-05, activation=gelu_approximate,
                kernel_initializer=init(stddev=0.02), normalize_first=True, dtype=dtype,
                name=f"transformer_layer_{i}")
            for i, (heads, width) in enumerate(zip(layer_heads, layer_intermediate_dims))
        ]
        self.layer_norm = keras.layers.LayerNormalization(axis=-1, epsilon=1e-05, dtype=dtype, name="layer_norm")
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        tokens = self.token_embedding(token_ids)
        x = self.embeddings_dropout(self.embeddings_add((tokens, self.position_embedding(tokens))))
        for layer in self.transformer_layers:
            x = layer(x, decoder_padding_mask=padding_mask)
        Backbone.__init__(self, inputs={"token_ids": token_ids, "padding_mask": padding_mask},
                          outputs=self.layer_norm(x), dtype=dtype, **kwargs)
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

    def get_config(self):
        config = Backbone.get_config(self)
        config.update(vocabulary_size=self.vocabulary_size, hidden_dim=self.hidden_dim, head_dim=self.head_dim,
                      layer_heads=list(self.layer_heads), layer_intermediate_dims=list(self.layer_intermediate_dims),
                      dropout=self.dropout, max_sequence_length=self.max_sequence_length)
        return config


@keras.saving.register_keras_serializable(package="kprune")
class PrunedGPT2CausalLM(GPT2CausalLM):
    """`GPT2CausalLM` whose KV cache is sized by the backbone's `head_dim`
    (KerasHub's computes `hidden_dim // num_heads`)."""

    def _build_cache(self, token_ids):
        backbone = self.backbone
        heads = uniform(getattr(backbone, "layer_heads", [backbone.num_heads]))
        if heads is None:
            raise ValueError(
                f"Backbone '{backbone.name}' has different head counts per layer "
                f"({backbone.layer_heads}); GPT-2's cache holds one tensor for all layers, so it cannot "
                "generate with a cache. Prune heads with local ranking to keep one count."
            )
        head_dim = getattr(backbone, "head_dim", backbone.hidden_dim // heads)
        batch, length = keras.ops.shape(token_ids)[0], keras.ops.shape(token_ids)[1]
        cache = keras.ops.zeros([batch, backbone.num_layers, 2, length, heads, head_dim], dtype=self.compute_dtype)
        _, hidden_states, cache = self.call_with_cache(token_ids, cache, 0)
        return hidden_states, cache


@keras.saving.register_keras_serializable(package="kprune")
class PrunedBertBackbone(BertBackbone):
    """A BERT backbone with per-layer heads and FFN widths and a given `head_dim`.

    Args:
        vocabulary_size, hidden_dim, dropout, max_sequence_length,
            num_segments, dtype: as for `keras_hub.models.BertBackbone`.
        head_dim: channels per head.
        layer_heads: heads of each layer.
        layer_intermediate_dims: FFN width of each layer.
    """

    def __init__(self, vocabulary_size, hidden_dim, head_dim, layer_heads, layer_intermediate_dims,
                 dropout=0.1, max_sequence_length=512, num_segments=2, dtype=None, **kwargs):
        layer_heads, layer_intermediate_dims = _lists(type(self).__name__, layer_heads, layer_intermediate_dims)
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.token_embedding = keras.layers.ReversibleEmbedding(
            input_dim=vocabulary_size, output_dim=hidden_dim, embeddings_initializer=init, dtype=dtype,
            name="token_embedding")
        self.position_embedding = PositionEmbedding(
            initializer=init, sequence_length=max_sequence_length, dtype=dtype, name="position_embedding")
        self.segment_embedding = keras.layers.Embedding(
            input_dim=num_segments, output_dim=hidden_dim, embeddings_initializer=init, dtype=dtype,
            name="segment_embedding")
        self.embeddings_add = keras.layers.Add(dtype=dtype, name="embeddings_add")
        self.embeddings_layer_norm = keras.layers.LayerNormalization(
            axis=-1, epsilon=1e-12, dtype=dtype, name="embeddings_layer_norm")
        self.embeddings_dropout = keras.layers.Dropout(dropout, dtype=dtype, name="embeddings_dropout")
        self.transformer_layers = [
            PrunedTransformerEncoder(
                head_dim=head_dim, num_heads=heads, intermediate_dim=width,
                activation=gelu_approximate, dropout=dropout,
                layer_norm_epsilon=1e-12, kernel_initializer=init, dtype=dtype, name=f"transformer_layer_{i}")
            for i, (heads, width) in enumerate(zip(layer_heads, layer_intermediate_dims))
        ]
        self.pooled_dense = keras.layers.Dense(hidden_dim, kernel_initializer=init, activation="tanh",
                                               dtype=dtype, name="pooled_dense")
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        segment_ids = keras.Input(shape=(None,), dtype="int32", name="segment_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        tokens = self.token_embedding(token_ids)
        x = self.embeddings_add((tokens, self.position_embedding(tokens), self.segment_embedding(segment_ids)))
        x = self.embeddings_dropout(self.embeddings_layer_norm(x))
        for layer in self.transformer_layers:
            x = layer(x, padding_mask=padding_mask)
        Backbone.__init__(
            self, inputs={"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask},
            outputs={"sequence_output": x, "pooled_output": self.pooled_dense(x[:, 0, :])}, dtype=dtype, **kwargs)
        self.vocabulary_size = vocabulary_size
        self.num_layers = len(layer_heads)
        self.hidden_dim = hidden_dim
        self.head_dim = int(head_dim)
        self.layer_heads = layer_heads
        self.layer_intermediate_dims = layer_intermediate_dims
        self.num_heads = uniform(layer_heads)
        self.intermediate_dim = max(layer_intermediate_dims)
        self.dropout = dropout
        self.max_sequence_length = max_sequence_length
        self.num_segments = num_segments
        self.cls_token_index = 0

    def get_config(self):
        config = Backbone.get_config(self)
        config.update(vocabulary_size=self.vocabulary_size, hidden_dim=self.hidden_dim, head_dim=self.head_dim,
                      layer_heads=list(self.layer_heads), layer_intermediate_dims=list(self.layer_intermediate_dims),
                      dropout=self.dropout, max_sequence_length=self.max_sequence_length,
                      num_segments=self.num_segments)
        return config


def mha_stock(pruned_class):
    """The `stock` config maker of a family whose blocks are KerasHub's
    `TransformerDecoder`/`TransformerEncoder` (GPT-2, BERT, DistilBERT): one
    head count and FFN width in every layer, with `hidden_dim // heads` the
    head size; `pruned_class` is the family's kprune subclass."""
    def stock(backbone, widths, kept):
        q, _, ffn = uniform_widths(widths)
        hidden = hidden_width(backbone, widths)
        if None in (q, ffn) or hidden // q != widths[0].head_dim:
            return None
        return stock_config(backbone, pruned_class, kept, num_heads=q, intermediate_dim=ffn, hidden_dim=hidden)
    return stock


def mha_pruned(cls, names):
    """The `pruned` config maker of such a family: kprune's subclass `cls`
    with `backbone`'s attributes `names`, `head_dim` and per-layer widths."""
    def pruned(backbone, widths, kept):
        config = base_config(backbone, names, widths)
        config.update(head_dim=widths[0].head_dim, layer_heads=[w.query_heads for w in widths],
                      layer_intermediate_dims=[w.ffn for w in widths])
        return cls, config
    return pruned


FAMILIES = {
    "keras_hub.src.models.gpt2.gpt2_backbone.GPT2Backbone": Family(
        "feedforward_output_dense", mha_stock(PrunedGPT2Backbone),
        mha_pruned(PrunedGPT2Backbone, ("dropout", "max_sequence_length")), PrunedGPT2Backbone,
        {"keras_hub.src.models.gpt2.gpt2_causal_lm.GPT2CausalLM": PrunedGPT2CausalLM}, hidden=True),
    # BERT's hidden size is not rebuilt: its pooler (`pooled_dense`, a model
    # output of hidden_dim units) is not the residual stream.
    "keras_hub.src.models.bert.bert_backbone.BertBackbone": Family(
        "feedforward_output_dense", mha_stock(PrunedBertBackbone),
        mha_pruned(PrunedBertBackbone, ("dropout", "max_sequence_length", "num_segments")), PrunedBertBackbone),
}
