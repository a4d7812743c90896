"""Channel pruning during training: `prune_channels` and its mask updates.

`prune_channels(model, pruning_schedule, importance=...)` returns a copy of
`model` in which every layer holding weight slices of a prunable channel
group (the filters that write a channel, BatchNormalization's per-channel
parameters, the weights that read it) is wrapped by `PruneChannels`. During
`fit`, `UpdatePruningStep` asks the schedule for the fraction of channels to
prune, scores the channel groups on the current weights and zeroes the chosen
channels in every member of each group at once -- the same indices in every
branch of a residual Add, no OR-merge. Channels pruned at one turn have zero
weights and so score lowest at the next: pruning only grows.

`kprune.update_masks(model, sparsity)` prunes at once (one shot); after
training, `kprune.remove_channels(model)` returns the smaller plain model.

Example:

>>> import keras, numpy as np, kprune
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...     keras.layers.Conv2D(16, 3, name="conv"), keras.layers.ReLU(),
...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, name="head")])
>>> pruned = kprune.prune_channels(model, kprune.ConstantSparsity(0.5, 0), round_to=4)
>>> kprune.update_masks(pruned, sparsity=0.5)
>>> kprune.remove_channels(pruned).get_layer("conv").filters
8
"""

import keras
import numpy as np

from kprune.channels import config_list as config_list_lib
from kprune.channels.channel_masks import final_sparsity, trainable_slices
from kprune.channels.channel_wrapper import PruneChannels
from kprune.channels.planning import check_names, is_excluded
from kprune.criteria import catalog
from kprune.dependency.channel_graph import ChannelGraph
from kprune.dependency.unit_space import rows_of
from kprune.sparsity import in_place
from kprune.sparsity.prune import check_model, clone_with, collect_wrappers, copy_layer
from kprune.sparsity.pruning_schedule import ConstantSparsity
from kprune.utils.validation import check_round_to


def prune_channels(
    model,
    pruning_schedule=None,
    importance="l2",
    global_ranking=False,
    round_to=8,
    exclude=(),
    ratios=None,
    config_list=None,
):
    """Wrap a model so that whole channels are pruned gradually during `fit`.

    Args:
        model: a Sequential or Functional Keras model (not already wrapped).
        pruning_schedule: a `kprune.PruningSchedule`; its sparsity is the
            fraction of channels pruned in each group. Defaults to
            `ConstantSparsity(0.5, begin_step=0, frequency=100)`.
        importance: `"l1"`, `"l2"` (default), `"fpgm"` or `"bn_scale"`.
        global_ranking: rank channels across groups. Defaults to False.
        round_to: keep a multiple of this many channels per group. Defaults
            to 8 (see `kprune.plan_channels`).
        exclude: layer names or classes whose groups are left whole.
        ratios: `{producer_name: final_sparsity}` for particular groups; it
            follows the schedule's shape (scaled by its final sparsity).
        config_list: NNI's format instead of `ratios`/`exclude`/
            `global_ranking` (see `kprune.channels.config_list`); a 'total_sparsity'
            must equal the schedule's final sparsity (the default schedule
            then uses it). Defaults to None.

    Returns:
        A new model (fresh variables) to train with
        `callbacks=[kprune.UpdatePruningStep()]`.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Argument `model` must be a Keras model. Received: model={model!r} "
            f"(of type {type(model).__name__})"
        )
    in_place.check_channel_model(model, "Training-time channel pruning", composites=False)
    check_model(model)
    if collect_wrappers(model):
        raise ValueError(
            f"Model '{model.name}' already has kprune wrappers. Call "
            "kprune.strip_pruning(model) first, then prune_channels."
        )
    graph = ChannelGraph(model)
    if config_list is not None:
        total, ratios, exclude, global_ranking = config_list_lib.from_config_list(
            graph, config_list, None, ratios, exclude, global_ranking)
        if global_ranking and pruning_schedule is None:
            pruning_schedule = ConstantSparsity(total, begin_step=0, frequency=100)
        elif global_ranking and abs(final_sparsity(pruning_schedule) - total) > 1e-9:
            raise ValueError(
                f"config_list's 'total_sparsity' ({total}) differs from the final sparsity of "
                f"`pruning_schedule` ({final_sparsity(pruning_schedule)}). Make them equal."
            )
    if pruning_schedule is None:
        pruning_schedule = ConstantSparsity(0.5, begin_step=0, frequency=100)
    check_channel_settings(importance, round_to)
    ratios = check_names(graph, model, exclude, ratios)
    if isinstance(exclude, (str, type)):
        exclude = (exclude,)
    wrap = {}
    for group in graph.prunable_groups:
        if not group.producers or is_excluded(group, exclude):
            continue
        for usage in group.usages:
            if trainable_slices(usage):
                wrap[id(usage.layer)] = ratios.get(usage.layer.name)
    if not wrap:
        raise ValueError(
            f"Model '{model.name}' has no channel group that can be pruned "
            "(see kprune.plan_channels(model, 0.5) for the reason of each group)."
        )
    settings = dict(pruning_schedule=pruning_schedule, importance=importance,
                    global_ranking=global_ranking, round_to=round_to)

    def clone_layer(old):
        copy = copy_layer(old)
        if id(old) in wrap:
            return copy, PruneChannels(copy, ratio=wrap[id(old)], **settings)
        return copy, copy

    return clone_with(model, clone_layer, lambda old: old.get_weights())


def check_channel_settings(importance, round_to):
    """Validate `prune_channels`' `importance` and `round_to`.

    Only weight criteria are accepted. The masks are updated inside `fit` by
    `UpdatePruningStep`, from the weights alone: a data criterion would need a
    calibration pass over data at every pruning turn, data that a saved
    `PruneChannels` layer cannot hold, and `"thinet"`/`"lasso"` choose
    channels for a least-squares refit of the next layers that gradual
    pruning does not do. `kprune.plan_channels` (one shot) and
    `kprune.prune_layerwise` (the papers' prune / refit / fine-tune loop)
    take them.
    """
    if importance not in catalog.WEIGHT_CRITERIA:
        data_names = sorted(set(catalog.DATA_CRITERIA) - set(catalog.WEIGHT_CRITERIA))
        why = (
            f"{importance!r} is a data criterion: it measures the model on data, which the "
            "mask updates inside `fit` do not have (they read only the weights, and a saved "
            "model cannot hold the data)"
            if importance in data_names else f"{importance!r} is not a channel criterion"
        )
        raise ValueError(
            "Gradual channel pruning scores channels from the weights during `fit`: argument "
            f"`importance` must be one of {sorted(catalog.WEIGHT_CRITERIA)}. Received: "
            f"importance={importance!r} ({why}). For the data criteria {data_names}, use "
            "kprune.plan_channels(model, sparsity, importance=..., data=...) with "
            "kprune.mask_channels (one shot), or kprune.prune_layerwise(model, sparsity, "
            "importance=..., data=..., fine_tune=...) (group by group with fine-tuning)."
        )
    check_round_to(round_to)


def channel_sparsity(model):
    """Fraction of prunable channels currently masked in a `prune_channels`
    model, per producer: `{producer_name: (pruned, channels)}`."""
    graph = ChannelGraph(model)
    result = {}
    for group in graph.prunable_groups:
        for usage in group.usages:
            if usage.role != "out" or usage.layer.name not in group.producers:
                continue
            variable, axis, repeat = usage.slices[0]
            value = np.moveaxis(keras.ops.convert_to_numpy(variable.value), axis, 0)
            dead = sum(
                1 for positions in graph.unit_positions(group, usage)
                if positions and not np.any(value[rows_of(positions, repeat)])
            )
            result[usage.layer.name] = (dead, len(group.units))
    return result
