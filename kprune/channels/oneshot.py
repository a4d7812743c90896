"""Structured channel pruning: plan which channels go, zero them, remove them.

* `plan_channels(model, sparsity, importance=...)` scores every prunable
  group (`kprune.dependency.channel_graph`: channels, and a transformer's
  attention heads and FFN units) and returns a `ChannelPlan`: plain data that
  prints as a table, round-trips through JSON and can be applied again.
* `mask_channels(model, plan)` returns a copy whose pruned channels are cut
  off: every weight slice that reads a pruned channel is 0 (and so is every
  filter that writes one), so the channel no longer affects the outputs.
* `remove_channels(model)` returns a smaller model with the channels that no
  layer reads any more physically removed (fewer filters, units and heads;
  sliced kernels, biases and BatchNormalization statistics). Its outputs
  equal the masked model's. Given a plan, it removes the plan's channels.

Sequential and Functional models are cloned layer by layer; a KerasHub
backbone or task (alone or inside a Functional model) is rebuilt by the
builder `kprune.transformers` registers: a smaller model of the same
family (`kprune.channels.apply_plan`).
"""

import keras
import numpy as np

from kprune.channels import compensation
from kprune.channels import config_list as config_list_lib
from kprune.channels.apply_plan import copy_with_values
from kprune.channels.hidden_size import check_hidden_groups, warn_hidden
from kprune.channels.planning import check_names, check_ranking, is_excluded, make_plan, sparsity_table
from kprune.criteria import catalog
from kprune.dependency.channel_graph import HEAD_MODES, ChannelGraph
from kprune.dependency.channel_plan import ChannelPlan
from kprune.dependency.unit_space import rows_of
from kprune.sparsity import in_place
from kprune.sparsity.prune import collect_wrappers, strip_pruning
from kprune.utils import user_warnings
from kprune.utils.validation import check_round_to, check_sparsity


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
    heads="kv",
    hidden=None,
    normalize=None,
):
    """Choose the channels (and attention heads) to prune.

    Args:
        model: a Sequential or Functional Keras model, a KerasHub backbone
            or task, or a Functional model that holds one.
        sparsity: fraction of units to prune in each group (local) or over
            all groups (`global_ranking`), in [0, 1); or a dict by unit kind,
            `{"heads": 0.5, "channels": 0.25}` (a missing kind: 0). A
            transformer's channel groups are its FFN units; its residual
            stream (the hidden size) stays whole.
        importance: `"l1"`, `"l2"` (default), `"fpgm"`, `"bn_scale"`,
            `"random"`; the data criteria `"taylor"`, `"taylor_element"`
            (LLM-Pruner), `"apoz"`, `"mean_activation"`, `"activation"`
            (Minitron), `"fluctuation"` and `"flap"` (FLAP), `"hessian"`
            (`kprune.criteria.hessian`), `"thinet"` and `"lasso"`
            (`kprune.criteria.reconstruction_criteria`), which need `data`; or a callable
            `(graph, group) -> scores` (see `kprune.criteria.catalog`).
        global_ranking: rank units across groups (scores normalized per
            group, `normalize`) instead of within each group: True (a
            fraction of the units), or `"params"` (scores per parameter,
            until a fraction of the groups' parameters goes: a head weighs
            its query, key, value and output rows). Heads and channels are
            ranked apart, except with `"pooled"`: `"params"` over heads and
            channels together (FLAP's adaptive structure; one `sparsity`
            fraction). Defaults to False.
        round_to: keep a multiple of this many channels per group (groups no
            larger than it are kept whole). Defaults to 8: XNNPACK's float
            kernels, which LiteRT runs on CPUs, work on channel tiles of 8 (or
            16), so other widths cost nearly as much as the next multiple
            (see the channel benchmark in the README). Use 1 for exact ratios.
            Heads are whole units (`round_to` counts channels).
        exclude: layer names or layer classes that keep their output width
            (the groups they write are left whole; their input channels may
            still be pruned).
        ratios: `{layer_name: sparsity}` overriding `sparsity` for the groups
            those producers belong to.
        data: inputs (or `(inputs, targets)` for the Taylor criteria and `"hessian"`) the
            data-driven criteria run the model on: an array, a tuple of arrays, a dict by
            input name (a KerasHub model's) or a `tf.data.Dataset` of batches. Defaults to None.
        loss: the loss for the Taylor criteria and `"hessian"` (a Keras loss or its name);
            defaults to the compiled model's loss.
        config_list: NNI's format instead of `sparsity`/`ratios`/`exclude`/
            `global_ranking`, e.g. `[{"sparsity": 0.5, "op_types": ["Conv2D"]},
            {"exclude": True, "op_names": ["fc3"]}]` (see
            `kprune.channels.config_list`). Defaults to None.
        heads: the unit of grouped-query attention: `"kv"` (default) -- a
            key/value head with the query heads that read it -- or `"query"`
            -- query heads, the same number from every key/value group (the
            query heads stay a multiple of the key/value heads). Without
            GQA a unit is a head either way.
        hidden: fraction of the hidden size (the residual stream of a
            transformer: the channels its normalizations read) to prune as
            well, in [0, 1), ranked by `importance` summed over every layer
            that reads or writes the stream (`round_to` applies); None or 0
            (default) leaves it whole. Opt-in: the result is **not
            output-equivalent** (normalization statistics are over fewer
            channels; Gemma scales its embeddings by `sqrt(hidden_dim)`) and
            needs healing (distillation from the dense model), which a
            `UserWarning` says.
        normalize: how global ranking makes groups comparable: `"mean"`
            (scores divided by their group's mean) or `"zscore"` (FLAP's
            per-layer standardization, `(s - mean) / std`; the parameter
            rankings then order by the z-score and count parameters only
            toward the budget). Defaults to None: `"mean"`, or for
            `importance="flap"`, whose scores are z-scores already, the
            scores as they are. See `kprune.channels.planning`.

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

    Attention heads:

    >>> x = keras.Input((6, 8))
    >>> y = keras.layers.MultiHeadAttention(num_heads=4, key_dim=2, name="mha")(x, x)
    >>> plan = kprune.plan_channels(keras.Model(x, y), {"heads": 0.5})
    >>> [(g["unit"], g["channels"], len(g["pruned"])) for g in plan.groups if g["pruned"]]
    [('head', 4, 2)]

    FLAP (its z-scored fluctuation, heads and FFN units in one parameter
    budget; then `mask_channels`/`remove_channels` with `compensate=`):

    >>> import numpy as np
    >>> n = keras.layers.LayerNormalization()(x)
    >>> h = keras.layers.Add()([x, keras.layers.Dense(8)(keras.layers.Dense(16, activation="relu")(n))])
    >>> model = keras.Model(x, keras.layers.Add()([h, y]))
    >>> data = np.random.default_rng(0).normal(size=(4, 6, 8)).astype("float32")
    >>> plan = kprune.plan_channels(model, 0.4, importance="flap", data=data,
    ...     global_ranking="pooled", round_to=1)
    >>> plan.num_pruned > 0
    True

    The hidden size, on request (a warning says it is not output-equivalent):

    >>> import warnings
    >>> x = keras.Input((6, 4))
    >>> h = keras.layers.Dense(8, name="embed")(x)
    >>> f = keras.layers.Dense(8, name="ffn")(keras.layers.LayerNormalization()(h))
    >>> model = keras.Model(x, keras.layers.Dense(2)(keras.layers.Add()([h, f])))
    >>> with warnings.catch_warnings(record=True):
    ...     plan = kprune.plan_channels(model, 0.0, round_to=1, hidden=0.25)
    >>> [(g["unit"], g["channels"], len(g["pruned"])) for g in plan.groups if g["pruned"]]
    [('hidden', 8, 2)]
    """
    check_round_to(round_to)
    if config_list is None:
        check_ranking(global_ranking, normalize, sparsity)
    if heads not in HEAD_MODES:
        raise ValueError(f"Argument `heads` must be one of {HEAD_MODES}. Received: heads={heads!r}")
    hidden = 0.0 if hidden is None else check_sparsity("hidden", hidden)
    in_place.check_channel_model(model)
    base = strip_pruning(model) if collect_wrappers(model) else model
    graph = ChannelGraph(base, heads=heads, hidden=hidden > 0)
    if hidden > 0:
        check_hidden_groups(graph, base, hidden)
    if config_list is not None:
        sparsity, ratios, exclude, global_ranking = config_list_lib.from_config_list(
            graph, config_list, sparsity, ratios, exclude, global_ranking)
        check_ranking(global_ranking, normalize, sparsity)
    if sparsity is None:
        raise ValueError(
            "Argument `sparsity` is required (a fraction in [0, 1)) unless `config_list` is "
            "given. Received: sparsity=None"
        )
    sparsity_table(sparsity)  # checked before any scoring
    score_fn = catalog.get(importance, data=data, loss=loss)
    ratios = check_names(graph, model, exclude, ratios)
    if getattr(score_fn, "needs_model", False):
        score_fn = score_fn.bind(base)

    def skip(group):
        return "excluded" if is_excluded(group, exclude) else None

    plan = make_plan(graph, sparsity, score_fn, global_ranking, round_to, skip, ratios, normalize,
                     hidden=hidden)
    if hidden > 0:
        warn_hidden(base)
    return plan


def channel_masks(graph, layer, pruned):
    """`{id(variable): bool array}` for `layer`'s variables that hold slices of
    `pruned` channels (True where the entry survives)."""
    return graph.keep_masks(pruned, graph.usages_of(layer))


def _base_graph(model, plan, required, heads="kv"):
    """The plain model to copy and its channel graph (`plan` checked)."""
    if not isinstance(plan, ChannelPlan) and (required or plan is not None):
        raise TypeError(
            "Argument `plan` must be a kprune.ChannelPlan (from kprune.plan_channels). "
            f"Received: plan={plan!r} (of type {type(plan).__name__})"
        )
    if heads not in HEAD_MODES:
        raise ValueError(f"Argument `heads` must be one of {HEAD_MODES}. Received: heads={heads!r}")
    in_place.check_channel_model(model)
    base = strip_pruning(model) if collect_wrappers(model) else model
    if plan is None:
        return base, ChannelGraph(base, heads=heads)
    return base, ChannelGraph(base, heads=plan.heads, hidden=plan.hidden)


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


def mask_channels(model, plan, compensate=None):
    """A copy of `model` in which the plan's channels are cut off (weights zeroed).

    Args:
        model: a Sequential or Functional model, possibly wrapped for
            unstructured pruning (it is stripped first); a KerasHub backbone
            or task, or a Functional model that holds one.
        plan: a `ChannelPlan` (`kprune.plan_channels`) made for this model.
        compensate: calibration inputs (as `plan_channels`' `data`) for
            FLAP's bias compensation: each layer reading a pruned unit adds
            the unit's mean contribution on these inputs to its bias, `b +=
            mean(x)[pruned] @ W[pruned]` (`kprune.channels.compensation`;
            every such layer needs a bias). Defaults to None (no compensation).

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
    return _masked(base, graph, pruned, _shifts(base, graph, pruned, compensate))


def _shifts(base, graph, pruned, compensate):
    """The bias shifts of FLAP's compensation on `compensate`, or None."""
    if compensate is None:
        return None
    return compensation.bias_shifts(base, graph, graph.pruned_flags(pruned), compensate)


def masked_copy(model, plan):
    """`mask_channels` without its warning, for kprune's own callers (a search
    applies candidate plans, some of which keep every channel)."""
    base, graph = _base_graph(model, plan, required=True)
    return _masked(base, graph, plan.units(graph))


def _masked(base, graph, pruned, shifts=None):
    return copy_with_values(base, graph, graph.pruned_flags(pruned), remove=False, shifts=shifts)


def unread_units(graph):
    """Units that every layer reading them reads with all-zero weights (an
    attention head: its rows of the output projection)."""
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
    for group in graph.groups:
        if group.units and all(u in pruned for u in group.units):
            pruned.discard(group.units[0])  # never remove every channel of a group
        if group.blocks > 1:
            _check_balanced(group, pruned)
    return pruned


def _check_balanced(group, pruned):
    size = len(group.units) // group.blocks
    counts = {sum(u in pruned for u in group.units[b * size:(b + 1) * size]) for b in range(group.blocks)}
    if len(counts) > 1 or size in counts:
        raise ValueError(
            f"The query heads cut off in {', '.join(group.producers)} are not the same number "
            f"in each of its {group.blocks} key/value groups, so they cannot be removed (the "
            "query heads must stay a multiple of the key/value heads). Pass the plan: "
            "kprune.remove_channels(model, plan), or heads='kv'."
        )


def remove_channels(model, plan=None, heads="kv", compensate=None):
    """A smaller model without the pruned channels.

    Args:
        model: a Sequential or Functional model, possibly wrapped for
            unstructured or channel pruning (it is stripped first); a KerasHub
            backbone or task, or a Functional model that holds one.
        plan: a `ChannelPlan` to remove. By default, every channel that no
            layer reads any more (all weights reading it are 0, as after
            `mask_channels` or training under `prune_channels`) is removed,
            which leaves the outputs unchanged.
        heads: without a plan, how cut-off attention heads are found under
            grouped-query attention: `"kv"` (default) removes a key/value
            head whose query heads are all cut off, `"query"` removes query
            heads (which must be the same number in every group). A plan
            carries its own.
        compensate: calibration inputs for FLAP's bias compensation, as in
            `mask_channels` (the means are those of `model`, so a `plan` is
            required: `remove_channels(mask_channels(model, plan,
            compensate=x))` keeps the compensated biases too). Defaults to None.

    Returns:
        A new model with fewer filters/units/heads: a plain Keras model, or
        for KerasHub a model of the same family (see `kprune.transformers`).
        When nothing is removed (a plan that prunes no channel, or no plan
        and no channel cut off) it is a copy of the same size, and a
        `UserWarning` says so.

    Example:

    >>> import keras, kprune
    >>> model = keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(8, name="hidden"), keras.layers.Dense(2)])
    >>> plan = kprune.plan_channels(model, 0.5, round_to=1)
    >>> kprune.remove_channels(kprune.mask_channels(model, plan)).get_layer("hidden").units
    4
    """
    if compensate is not None and plan is None:
        raise ValueError(
            "Argument `compensate` needs a `plan`: the pruned units' mean contributions are "
            "measured on the model before pruning. Pass the plan, remove_channels(model, plan, "
            "compensate=x), or compensate when masking: mask_channels(model, plan, compensate=x). "
            "Received: plan=None"
        )
    base, graph = _base_graph(model, plan, required=False, heads=heads)
    pruned = plan.units(graph) if plan is not None else unread_units(graph)
    if not pruned:
        _warn_nothing_pruned(base, plan, "remove_channels")
    return _removed(base, graph, pruned, _shifts(base, graph, pruned, compensate))


def reduced_copy(model, plan=None):
    """`remove_channels` without its warning, for kprune's own callers (a
    search's result may keep every channel)."""
    base, graph = _base_graph(model, plan, required=False)
    return _removed(base, graph, plan.units(graph) if plan is not None else unread_units(graph))


def _removed(base, graph, pruned, shifts=None):
    return copy_with_values(base, graph, graph.pruned_flags(pruned), remove=True, shifts=shifts)
