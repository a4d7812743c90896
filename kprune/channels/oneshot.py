"""Structured channel pruning: plan which channels go, zero them, remove them.

* `plan_channels(model, sparsity, importance=...)` scores every prunable
  channel group (`kprune.dependency.channel_graph`) and returns a `ChannelPlan`: plain data that
  prints as a table, round-trips through JSON and can be applied again.
* `mask_channels(model, plan)` returns a copy whose pruned channels are cut
  off: every weight slice that reads a pruned channel is 0 (and so is every
  filter that writes one), so the channel no longer affects the outputs.
* `remove_channels(model)` returns a smaller plain Keras model with the
  channels that no layer reads any more physically removed (fewer filters and
  units; sliced kernels, biases and BatchNormalization statistics). Its outputs
  equal the masked model's. Given a plan, it removes the plan's channels.
"""


import keras
import numpy as np

from kprune.channels import config_list as config_list_lib
from kprune.criteria import catalog
from kprune.dependency.channel_graph import ChannelGraph, rows_of
from kprune.dependency.channel_plan import ChannelPlan
from kprune.registry import keras_layers
from kprune.sparsity import in_place
from kprune.sparsity.prune import clone_with, collect_wrappers, copy_layer, strip_pruning
from kprune.utils import user_warnings
from kprune.utils.validation import check_round_to, check_sparsity


def keep_count(n, sparsity, round_to):
    """Channels kept of `n` at `sparsity`, a multiple of `round_to` (a group of at most
    `round_to` channels is kept whole), at least 1.

    >>> keep_count(64, 0.3, 8), keep_count(64, 0.3, 1), keep_count(6, 0.5, 8)
    (48, 45, 6)
    """
    keep = n * (1.0 - sparsity)
    if round_to > 1:
        if n <= round_to:
            return n
        keep = round_to * max(1, int(np.floor(keep / round_to + 0.5)))
    return int(min(n, max(1, int(np.floor(keep + 0.5)))))


def plan_channels(
    model,
    sparsity=None,
    importance="l2",
    global_ranking=False,
    round_to=8,
    exclude=(),
    ratios=None,
    data=None,
    loss=None,
    config_list=None,
):
    """Choose the channels to prune.

    Args:
        model: a Sequential or Functional Keras model.
        sparsity: fraction of channels to prune in each group (local) or over
            all groups (`global_ranking=True`), in [0, 1).
        importance: `"l1"`, `"l2"` (default), `"fpgm"`, `"bn_scale"`; the
            data criteria `"taylor"`, `"apoz"`, `"mean_activation"`,
            `"hessian"` (`kprune.criteria.hessian`), `"thinet"` and `"lasso"`
            (`kprune.criteria.reconstruction_criteria`), which need `data`; or a callable
            `(graph, group) -> scores` (see `kprune.criteria.importance`).
        global_ranking: rank channels across groups (scores divided by their
            group's mean) instead of within each group. Defaults to False.
        round_to: keep a multiple of this many channels per group (groups no
            larger than it are kept whole). Defaults to 8: XNNPACK's float
            kernels, which LiteRT runs on CPUs, work on channel tiles of 8 (or
            16), so other widths cost nearly as much as the next multiple
            (see the channel benchmark in the README). Use 1 for exact ratios.
        exclude: layer names or layer classes that keep their output width
            (the groups they write are left whole; their input channels may
            still be pruned).
        ratios: `{layer_name: sparsity}` overriding `sparsity` for the groups
            those producers belong to.
        data: inputs (or `(inputs, targets)` for `"taylor"` and `"hessian"`) the data-driven
            criteria run the model on: an array, a tuple of arrays or a
            `tf.data.Dataset` of batches. Defaults to None.
        loss: the loss for `"taylor"` and `"hessian"` (a Keras loss or its name); defaults to
            the compiled model's loss.
        config_list: NNI's format instead of `sparsity`/`ratios`/`exclude`/
            `global_ranking`, e.g. `[{"sparsity": 0.5, "op_types": ["Conv2D"]},
            {"exclude": True, "op_names": ["fc3"]}]` (see
            `kprune.channels.config_list`). Defaults to None.

    Returns:
        A `ChannelPlan`.

    Example:

    >>> import keras, kprune
    >>> model = keras.Sequential([keras.Input((8, 8, 3)),
    ...     keras.layers.Conv2D(16, 3, name="conv"), keras.layers.ReLU(),
    ...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> plan = kprune.plan_channels(model, 0.5, round_to=4)
    >>> plan.num_pruned
    8
    """
    check_round_to(round_to)
    in_place.check_channel_model(model)
    base = strip_pruning(model) if collect_wrappers(model) else model
    graph = ChannelGraph(base)
    if config_list is not None:
        sparsity, ratios, exclude, global_ranking = config_list_lib.from_config_list(
            graph, config_list, sparsity, ratios, exclude, global_ranking)
    if sparsity is None:
        raise ValueError(
            "Argument `sparsity` is required (a fraction in [0, 1)) unless `config_list` is "
            "given. Received: sparsity=None"
        )
    sparsity = check_sparsity("sparsity", sparsity)
    score_fn = catalog.get(importance, data=data, loss=loss)
    ratios = check_names(graph, model, exclude, ratios)
    if getattr(score_fn, "needs_model", False):
        score_fn = score_fn.bind(base)

    def skip(group):
        return "excluded" if is_excluded(group, exclude) else None

    return make_plan(graph, sparsity, score_fn, global_ranking, round_to, skip, ratios)


def check_names(graph, model, exclude, ratios):
    """Validate `ratios` and `exclude` against the graph; returns the ratios dict."""
    ratios = dict(ratios or {})
    for name, value in ratios.items():
        check_sparsity(f"ratios[{name!r}]", value)
    if isinstance(exclude, (str, type)):
        exclude = (exclude,)
    known = {u.layer.name for g in graph.groups for u in g.usages}
    for name in list(ratios) + [e for e in exclude if isinstance(e, str)]:
        if name not in known:
            raise ValueError(
                f"Layer '{name}' (in `ratios` or `exclude`) is not a layer of model "
                f"'{model.name}' that channel pruning can reach."
            )
    for name in ratios:
        writes = [g for g in graph.groups if name in g.producers]
        if not writes:
            raise ValueError(
                f"Layer '{name}' (in `ratios`) makes no channels of its own, so it has no "
                "channel ratio; give the ratio to the convolution or Dense layer before it."
            )
        if all(g.blocked for g in writes):
            raise ValueError(
                f"Layer '{name}' (in `ratios`) cannot be channel-pruned: its channels are "
                f"tied to {writes[0].blocked}. Remove it from `ratios`."
            )
    return ratios


def make_plan(graph, sparsity, score_fn, global_ranking, round_to, skip, ratios):
    """Score the groups of `graph` and choose the channels to prune.

    `skip(group)` returns a reason to leave a group whole, or None.
    """
    entries, scored = [], []
    for group in graph.groups:
        entry = {"group": group.index, "producers": group.producers,
                 "channels": len(group.units), "pruned": [], "reason": group.blocked}
        entries.append(entry)
        if group.blocked or not group.producers:
            entry["reason"] = entry["reason"] or "no producer"
            continue
        reason = skip(group)
        if reason:
            entry["reason"] = reason
            continue
        scores = score_fn(graph, group)
        if scores is None:
            name = getattr(score_fn, "__name__", type(score_fn).__name__)
            entry["reason"] = f"no weights for importance {name!r}"
            continue
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(group.units),):
            raise ValueError(
                f"Importance returned {scores.shape} scores for group {group.index} "
                f"with {len(group.units)} channels."
            )
        local = next((ratios[n] for n in group.producers if n in ratios), None)
        scored.append((entry, scores, local))

    if global_ranking and scored:
        pool = [s / (s.mean() + 1e-12) for _, s, local in scored if local is None]
        threshold_pool = np.concatenate(pool) if pool else np.array([])
        cut = int(np.floor(threshold_pool.size * sparsity + 0.5))
        order = np.sort(threshold_pool)
        threshold = order[cut - 1] if cut else -np.inf
    for entry, scores, local in scored:
        n = len(scores)
        if global_ranking and local is None:
            group_sparsity = float(np.mean(scores / (scores.mean() + 1e-12) <= threshold))
        else:
            group_sparsity = sparsity if local is None else local
        keep = keep_count(n, group_sparsity, round_to)
        # Lowest scores go first; ties by position (stable sort).
        entry["pruned"] = sorted(np.argsort(scores, kind="stable")[: n - keep].tolist())
    return ChannelPlan(entries)


def is_excluded(group, exclude):
    """Whether an excluded layer writes this group's channels (it keeps its width;
    its inputs may still shrink)."""
    for usage in group.usages:
        if usage.role != "out":
            continue
        for item in exclude:
            if isinstance(item, str) and usage.layer.name == item:
                return True
            if isinstance(item, type) and isinstance(usage.layer, item):
                return True
    return False


def channel_masks(graph, layer, pruned):
    """`{id(variable): bool array}` for `layer`'s variables that hold slices of
    `pruned` channels (True where the entry survives)."""
    return graph.keep_masks(pruned, graph.usages_of(layer))


def _sliced(graph, layer, pruned, zero_only):
    """The layer's weights with the slices of `pruned` channels zeroed or removed."""
    values = [keras.ops.convert_to_numpy(v.value) for v in layer.weights]
    if zero_only:
        masks = channel_masks(graph, layer, pruned)
        return [value * masks[id(v)] if id(v) in masks else value for v, value in zip(layer.weights, values)]
    positions = {id(v): k for k, v in enumerate(layer.weights)}
    for usage in graph.usages_of(layer):
        keep = graph.keep_positions(usage, pruned)
        for variable, axis, repeat in usage.slices:
            k = positions[id(variable)]
            values[k] = np.take(values[k], rows_of(keep, repeat), axis=axis)
    return values


def _base_graph(model, plan, required):
    """The plain model to copy and its channel graph (`plan` checked)."""
    if not isinstance(plan, ChannelPlan) and (required or plan is not None):
        raise TypeError(
            "Argument `plan` must be a kprune.ChannelPlan (from kprune.plan_channels). "
            f"Received: plan={plan!r} (of type {type(plan).__name__})"
        )
    in_place.check_channel_model(model)
    base = strip_pruning(model) if collect_wrappers(model) else model
    return base, ChannelGraph(base)


def _warn_nothing_pruned(base, plan, function):
    """The `UserWarning` of a `mask_channels`/`remove_channels` call that changes nothing."""
    if plan is not None:
        what = f"The plan prunes no channel of model '{base.name}'"
        fix = ("Make a plan that prunes channels first: kprune.plan_channels(model, sparsity) "
               "with sparsity > 0 (with round_to=8, groups of 8 channels or fewer stay whole; "
               "round_to=1 gives exact ratios).")
    else:
        what = (f"Model '{base.name}' has no pruned channel (every channel is still read by a "
                "nonzero weight)")
        fix = ("Cut channels off first: kprune.mask_channels(model, kprune.plan_channels(model, "
               "sparsity)), or train under kprune.prune_channels; or pass the plan: "
               "kprune.remove_channels(model, plan).")
    result = "an unchanged copy" if function == "mask_channels" else "a copy of the same size"
    user_warnings.warn(f"{what}, so {function} returns {result}. {fix}", UserWarning)


def mask_channels(model, plan):
    """A copy of `model` in which the plan's channels are cut off (weights zeroed).

    Args:
        model: a Sequential or Functional model, possibly wrapped for
            unstructured pruning (it is stripped first).
        plan: a `ChannelPlan` (`kprune.plan_channels`) made for this model.

    Returns:
        A new model of the same shapes. A plan that prunes no channel gives an
        unchanged copy, with a `UserWarning` that says so.

    Example:

    >>> import keras, kprune
    >>> model = keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(8, name="hidden"), keras.layers.Dense(2)])
    >>> masked = kprune.mask_channels(model, kprune.plan_channels(model, 0.5, round_to=1))
    >>> int((abs(masked.get_layer("hidden").kernel.numpy()).sum(axis=0) == 0).sum())
    4
    """
    base, graph = _base_graph(model, plan, required=True)
    pruned = plan.units(graph)
    if not pruned:
        _warn_nothing_pruned(base, plan, "mask_channels")
    return _masked(base, graph, pruned)


def masked_copy(model, plan):
    """`mask_channels` without its warning, for kprune's own callers (a search
    applies candidate plans, some of which keep every channel)."""
    base, graph = _base_graph(model, plan, required=True)
    return _masked(base, graph, plan.units(graph))


def _masked(base, graph, pruned):
    def clone_layer(old):
        copy = copy_layer(old)
        return copy, copy

    return clone_with(base, clone_layer, lambda old: _sliced(graph, old, pruned, zero_only=True))


def unread_units(graph):
    """Units that every layer reading them reads with all-zero weights."""
    reads = {}
    for group in graph.groups:
        if group.blocked:
            continue
        for usage in group.usages:
            if usage.role != "in":
                continue
            variable, axis, repeat = usage.slices[0]
            value = np.moveaxis(keras.ops.convert_to_numpy(variable.value), axis, 0)
            for k, positions in enumerate(graph.unit_positions(group, usage)):
                if positions:
                    rows = rows_of(positions, repeat)
                    zero = not np.any(value[rows])
                    unit = group.units[k]
                    reads[unit] = reads.get(unit, True) and zero
    pruned = {u for u, zero in reads.items() if zero}
    # Never remove every channel of a group.
    for group in graph.groups:
        if group.units and all(u in pruned for u in group.units):
            pruned.discard(group.units[0])
    return pruned


def remove_channels(model, plan=None):
    """A smaller plain Keras model without the pruned channels.

    Args:
        model: a Sequential or Functional model, possibly wrapped for
            unstructured or channel pruning (it is stripped first).
        plan: a `ChannelPlan` to remove. By default, every channel that no
            layer reads any more (all weights reading it are 0, as after
            `mask_channels` or training under `prune_channels`) is removed,
            which leaves the outputs unchanged.

    Returns:
        A new model with fewer filters/units. When nothing is removed (a plan
        that prunes no channel, or no plan and no channel cut off) it is a
        copy of the same size, and a `UserWarning` says so.

    Example:

    >>> import keras, kprune
    >>> model = keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(8, name="hidden"), keras.layers.Dense(2)])
    >>> plan = kprune.plan_channels(model, 0.5, round_to=1)
    >>> kprune.remove_channels(kprune.mask_channels(model, plan)).get_layer("hidden").units
    4
    """
    base, graph = _base_graph(model, plan, required=False)
    pruned = plan.units(graph) if plan is not None else unread_units(graph)
    if not pruned:
        _warn_nothing_pruned(base, plan, "remove_channels")
    return _removed(base, graph, pruned)


def reduced_copy(model, plan=None):
    """`remove_channels` without its warning, for kprune's own callers (a
    search's result may keep every channel)."""
    base, graph = _base_graph(model, plan, required=False)
    return _removed(base, graph, plan.units(graph) if plan is not None else unread_units(graph))


def _removed(base, graph, pruned):
    def clone_layer(old):
        config = None
        if id(old) in graph.widths:
            key, usage = graph.widths[id(old)]
            config = keras_layers.resized_config(old, key, len(graph.keep_positions(usage, pruned)))
        copy = copy_layer(old, config=config, build=False)
        return copy, copy

    def input_width(nested, i):
        ids = graph.model_inputs[id(nested)][i]
        return int(sum(graph.find(c) not in pruned for c in ids.tolist()))

    return clone_with(
        base, clone_layer, lambda old: _sliced(graph, old, pruned, zero_only=False), input_width
    )
