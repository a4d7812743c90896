"""The papers' layer-by-layer procedure: prune one group, fine-tune, go on.

ThiNet (Luo, Wu, Lin, ICCV 2017) and channel pruning by LASSO (He, Zhang,
Sun, ICCV 2017) do not prune a network in one shot: they prune one layer
(here: one channel group, `kprune.dependency.channel_graph`), optionally rebuild the layers that
read it by least squares against the *original* network's outputs
(`kprune.reconstruct`), fine-tune briefly, and only then score the next layer
-- on the partly pruned, fine-tuned network, so that each choice sees the
errors of the earlier ones. After the last group, the whole model is
fine-tuned once more.

`prune_layerwise(model, sparsity, ...)` runs that loop over the prunable
groups in graph order (inputs first). For every group:

1. score its channels with `importance` on the current model (data criteria
   run on the current model too) and choose the channels to prune exactly as
   `kprune.plan_channels` would for that group alone;
2. zero them (`kprune.mask_channels`);
3. with `reconstruct=True`, refit the Conv/Dense layers that read the group
   to the reference model's outputs (`kprune.reconstruct(..., layers=...)`);
4. with `fine_tune`, call `fine_tune(small)` on the smaller model with the
   pruned channels removed (`kprune.remove_channels`) and copy its trained
   weights back.

The working copy keeps the original shapes (pruned slices held at exactly 0),
so the reconstruction reference is the unpruned model itself and the returned
`ChannelPlan` is written in the original model's groups. Cost: one
`plan_channels`-style scoring (for data criteria: one measurement of the model
on `data`), one reconstruction of the group's consumers and one fine-tune per
pruned group.

Example:

>>> import keras, numpy as np, kprune
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...     keras.layers.Conv2D(8, 3, activation="relu", name="c1"),
...     keras.layers.Conv2D(8, 3, activation="relu", name="c2"),
...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, name="head")])
>>> x = np.random.default_rng(0).random((32, 8, 8, 3), dtype=np.float32)
>>> y = np.arange(32) % 2
>>> tune = kprune.fine_tuner(x, y, "sparse_categorical_crossentropy", epochs=1)
>>> small, plan = kprune.prune_layerwise(model, 0.5, importance="l1", data=x,
...     reconstruct=True, fine_tune=tune, final_fine_tune=tune)
>>> small.get_layer("c1").filters, small.get_layer("c2").filters
(4, 4)
"""

import keras
import numpy as np

from kprune._internal import functional
from kprune.channels.oneshot import channel_masks, reduced_copy
from kprune.channels.planning import check_names, is_excluded, make_plan
from kprune.criteria import catalog, sampling
from kprune.dependency.channel_graph import ChannelGraph
from kprune.dependency.channel_plan import ChannelPlan
from kprune.methods.reconstruction import reconstruct as reconstruct_layers
from kprune.sparsity.prune import clone_with, collect_wrappers, copy_layer, strip_pruning
from kprune.utils.validation import check_round_to, check_sparsity


def _check_callable(name, value):
    if value is not None and not callable(value):
        raise TypeError(
            f"Argument `{name}` must be None or a callable `fn(model)` that trains the pruned "
            f"model in place (e.g. kprune.fine_tuner(x, y, loss)). Received: {name}={value!r}"
        )


def _leaves(model):
    """The layers of `model` that hold channel slices: its layers, and those of
    nested Sequential/Functional models (a composite layer such as
    MultiHeadAttention counts as one: its usages name it, not its parts)."""
    result = []
    for layer in model.layers:
        result.extend(_leaves(layer) if functional.is_nested_graph(layer) else [layer])
    return result


def _zero(graph, pruned):
    """Zero, in place, every weight slice of `graph.model` that holds a `pruned` channel."""
    for layer in _leaves(graph.model):
        masks = channel_masks(graph, layer, pruned)
        for variable in layer.weights:
            if id(variable) in masks:
                value = keras.ops.convert_to_numpy(variable.value)
                variable.assign((value * masks[id(variable)]).astype(value.dtype))


def _copy_back(graph, pruned, source):
    """Write the weights of `source` into `graph.model`: a model of the same
    layers (same shapes), or the smaller model with the `pruned` channels
    removed, whose weights go back to the surviving slices."""
    targets, sources = _leaves(graph.model), _leaves(source)
    if [t.name for t in targets] != [s.name for s in sources]:
        raise ValueError(
            "The fine-tuned model's layers differ from the pruned model's: `fine_tune` must train "
            "the model it is given in place, not replace its layers."
        )
    for target, layer in zip(targets, sources):
        masks = channel_masks(graph, target, pruned)
        for variable, value in zip(target.weights, layer.get_weights()):
            mask = masks.get(id(variable))
            if mask is not None and value.shape != mask.shape:
                full = np.zeros(mask.shape, dtype=value.dtype)
                full[mask] = value.reshape(-1)
                value = full
            variable.assign(value)


def _consumers(graph, group):
    """Names of the top-level Conv/Dense layers that read `group`'s channels
    (the layers `reconstruct` refits)."""
    top = {id(node.operation) for node in functional.nodes(graph.model)}
    return sorted({u.layer.name for u in group.usages
                   if u.role == "in" and id(u.layer) in top and sampling.supports(u.layer)})


def _order(graph):
    """The graph's groups ordered by their first producer in graph order."""
    position = {node.operation.name: k for k, node in enumerate(functional.nodes(graph.model))}

    def first(group):
        return min((position.get(name, len(position)) for name in group.producers), default=len(position))

    return sorted(graph.groups, key=lambda g: (first(g), g.index))


def prune_layerwise(model, sparsity, importance="l2", data=None, loss=None, reconstruct=False,
                    fine_tune=None, final_fine_tune=None, round_to=1, exclude=(), ratios=None,
                    reconstruct_kwargs=None, seed=0, remove=True, verbose=0):
    """Prune channel groups one at a time, each followed by a short fine-tune.

    Args:
        model: the trained Sequential or Functional model (not modified).
        sparsity: fraction of channels pruned in each group, in [0, 1).
        importance: any `kprune.plan_channels` criterion: `"l1"`, `"l2"`
            (default), `"fpgm"`, `"bn_scale"`, the data criteria `"taylor"`,
            `"apoz"`, `"mean_activation"`, `"hessian"`, `"thinet"`, `"lasso"`
            (measured on the current, partly pruned model at every step), or
            a callable `(graph, group) -> scores`.
        data: inputs (or `(inputs, targets)` for `"taylor"`/`"hessian"`) for
            the data criteria and for `reconstruct`. Defaults to None.
        loss: the loss of `"taylor"`/`"hessian"`; defaults to `model.loss`.
        reconstruct: after pruning a group, refit the Conv/Dense layers that
            read it by least squares to the unpruned model's outputs on `data`
            (`kprune.reconstruct`). Defaults to False.
        fine_tune: None (no fine-tune between groups) or a callable
            `fn(model)` that trains, in place, the plain model with the
            channels pruned so far removed (`kprune.fine_tuner` makes one).
            Defaults to None.
        final_fine_tune: the same, called once after the last group.
            Defaults to None.
        round_to: keep a multiple of this many channels per group (see
            `kprune.plan_channels`). Defaults to 1.
        exclude: layer names or classes whose groups keep their width.
        ratios: `{producer_name: sparsity}` overriding `sparsity` for groups.
        reconstruct_kwargs: extra arguments of `kprune.reconstruct`
            (`max_images`, `ridge`, ...). Defaults to None.
        seed: before each fine-tune call, `keras.utils.set_random_seed(seed +
            k)` (k = 0, 1, ...) so that runs repeat exactly; None leaves the
            global random state alone. Defaults to 0.
        remove: return the smaller model (True, default) or the model of the
            original shapes with the pruned slices at 0 (its outputs are the
            same; `kprune.remove_channels(masked, plan)` gives the smaller one).
        verbose: 1 shows a progress bar over the groups. Defaults to 0.

    Returns:
        `(pruned_model, plan)`: the model and a `ChannelPlan` of `model`'s groups.
    """
    sparsity = check_sparsity("sparsity", sparsity)
    check_round_to(round_to)
    _check_callable("fine_tune", fine_tune)
    _check_callable("final_fine_tune", final_fine_tune)
    if reconstruct and data is None:
        raise ValueError(
            "Argument `reconstruct=True` refits layers on data: pass `data=` (inputs). Received: data=None"
        )
    reference = strip_pruning(model) if collect_wrappers(model) else model
    work = clone_with(reference, lambda old: (copy_layer(old),) * 2, lambda old: old.get_weights())
    graph = ChannelGraph(work)
    ratios = check_names(graph, reference, exclude, ratios)
    exclude = (exclude,) if isinstance(exclude, (str, type)) else tuple(exclude)
    loss = loss if loss is not None else getattr(reference, "loss", None)
    score_fn = catalog.get(importance, data=data, loss=loss)
    order = [g for g in _order(graph) if g.blocked is None and g.producers and len(g.units) > 1]
    entries = {g.index: dict(_entry(g), reason="excluded") for g in order if is_excluded(g, exclude)}
    order = [g for g in order if g.index not in entries]
    pruned = set()
    progress = keras.utils.Progbar(len(order), unit_name="group") if verbose else None
    calls = 0

    def tune(fn):
        nonlocal calls
        if seed is not None:
            keras.utils.set_random_seed(seed + calls)
        calls += 1
        plan = _plan(graph, entries)
        small = reduced_copy(work, plan)
        fn(small)
        _copy_back(graph, pruned, small)

    for k, group in enumerate(order):
        if getattr(score_fn, "needs_model", False):
            score_fn = score_fn.bind(work)  # measure the current model (drops the cached scores)
        step = make_plan(graph, sparsity, score_fn, False, round_to,
                         lambda g, current=group: None if g is current else "another step", ratios)
        entry = step.groups[group.index]
        entries[group.index] = entry
        if entry["pruned"]:
            units = {group.units[p] for p in entry["pruned"]}
            pruned |= units
            _zero(graph, pruned)
            if reconstruct:
                refit = reconstruct_layers(work, reference, data, layers=_consumers(graph, group),
                                           **(reconstruct_kwargs or {}))
                _copy_back(graph, pruned, refit)
            if fine_tune is not None:
                tune(fine_tune)
        if progress is not None:
            progress.update(k + 1)
    plan = _plan(graph, entries)
    if final_fine_tune is not None:
        tune(final_fine_tune)
    result = clone_with(work, lambda old: (copy_layer(old),) * 2, lambda old: old.get_weights())
    return (reduced_copy(result, plan) if remove else result), plan


def _entry(group):
    reason = group.blocked or (
        "no producer" if not group.producers else "one channel" if len(group.units) < 2 else "not pruned yet")
    return {"group": group.index, "producers": group.producers, "channels": len(group.units),
            "pruned": [], "reason": reason}


def _plan(graph, entries):
    """The `ChannelPlan` of the steps done so far (groups not pruned yet are whole)."""
    groups = []
    for group in graph.groups:
        entry = entries.get(group.index) or _entry(group)
        groups.append(dict(entry, reason=None if entry["pruned"] else entry["reason"]))
    return ChannelPlan(groups)
