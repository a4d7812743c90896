"""Depth pruning: score transformer blocks, bypass them, remove them.

* `plan_blocks(model, num_blocks, importance=..., data=...)` scores the
  blocks (`kprune.transformers.block_scores`) and returns a `BlockPlan`:
  plain data naming the blocks to remove.
* `mask_blocks(model, plan)` returns a copy in which those blocks are
  bypassed: the weights that write into the residual stream inside them
  (the attention's output projection, the FFN's down projection, their
  biases) are 0, so a pre-norm block returns its input. A block whose output
  is normalized (post-norm, BERT) cannot be bypassed so: it raises.
* `remove_blocks(model, plan)` returns the model without them: a KerasHub
  backbone or task of the same family with fewer layers (each kept layer
  keeps its own attention type: Gemma's local/global pattern is per layer),
  or a Functional model whose residual branches give way to their shortcuts.
  Its outputs equal the masked model's.

Depth and width compose: `remove_blocks(kprune.remove_channels(model, plan),
block_plan)` (block indices do not change when widths do).

Example:

>>> import keras, numpy as np
>>> x = keras.Input((4, 8))
>>> h = x
>>> for i in range(3):
...     a = keras.layers.MultiHeadAttention(2, 4, name=f"mha{i}")(h, h)
...     h = keras.layers.Add(name=f"add{i}")([h, a])
>>> model = keras.Model(x, h)
>>> plan = BlockPlan([{"index": i, "name": f"mha{i}", "score": 0.0} for i in range(3)], removed=[1])
>>> small = remove_blocks(model, plan)
>>> [layer.name for layer in small.layers if "mha" in layer.name]
['mha0', 'mha2']
>>> data = np.random.default_rng(0).normal(size=(2, 4, 8)).astype("float32")
>>> bool(np.allclose(mask_blocks(model, plan)(data), small(data), atol=1e-5))
True
"""

import json

import keras
import numpy as np

from kprune._internal import functional
from kprune.dependency.channel_graph import ChannelGraph
from kprune.methods.branch_selection import residual_branches
from kprune.registry.model_builders import model_builder
from kprune.sparsity.prune import clone_with, copy_layer
from kprune.transformers.blocks import hub_backbone, transformer_blocks


class BlockPlan:
    """Which transformer blocks go: plain data that prints and round-trips through JSON.

    Attributes:
        blocks: `[{"index", "name", "score"}]`, one per block of the model.
        removed: the indices of the blocks to remove.
        importance: the criterion that scored them.

    Example:

    >>> plan = BlockPlan([{"index": 0, "name": "a", "score": 0.3},
    ...                   {"index": 1, "name": "b", "score": 0.1}], removed=[1])
    >>> BlockPlan.from_json(plan.to_json()).removed
    [1]
    """

    def __init__(self, blocks, removed, importance=None):
        self.blocks = [dict(b) for b in blocks]
        self.removed = sorted(int(i) for i in removed)
        self.importance = importance
        count = len(self.blocks)
        if len(set(self.removed)) != len(self.removed) or any(not 0 <= i < count for i in self.removed):
            raise ValueError(
                f"Argument `removed` must hold distinct block indices in [0, {count}). "
                f"Received: removed={removed!r}"
            )
        if len(self.removed) >= count:
            raise ValueError(f"A plan cannot remove all {count} blocks: at least one must stay.")

    @property
    def kept(self):
        return [b["index"] for b in self.blocks if b["index"] not in self.removed]

    def to_json(self, **kwargs):
        return json.dumps({"blocks": self.blocks, "removed": self.removed, "importance": self.importance},
                          **kwargs)

    @classmethod
    def from_json(cls, text):
        data = json.loads(text)
        return cls(data["blocks"], data["removed"], data.get("importance"))

    def __str__(self):
        lines = [f"{'block':>5}  {'score':>10}  name"]
        for b in self.blocks:
            mark = "  [removed]" if b["index"] in self.removed else ""
            score = "-" if b.get("score") is None else f"{b['score']:.4g}"
            lines.append(f"{b['index']:>5}  {score:>10}  {b['name']}{mark}")
        return "\n".join(lines)


def _check_plan(model, plan):
    if not isinstance(plan, BlockPlan):
        raise TypeError(
            "Argument `plan` must be a kprune.transformers.BlockPlan (from plan_blocks). "
            f"Received: plan={plan!r} (of type {type(plan).__name__})"
        )
    blocks = transformer_blocks(model)
    names = [b.name for b in blocks]
    if names != [b["name"] for b in plan.blocks]:
        raise ValueError(
            f"The plan's blocks {[b['name'] for b in plan.blocks]} are not model '{model.name}'s "
            f"{names}: the plan was made for another model."
        )
    return blocks


def _writers(graph, block):
    """The usages whose weights write into the residual stream inside `block`."""
    if block.layer is not None:
        traced = [t for t in graph.traced if t.layer is block.layer]
        if not traced:
            raise ValueError(f"Block '{block.name}' could not be traced: kprune cannot bypass it.")
        prefix, stream = traced[0].name + "/", graph.group_of(int(traced[0].input_ids[0][0]))
        inside = lambda u: u.name.startswith(prefix)  # noqa: E731
    else:
        stream = None
        inside = lambda u: u.name in block.layers  # noqa: E731
    found = []
    for usage in graph.usages:
        if usage.role != "out" or usage.kind != "producer" or not inside(usage) or not len(usage.ids):
            continue
        group = graph.group_of(int(usage.ids[0]))
        if stream is None or group is stream:
            if stream is None and group is not None and not group.blocked:
                continue  # a branch's inner width (the MLP's hidden units), not the stream
            found.append(usage)
    return found


def mask_blocks(model, plan):
    """A copy of `model` with the plan's blocks bypassed (see the module docstring).

    Args:
        model: a KerasHub backbone or task, or a Functional model with
            residual blocks.
        plan: a `BlockPlan` made for it.

    Returns:
        A new model of the same shapes.

    Raises:
        ValueError: a block that zeroing cannot bypass (its output is
            normalized after the residual add): use `remove_blocks`.
    """
    blocks = _check_plan(model, plan)
    graph = ChannelGraph(model)
    values = {id(v): keras.ops.convert_to_numpy(v.value) for v in model.weights}
    for index in plan.removed:
        for usage in _writers(graph, blocks[index]):
            for variable, _, _ in usage.slices:
                values[id(variable)] = np.zeros_like(values[id(variable)])
    masked = _copy(model, lambda v: values[id(v)])
    for index in plan.removed:
        _check_bypassed(transformer_blocks(masked)[index])
    return masked


def _copy(model, values_of, blocks=None):
    builder = model_builder(model)
    if builder is not None:
        return builder(model, values_of, blocks) if blocks is not None else builder(model, values_of)
    return clone_with(model, lambda old: (copy_layer(old),) * 2,
                      lambda old: [values_of(v) for v in old.weights])


def _check_bypassed(block):
    """Raise unless a masked KerasHub block returns its input."""
    if block.layer is None:
        return  # a Functional block: the Add of a zero branch is its shortcut
    width = int(block.stream_in.shape[-1])
    x = np.random.default_rng(0).normal(size=(1, 3, width)).astype("float32")
    y = keras.ops.convert_to_numpy(block.layer(x))
    if not np.allclose(y, x, atol=1e-5):
        raise ValueError(
            f"Block '{block.name}' ({type(block.layer).__name__}) cannot be bypassed by zeroing the "
            "weights that write into its residual stream: its output is not its input then (a "
            "normalization after the residual add, as in post-norm blocks). Remove it with "
            "kprune.transformers.remove_blocks instead."
        )


def remove_blocks(model, plan):
    """`model` without the plan's blocks (see the module docstring).

    Args:
        model: a KerasHub backbone or task, or a Functional model with
            residual blocks.
        plan: a `BlockPlan` made for it.

    Returns:
        A new model: for KerasHub, a backbone (or task) of the same family
        with `len(plan.kept)` layers.
    """
    blocks = _check_plan(model, plan)
    if not plan.removed:
        return _copy(model, lambda v: keras.ops.convert_to_numpy(v.value))
    if hub_backbone(model) is not None:
        if model_builder(model) is None:
            raise ValueError(
                f"Model '{model.name}' holds a KerasHub backbone; remove blocks from the backbone "
                "or the task itself (kprune rebuilds those)."
            )
        return _copy(model, lambda v: keras.ops.convert_to_numpy(v.value), plan.kept)
    return _without_branches(model, [blocks[i] for i in plan.removed])


def _without_branches(model, removed):
    clone = clone_with(model, lambda old: (copy_layer(old),) * 2, lambda old: old.get_weights())
    skipped = {add for block in removed for add in block.adds}
    branch_of = {b.add: b.branch_index for b in residual_branches(model)}

    def call(node, args, kwargs):
        layer = node.operation
        if functional.is_layer(layer) and layer.name in skipped:
            return list(args[0])[1 - branch_of[layer.name]]
        return layer(*args, **kwargs)

    return functional.rebuild(clone, call)
