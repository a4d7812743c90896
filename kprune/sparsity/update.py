"""`update_masks`: recompute the masks of a pruned model outside `fit`."""

import keras

from kprune.channels import gradual
from kprune.sparsity.prune import pruned_layers
from kprune.sparsity.pruning_schedule import check_sparsity
from kprune.channels.channel_wrapper import PruneChannels


def update_masks(model, sparsity=None):
    """Recompute every mask of a pruned model now.

    For one-shot pruning (`sparsity` given) and for custom training loops
    (`sparsity=None`: each layer uses its schedule's sparsity at its current
    `pruning_step`). Pruned entries of the weights are set to 0.

    Args:
        model: a model, a list of layers or a layer wrapped by
            `prune_low_magnitude`.
        sparsity: target sparsity in [0, 1) for every pruned weight, or `None`
            to follow each layer's schedule. Ignored by M:N layers.

    Example:

    >>> import keras, numpy as np, kprune
    >>> pruned = kprune.prune_low_magnitude(
    ...     keras.Sequential([keras.Input((10,)), keras.layers.Dense(10)]))
    >>> kprune.update_masks(pruned, sparsity=0.9)
    >>> int((pruned.layers[0].layer.kernel.numpy() == 0).sum())
    90
    """
    if sparsity is not None:
        sparsity = check_sparsity("sparsity", sparsity)
    wrappers = pruned_layers(model)
    if not wrappers:
        raise ValueError(
            "update_masks found no pruned layers. Wrap the model with "
            f"kprune.prune_low_magnitude first. Received: {type(model).__name__}"
        )
    for w in wrappers:
        if not w.built:
            raise ValueError(
                f"Layer '{w.name}' is not built: call the model on data (or give it "
                "an Input) before updating masks."
            )
    channel_wrappers = [w for w in wrappers if isinstance(w, PruneChannels)]
    if channel_wrappers:
        if not isinstance(model, keras.Model):
            raise ValueError(
                "Channel masks are chosen for a whole model: pass the model returned by "
                f"kprune.prune_channels. Received: {type(model).__name__}"
            )
        gradual.update_channel_masks(model, sparsity, channel_wrappers)
    for w in wrappers:
        if isinstance(w, PruneChannels):
            continue
        if sparsity is None:
            step = int(keras.ops.convert_to_numpy(w.pruning_step))
            value = float(keras.ops.convert_to_numpy(w.pruning_schedule(step)[1]))
        else:
            value = sparsity
        w.update_masks(value)
