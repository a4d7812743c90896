"""`update_masks`: recompute the masks of a pruned model outside `fit`."""

import keras

from kprune.sparsity.prune import pruned_layers
from kprune.utils.validation import check_sparsity


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
    model_level = {}  # masks chosen for the whole model at once (channel groups), by class
    for w in wrappers:
        if type(w).model_level:
            model_level.setdefault(type(w), []).append(w)
    for cls, members in model_level.items():
        cls.update_model_masks(model, members, sparsity)
    for w in wrappers:
        if type(w).model_level:
            continue
        if sparsity is None:
            step = int(keras.ops.convert_to_numpy(w.pruning_step))
            value = float(keras.ops.convert_to_numpy(w.pruning_schedule(step)[1]))
        else:
            value = sparsity
        w.update_masks(value)
