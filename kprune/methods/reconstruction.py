"""Least-squares reconstruction: refit the layers that read pruned channels.

After channels are cut off (`kprune.mask_channels`), every Conv/Dense layer
that read them is refit so that its outputs match the unpruned (reference)
model's on data (He, Zhang, Sun, "Channel Pruning for Accelerating Very Deep
Neural Networks", ICCV 2017, eq. 1 with beta fixed; ThiNet's per-channel
rescaling, Luo et al. ICCV 2017, is the special case of a diagonal refit):

    W', b' = argmin ||Y - X' W' - 1 b'||^2 + ridge ||W'||^2

with `X'` the layer's input patches in the *pruned* model restricted to its
kept input channels, and `Y` the reference layer's output (before its
activation) at the same positions. Layers are refit in graph order, and the
inputs of each are sampled after the layers before it were refit, so that a
layer corrects the error left by earlier ones (the papers' procedure). The
pruned channels' weights stay exactly 0, so `kprune.remove_channels(result,
plan)` then removes them with unchanged outputs.

Memory and time: per refit layer, one forward pass over at most
`max_images` images (only up to that layer), `max_images *
positions_per_image` rows of `K * C` floats, and one `scipy.linalg.lstsq`
of that size; the reference outputs `(rows, F)` of all layers are kept. For
ResNet50 with the defaults (256 images x 8 positions): at most 2048 x 4608
floats (38 MB) per layer; expect 10 to 20 minutes on 2 cores.

Example:

>>> import keras, numpy as np, kprune
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...     keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
...     keras.layers.Conv2D(4, 3, name="next"), keras.layers.GlobalAveragePooling2D()])
>>> x = np.random.default_rng(0).random((64, 8, 8, 3), dtype=np.float32)
>>> plan = kprune.plan_channels(model, 0.5, data=x, round_to=1)
>>> masked = kprune.mask_channels(model, plan)
>>> refit, errors = kprune.reconstruct(masked, model, x, return_errors=True)
>>> bool(errors["next"][1] < errors["next"][0])
True
"""

import keras
import numpy as np

from kprune._internal import functional
from kprune.channels.oneshot import masked_copy, plan_channels, reduced_copy
from kprune.criteria import least_squares as selection
from kprune.criteria import sampling
from kprune.sparsity.prune import clone_with, collect_wrappers, copy_layer, strip_pruning
from kprune.utils import user_warnings


def _dead_rows(kernel):
    """Input channels (axis 1 of a `(K, C, F)` kernel) whose weights are all 0."""
    return ~np.any(kernel != 0, axis=(0, 2))


def _bias(layer):
    bias = getattr(layer, "bias", None)
    return keras.ops.convert_to_numpy(bias) if isinstance(bias, keras.Variable) else None


def refit_layer(patches, target, kernel, use_bias, ridge=1e-3):
    """The least-squares refit of one layer, on arrays.

    Args:
        patches: `(n, K, C)` input patches in the pruned model.
        target: `(n, F)` reference outputs before the activation.
        kernel: `(K, C, F)` current kernel; input channels whose weights are
            all 0 stay 0 (pruned), and so do output filters that are all 0.
        use_bias: also fit a bias.
        ridge: relative ridge term (`kprune.criteria.least_squares.least_squares`).

    Returns:
        `(kernel, bias)`: the refit `(K, C, F)` kernel and `(F,)` bias (None
        without `use_bias`).
    """
    K, C, F = kernel.shape
    rows = np.flatnonzero(~_dead_rows(kernel))
    filters = np.flatnonzero(np.any(kernel != 0, axis=(0, 1)))
    new = np.zeros_like(kernel, dtype=np.float64)
    bias = np.zeros(F) if use_bias else None
    if rows.size and filters.size:
        X = patches[:, :, rows].reshape(len(patches), -1)
        W, b = selection.least_squares(X, target[:, filters], intercept=use_bias, ridge=ridge)
        new[np.ix_(np.arange(K), rows, filters)] = W.reshape(K, len(rows), len(filters))
        if use_bias:
            bias[filters] = b
    return new, bias


def _targets(model, reference, layers=None):
    """Pairs `(layer, reference_layer)` of supported layers that read pruned
    channels (only those named in `layers`, if given)."""
    pairs, missing = [], []
    for node in functional.nodes(model):
        layer = node.operation
        if not sampling.supports(layer) or (layers is not None and layer.name not in layers):
            continue
        try:
            ref = reference.get_layer(layer.name)
        except ValueError:
            missing.append(layer.name)
            continue
        if tuple(ref.kernel.shape) != tuple(layer.kernel.shape):
            raise ValueError(
                f"Layer '{layer.name}' has kernel shape {tuple(layer.kernel.shape)} in the pruned "
                f"model and {tuple(ref.kernel.shape)} in the reference: reconstruct the masked model "
                "(kprune.mask_channels) before kprune.remove_channels."
            )
        pruned_rows = _dead_rows(sampling.kernel_matrix(layer)) & ~_dead_rows(sampling.kernel_matrix(ref))
        if pruned_rows.any():
            pairs.append((layer, ref))
    if missing:
        message = (f"Layers {missing} of the pruned model have no layer of the same name in `reference` "
                   f"'{reference.name}', so they are not reconstructed. Pass the dense model the pruned one was "
                   "made from (kprune keeps layer names).")
        if layers is not None:
            raise ValueError(message)
        user_warnings.warn(message, UserWarning)
    return pairs


def _outputs(patches, layer):
    out = np.einsum("nkc,kcf->nf", patches, sampling.kernel_matrix(layer), dtype=np.float64)
    bias = _bias(layer)
    return out + bias if bias is not None else out


def _relative_error(a, b):
    return float(np.sum((a - b) ** 2) / (np.sum(b**2) + 1e-30))


def reconstruct(pruned, reference, data, max_images=256, positions_per_image=8, ridge=1e-3,
                seed=0, memory_mb=512, return_errors=False, verbose=0, layers=None):
    """Refit every layer of `pruned` that reads pruned channels to the reference's outputs.

    Args:
        pruned: a masked model (`kprune.mask_channels`, or any model with
            the reference's shapes in which pruned channels have all-zero weights).
        reference: the unpruned model (same layer names and shapes).
        data: inputs (or `(inputs, targets)`; the targets are ignored): an
            array, a tuple of arrays or a `tf.data.Dataset` of batches.
        max_images: images sampled at most. Defaults to 256.
        positions_per_image: output positions sampled per image and layer.
            Defaults to 8.
        ridge: relative ridge term of the least squares. Defaults to 1e-3.
        seed: seed of the sampled positions. Defaults to 0.
        memory_mb: the reference is sampled in chunks of layers whose patches
            fit in this many MB. Defaults to 512.
        return_errors: also return `{layer_name: (before, after)}`, the
            relative squared error of the layer's outputs on the sampled rows
            before and after its refit. Defaults to False.
        verbose: 1 shows a progress bar over the layers. Defaults to 0.
        layers: names of the layers to refit (those of them that read pruned
            channels); None refits every such layer. `kprune.prune_layerwise`
            refits only the readers of the group it has just pruned.
            Defaults to None.

    Returns:
        A new model (the inputs are not modified), and the errors if asked.
    """
    base = strip_pruning(pruned) if collect_wrappers(pruned) else pruned
    reference = strip_pruning(reference) if collect_wrappers(reference) else reference
    model = clone_with(base, lambda old: (copy_layer(old),) * 2, lambda old: old.get_weights())
    if layers is not None:
        layers = [layers] if isinstance(layers, str) else list(layers)
        known = {node.operation.name for node in functional.nodes(model)}
        unknown = [name for name in layers if name not in known]
        if unknown:
            raise ValueError(
                f"Argument `layers` names layers that model '{model.name}' does not have: "
                f"{unknown}. Received: layers={layers}"
            )
    pairs = _targets(model, reference, layers)
    errors = {}
    if not pairs:
        return (model, errors) if return_errors else model
    kwargs = dict(positions_per_image=positions_per_image, max_images=max_images, seed=seed)
    targets, positions = {}, {}
    for chunk in sampling.chunks([ref for _, ref in pairs], max_images * positions_per_image, memory_mb * 2**20):
        patches, where = sampling.sample_patches(reference, chunk, data, **kwargs)
        positions.update(where)
        targets.update({name: _outputs(p, reference.get_layer(name)) for name, p in patches.items()})
        del patches
    progress = keras.utils.Progbar(len(pairs), unit_name="layer") if verbose else None
    for k, (layer, ref) in enumerate(pairs):
        rows, _ = sampling.sample_patches(
            model, [layer], data, positions={layer.name: positions[ref.name]}, **kwargs
        )
        x = rows[layer.name]
        target = targets.pop(ref.name)
        before = _relative_error(_outputs(x, layer), target)
        kernel, bias = refit_layer(x, target, sampling.kernel_matrix(layer), _bias(layer) is not None, ridge)
        layer.kernel.assign(kernel.reshape(tuple(layer.kernel.shape)).astype(layer.kernel.dtype))
        if bias is not None:
            layer.bias.assign(bias.astype(layer.bias.dtype))
        errors[layer.name] = (before, _relative_error(_outputs(x, layer), target))
        if progress is not None:
            progress.update(k + 1)
    return (model, errors) if return_errors else model


def prune_and_reconstruct(model, sparsity, data, importance="thinet", loss=None, round_to=1,
                          remove=True, **kwargs):
    """One-shot channel pruning with least-squares reconstruction, the
    papers' pipeline in one call: `plan_channels` (with `importance` measured
    on `data`), `mask_channels`, `reconstruct` against `model`, then
    `remove_channels`.

    Args:
        model: the trained model.
        sparsity: fraction of channels pruned per group.
        data: inputs (or `(inputs, targets)`, needed by `"taylor"`/`"hessian"`).
        importance: any `plan_channels` criterion. Defaults to `"thinet"`.
        loss: for `"taylor"`/`"hessian"`.
        round_to: see `plan_channels`. Defaults to 1.
        remove: return the smaller model (True, default) or the masked one.
        **kwargs: passed to `reconstruct` (`max_images`, `ridge`, ...).

    Returns:
        `(pruned_model, plan)`.

    Example:

    >>> import keras, numpy as np, kprune
    >>> model = keras.Sequential([keras.Input((8, 8, 3)),
    ...     keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
    ...     keras.layers.Conv2D(4, 3, name="next"), keras.layers.GlobalAveragePooling2D()])
    >>> x = np.random.default_rng(0).random((32, 8, 8, 3), dtype=np.float32)
    >>> small, plan = kprune.prune_and_reconstruct(model, 0.5, x)
    >>> small.get_layer("conv").filters
    4
    """
    plan = plan_channels(model, sparsity, importance=importance, round_to=round_to, data=data, loss=loss)
    refit = reconstruct(masked_copy(model, plan), model, data, **kwargs)
    return (reduced_copy(refit, plan) if remove else refit), plan
