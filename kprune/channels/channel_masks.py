"""Choosing the channels of a `prune_channels` model during training, and writing its masks.

At each pruning turn of the schedule, `update_channel_masks` scores the
channel groups of the whole model on its current weights (the wrappers'
`importance`, `round_to`, `global_ranking` and per-producer `ratio`), makes a
`kprune.ChannelPlan` and writes every `PruneChannels` wrapper's masks at once
(`kprune.sparsity.masking.MaskWriter`: one graph call on TensorFlow). The
graph and the writer are made once per model (`channel_state`) and kept
across `fit` calls. `PruneChannels` hands these to `UpdatePruningStep` and
`update_masks` (its `prepare_model_masks` / `update_model_masks`), so the
tfmot-style callbacks drive channel pruning without knowing it.

Example:

>>> import keras, kprune
>>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(16, 3, name="conv"),
...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, name="head")])
>>> pruned = kprune.prune_channels(model, kprune.ConstantSparsity(0.5, 0), round_to=4)
>>> plan = update_channel_masks(pruned, sparsity=0.25)
>>> sum(len(group["pruned"]) for group in plan.groups)  # 4 of the 16 channels of conv
4
"""

import weakref

import keras
import numpy as np

from kprune._internal import functional
from kprune.channels import oneshot as channels_lib
from kprune.channels.planning import make_plan
from kprune.criteria import catalog
from kprune.dependency.channel_graph import ChannelGraph
from kprune.sparsity.masking import MaskWriter
from kprune.sparsity.prune import collect_wrappers
from kprune.sparsity.pruning_schedule import MAX_STEP
from kprune.utils.validation import check_sparsity


def trainable_slices(usage):
    """Whether a layer's usage of a channel group touches a trainable weight."""
    return any(variable.trainable for variable, _, _ in usage.slices)


def graph_model(model, wrappers):
    """The Sequential/Functional model inside `model` (itself, or e.g. the
    student of a `keras.distillation.Distiller`) that holds `wrappers`."""
    wanted = {id(w) for w in wrappers}
    stack = [model]
    while stack:
        candidate = stack.pop(0)
        if functional.is_graph(candidate) and wanted <= {id(w) for w in collect_wrappers(candidate)}:
            return candidate
        stack.extend(l for l in getattr(candidate, "layers", []) if isinstance(l, keras.Model))
    raise ValueError(
        f"Could not find the Sequential or Functional model that holds the "
        f"PruneChannels layers inside model '{model.name}' ({type(model).__name__})."
    )


def final_sparsity(schedule):
    """The sparsity a schedule ends at."""
    # The last step kprune counts is beyond any schedule's end (end_step <= MAX_STEP).
    return float(keras.ops.convert_to_numpy(schedule(MAX_STEP)[1]))


def update_channel_masks(model, sparsity=None, wrappers=None, graph=None, writer=None):
    """Choose the pruned channels of a `prune_channels` model and set its masks.

    Args:
        model: the wrapped model.
        sparsity: fraction of channels to prune per group, or None for the
            schedule's value at the wrappers' `pruning_step`.
        wrappers: its `PruneChannels` layers (found if None).
        graph: its `ChannelGraph` (built if None; the callback caches it).
        writer: a `mask_writer(wrappers)` that writes all masks at once (the
            callback caches it), or None to write them one by one.

    Returns:
        The `ChannelPlan` applied.
    """
    if wrappers is None:
        wrappers = [w for w in collect_wrappers(model) if type(w).model_level]
    first = wrappers[0]
    schedule = first.pruning_schedule
    if sparsity is None:
        step = int(keras.ops.convert_to_numpy(first.pruning_step))
        sparsity = float(keras.ops.convert_to_numpy(schedule(step)[1]))
    sparsity = check_sparsity("sparsity", sparsity)
    graph = graph if graph is not None else ChannelGraph(graph_model(model, wrappers))
    by_layer = {id(w.layer): w for w in wrappers}

    def skip(group):
        for usage in group.usages:
            if trainable_slices(usage) and id(usage.layer) not in by_layer:
                return "not wrapped by prune_channels"
        return None

    final = final_sparsity(schedule)
    progress = sparsity / final if final > 0 else 1.0
    ratios = {w.layer.name: min(w.ratio * progress, 0.999999) for w in wrappers if w.ratio is not None}
    plan = make_plan(
        graph, sparsity, catalog.get(first.importance), first.global_ranking,
        first.round_to, skip, ratios,
    )
    pruned = graph.pruned_flags(plan.units(graph))
    if writer is None:
        for w in wrappers:
            w.set_channel_masks(channels_lib.channel_masks(graph, w.layer, pruned))
        return plan
    keeps = []
    for w in wrappers:
        masks = channels_lib.channel_masks(graph, w.layer, pruned)
        for variable, mask in w.pruned_weights:
            keep = masks.get(id(variable))
            keeps.append(np.ones(tuple(mask.shape), bool) if keep is None else keep)
    writer.write(keeps)
    return plan


# model -> (ids of its channel wrappers, ChannelGraph, MaskWriter), kept
# across `fit` calls while the model lives.
_CHANNEL_STATE = weakref.WeakKeyDictionary()


def channel_state(model, wrappers):
    """`(graph, writer)` for the channel wrappers of a `prune_channels` model:
    its `ChannelGraph` and `mask_writer`, made once per model and kept across
    `fit` calls (on MobileNetV2 they take about 0.5 s: the graph, and the
    tracing of the writer on TensorFlow, done here with `MaskWriter.warm`;
    `UpdatePruningStep` calls this when training begins, so the cost does not
    land on a training step)."""
    key = tuple(id(w) for w in wrappers)
    cached = _CHANNEL_STATE.get(model)
    if cached is None or cached[0] != key:
        writer = mask_writer(wrappers)
        writer.warm()
        cached = (key, ChannelGraph(graph_model(model, wrappers)), writer)
        _CHANNEL_STATE[model] = cached
    return cached[1], cached[2]


def mask_writer(wrappers):
    """A `kprune.sparsity.masking.MaskWriter` for the masks of `wrappers`, in the
    order `update_channel_masks` writes them."""
    return MaskWriter([pair for w in wrappers for pair in w.pruned_weights])
