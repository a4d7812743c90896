"""The transformer blocks of a model: what depth pruning removes.

A KerasHub backbone's blocks are its `transformer_layers`. A Functional
model's blocks are its residual branches (`kprune.methods.branch_selection`):
a branch that holds an attention layer and the branch that follows it on the
residual stream are one block (a ViT block: attention, then MLP); any other
branch is a block alone (an attention branch followed by another attention
branch is a block alone too). `transformer_blocks(model)` lists them as `Block`s,
with the tensors at which each one reads and writes the residual stream (what
the block criteria measure) and the layers whose weights write into the
stream (what `mask_blocks` zeroes).

Example:

>>> import keras
>>> x = keras.Input((4, 8))
>>> a = keras.layers.MultiHeadAttention(2, 4, name="mha")(x, x)
>>> h = keras.layers.Add(name="add1")([x, a])
>>> m = keras.layers.Dense(8, name="fc")(keras.layers.Dense(16, name="up")(h))
>>> y = keras.layers.Add(name="add2")([h, m])
>>> [(b.name, b.adds) for b in transformer_blocks(keras.Model(x, y))]
[('mha', ['add1', 'add2'])]
"""

from typing import NamedTuple

from kprune._internal import functional
from kprune.methods.branch_selection import residual_branches
from kprune.registry.attention import head_spec


class Block(NamedTuple):
    """One transformer block.

    Attributes:
        index: its position among the model's blocks.
        name: the name of its layer (KerasHub) or of its first branch's first
            layer (Functional).
        layer: the block layer (KerasHub), or None.
        adds: the names of its residual `Add` layers (Functional), or [].
        layers: the names of the layers inside it (Functional), or [].
        stream_in, stream_out: the symbolic tensors of the residual stream
            before and after it, in the graph that holds it.
    """

    index: int
    name: str
    layer: object
    adds: list
    layers: list
    stream_in: object
    stream_out: object


def hub_backbone(model):
    """The KerasHub backbone of `model` (itself, a task's, or one a Functional
    model holds), or None."""
    candidates = [model] + functional.sublayers(model)
    for candidate in candidates:
        if hasattr(candidate, "transformer_layers") and functional.is_graph(candidate):
            layers = list(candidate.transformer_layers)
            if layers:
                return candidate
    return None


def transformer_blocks(model):
    """The `Block`s of `model`, in order (see the module docstring)."""
    backbone = hub_backbone(model)
    if backbone is not None:
        return _hub_blocks(backbone)
    if not functional.is_graph(model):
        raise ValueError(
            f"Depth pruning needs a KerasHub backbone or task, or a Functional model. Received: "
            f"model '{model.name}' of type {type(model).__name__}."
        )
    return _functional_blocks(model)


def _hub_blocks(backbone):
    nodes = {id(node.operation): node for node in functional.nodes(backbone)}
    blocks = []
    for index, layer in enumerate(backbone.transformer_layers):
        node = nodes.get(id(layer))
        if node is None:
            raise ValueError(f"Block '{layer.name}' of backbone '{backbone.name}' is not called in its graph.")
        blocks.append(Block(index, layer.name, layer, [], [], functional.ordered_input_tensors(node)[0],
                            node.outputs[0]))
    return blocks


def _functional_blocks(model):
    layers = {layer.name: layer for layer in functional.sublayers(model)}
    adds = {node.operation.name: node for node in functional.nodes(model)}
    branches = residual_branches(model)
    blocks, k = [], 0
    while k < len(branches):
        group = [branches[k]]
        if _attends(branches[k], layers) and k + 1 < len(branches) and not _attends(branches[k + 1], layers):
            nxt = branches[k + 1]
            add = adds[branches[k].add]
            shortcut = adds[nxt.add].input_tensors[1 - nxt.branch_index]
            if shortcut is add.outputs[0]:
                group.append(nxt)
        first, last = adds[group[0].add], adds[group[-1].add]
        blocks.append(Block(len(blocks), group[0].layers[0], None, [b.add for b in group],
                            [name for b in group for name in b.layers],
                            first.input_tensors[1 - group[0].branch_index], last.outputs[0]))
        k += len(group)
    return blocks


def _attends(branch, layers):
    """Whether a residual branch holds an attention layer."""
    return any(head_spec(layers[name]) is not None for name in branch.layers if name in layers)
