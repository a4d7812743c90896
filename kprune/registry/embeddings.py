"""The rules of embedding tables: Keras' `Embedding` and `ReversibleEmbedding`, KerasHub's `PositionEmbedding`.

A table's rows are tokens (positions) and its columns the channels it
produces: the rows are pruned (`PrunableWeight` axis -2) and the columns are
a producer's output channels. A `ReversibleEmbedding` is also the language-
model head (its call with `reverse=True` reads the hidden axis), so its
channels are blocked unless the hidden size is pruned on request
(`LayerRule.hidden`); `kprune.registry.keras_layers` registers the three.

Example (an untied LM head's matmul: 10 positions of 8 channels into 100 logits):

>>> import keras
>>> embedding = keras.layers.ReversibleEmbedding(100, 8, tie_weights=False)
>>> embedding.build()
>>> len(REVERSIBLE_EMBEDDING.prunable(embedding))
2
>>> REVERSIBLE_EMBEDDING.macs(embedding, [(None, 10, 8)], [(None, 10, 100)])
8000
"""

import math

from kprune.registry.rules import ChannelSpec, LayerRule, PrunableWeight, block, variable

EMBEDDING = LayerRule(
    prunable=lambda layer: [PrunableWeight(variable(layer, "_embeddings", "embeddings"), -2)],
    channels=lambda layer, shape: ChannelSpec(
        "producer", (), ((variable(layer, "_embeddings", "embeddings"), 1, 1),), "output_dim"),
)

def _reversible_weights(layer):
    """The token table, and the separate LM-head matrix of an untied layer."""
    weights = EMBEDDING.prunable(layer)
    reverse = getattr(layer, "reverse_embeddings", None)
    if not layer.tie_weights and reverse is not None:
        # (hidden, vocabulary): logits = h @ reverse_embeddings, inputs on axis 0.
        weights.append(PrunableWeight(variable(layer, "reverse_embeddings"), -2))
    return weights


def _reversible_macs(layer, ins, outs):
    """0 for the lookup; the LM-head matmul `h @ W^T` (tied) or
    `h @ reverse_embeddings` for a call with `reverse=True` (hidden states
    in, logits out: same rank)."""
    if len(ins[0]) != len(outs[0]):
        return 0
    positions = math.prod(int(d or 1) for d in outs[0][1:-1])
    return positions * int(ins[0][-1]) * int(outs[0][-1])


def _reversible_hidden(layer, shape):
    """When the hidden size is pruned: the lookup (token ids in) makes the
    hidden channels (the table's columns); the reverse call (hidden states
    in, logits out) reads them -- through the untied head's rows, or the
    tied table's columns, which the lookup already slices."""
    table = variable(layer, "_embeddings", "embeddings")
    if shape is not None and len(shape) >= 3:
        reverse = getattr(layer, "reverse_embeddings", None)
        untied = not layer.tie_weights and reverse is not None
        return ChannelSpec("reader", in_slices=((variable(layer, "reverse_embeddings"), 0, 1),) if untied else ())
    return ChannelSpec("producer", (), ((table, 1, 1),), "output_dim")


# Keras' (and KerasHub's) ReversibleEmbedding: an embedding that is also the
# language-model head when called with `reverse=True`. Both of its matrices
# are pruned (the untied head is the largest matrix of a Llama). Its hidden
# axis is read by the head as well, which a producer rule would not slice;
# pruning the hidden size (on request) reads its two calls apart.
REVERSIBLE_EMBEDDING = LayerRule(
    prunable=_reversible_weights,
    channels=lambda layer, shape: block(
        "a ReversibleEmbedding is also the LM head (its reverse call reads the hidden axis)"),
    macs=_reversible_macs,
    hidden=_reversible_hidden,
)

# KerasHub's learned position table (sequence_length, hidden): an embedding
# table, pruned as one (its rows are positions, as Embedding's are tokens).
# Called on the token embeddings (for their shape) and added to them: when
# the hidden size is pruned, its column c is channel c of its input.
POSITION_EMBEDDING = LayerRule(
    prunable=lambda layer: [PrunableWeight(variable(layer, "position_embeddings"), -2)],
    hidden=lambda layer, shape: ChannelSpec(
        "pass", out_slices=((variable(layer, "position_embeddings"), 1, 1),)),
)
