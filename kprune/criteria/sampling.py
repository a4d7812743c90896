"""Sampling a layer's input patches on data, for reconstruction-based pruning.

A convolution's (or Dense layer's) output at one position is a linear
function of one input *patch*: `y[f] = sum_{k, c} P[k, c] W[k, c, f] + b[f]`,
with `P` of shape `(K, C)` (K = kernel positions, C = input channels) and the
kernel viewed as `(K, C, F)` (`kernel_matrix`). ThiNet, LASSO channel
selection and least-squares reconstruction all work on such patches, taken
at a few random output positions of a few images:

* `conv_patches(x, layer, positions)` cuts the patches of `layer` (Conv1D/2D/3D
  with `groups=1`, or Dense) out of its input `x` at output `positions`,
  padding like the layer does ("same", "valid", "causal"), with strides and
  dilation.
* `sample_patches(model, layers, data, ...)` runs the model on batches of
  `data` (only up to the sampled layers' inputs) and keeps `positions_per_image`
  random output positions per image and layer.

Memory and time are bounded: at most `max_images` images are run, in batches
of `batch_size`, and each layer keeps `max_images * positions_per_image` rows
of `K * C` floats (default 512 x 8 rows: for ResNet50's widest 3x3 layer,
4096 x 4608 x 4 bytes = 75 MB; a forward pass over 512 images of
224x224 on 2 cores takes about a minute). Activations of one batch are
held at a time.

Example:

>>> import keras, numpy as np
>>> from kprune.criteria import sampling
>>> conv = keras.layers.Conv2D(4, 3, padding="same")
>>> x = np.arange(2 * 5 * 5 * 2, dtype="float32").reshape(2, 5, 5, 2)
>>> y = keras.ops.convert_to_numpy(conv(x))
>>> P = sampling.conv_patches(x, conv, np.array([[1, 0, 4]]))  # image 1, row 0, column 4
>>> W = sampling.kernel_matrix(conv)
>>> bool(np.allclose(np.einsum("nkc,kcf->nf", P, W), y[1, 0, 4], atol=1e-4))
True
"""

import keras
import numpy as np

from kprune._internal import functional
from kprune.criteria.importance import batches

_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)


def supports(layer):
    """Whether `layer` is linear in patches the way `conv_patches` cuts them:
    a channels-last Conv1D/2D/3D with `groups=1`, or a Dense layer."""
    if isinstance(layer, keras.layers.Dense):
        return not getattr(layer, "lora_enabled", False) and not getattr(layer, "quantization_mode", None)
    if isinstance(layer, _CONV) and not isinstance(
        layer, _TRANSPOSED + (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
    ):
        if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
            return False
        return layer.groups == 1 and layer.data_format == "channels_last"
    return False


def _check(layer):
    if not supports(layer):
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) is not a Dense or a channels-last "
            "Conv1D/2D/3D with groups=1, so its outputs are not sampled as patches."
        )


def kernel_matrix(layer, kernel=None):
    """The layer's kernel (or `kernel`, of the same layout) as `(K, C, F)`."""
    _check(layer)
    value = keras.ops.convert_to_numpy(layer.kernel if kernel is None else kernel)
    return value.reshape(-1, value.shape[-2], value.shape[-1])


def _pads(layer, spatial):
    """`(before, after)` padding per spatial axis, as the layer pads."""
    pads = []
    for a, size in enumerate(spatial):
        k, s, d = layer.kernel_size[a], layer.strides[a], layer.dilation_rate[a]
        span = (k - 1) * d + 1
        if layer.padding == "same":
            out = -(-size // s)
            total = max((out - 1) * s + span - size, 0)
            pads.append((total // 2, total - total // 2))
        elif layer.padding == "causal":
            pads.append((span - 1, 0))
        else:
            pads.append((0, 0))
    return pads


def output_spatial(layer, spatial):
    """The output's spatial shape of `layer` on inputs of spatial shape `spatial`."""
    if isinstance(layer, keras.layers.Dense):
        return tuple(spatial)
    out = []
    for a, ((before, after), size) in enumerate(zip(_pads(layer, spatial), spatial)):
        span = (layer.kernel_size[a] - 1) * layer.dilation_rate[a] + 1
        out.append((size + before + after - span) // layer.strides[a] + 1)
    return tuple(out)


def conv_patches(x, layer, positions):
    """Input patches of `layer` at output `positions`.

    Args:
        x: the layer's input, `(B, *spatial, C)`.
        layer: a layer that `supports` accepts (built).
        positions: `(n, 1 + len(spatial))` ints: image index, then the output
            position along each spatial axis.

    Returns:
        `(n, K, C)` float32 patches (K = 1 for Dense), so that the layer's
        output there is `einsum("nkc,kcf->nf", patches, kernel_matrix(layer)) + bias`.
    """
    _check(layer)
    x = np.asarray(x)
    positions = np.asarray(positions, dtype=np.int64)
    if isinstance(layer, keras.layers.Dense):
        return x[tuple(positions.T)][:, None, :].astype(np.float32)
    nd = x.ndim - 2
    pads = _pads(layer, x.shape[1:-1])
    xp = np.pad(x, [(0, 0)] + pads + [(0, 0)])
    offsets = np.meshgrid(
        *[np.arange(layer.kernel_size[a]) * layer.dilation_rate[a] for a in range(nd)], indexing="ij"
    )
    shape = (-1,) + (1,) * nd
    index = [positions[:, 0].reshape(shape)]
    for a in range(nd):
        index.append(positions[:, 1 + a].reshape(shape) * layer.strides[a] + offsets[a][None])
    patches = xp[tuple(index)]  # (n, *kernel_size, C)
    return patches.reshape(len(positions), -1, x.shape[-1]).astype(np.float32)


def layer_input(model, layer):
    """The symbolic input tensor of `layer`'s (only) call in the top level of `model`."""
    found = [n for n in functional.nodes(model) if n.operation is layer]
    if len(found) != 1:
        raise ValueError(
            f"Layer '{layer.name}' must be called exactly once in the top level of model "
            f"'{model.name}' to be sampled; it is called {len(found)} times there."
        )
    return found[0].input_tensors[0]


def random_positions(rng, batch, spatial, per_image):
    """`per_image` random output positions (with replacement) for each of `batch` images."""
    images = np.repeat(np.arange(batch), per_image if spatial else 1)
    columns = [images] + [rng.integers(0, s, size=len(images)) for s in spatial]
    return np.stack(columns, axis=1)


def chunks(layers, rows, budget_bytes):
    """Split `layers` into lists whose patches (`rows` float32 rows each) fit in `budget_bytes`."""
    chunk, size = [], 0
    for layer in layers:
        kernel = layer.kernel.shape
        nbytes = rows * int(np.prod(kernel[:-1])) * 4
        if chunk and size + nbytes > budget_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(layer)
        size += nbytes
    if chunk:
        yield chunk


def sample_patches(model, layers, data, positions_per_image=8, max_images=512, batch_size=64, seed=0,
                   positions=None):
    """Input patches of `layers` of `model` at random output positions.

    Args:
        model: a Sequential or Functional model.
        layers: layers of `model` (each called once, `supports` them).
        data: inputs (or `(inputs, targets)`): an array, a tuple or a
            `tf.data.Dataset` of batches.
        positions_per_image: output positions kept per image and layer
            (Dense on 2-D inputs: one row per image). Defaults to 8.
        max_images: images run at most. Defaults to 512.
        batch_size: images per forward pass. Defaults to 64.
        seed: seed of the positions. Defaults to 0.
        positions: `{layer.name: [positions of batch 0, of batch 1, ...]}` to
            reuse (the second value returned by an earlier call), so two models
            are cut at the same places.

    Returns:
        `(patches, positions)`: `{layer.name: (n, K, C) array}` and the positions used.
    """
    if not layers:
        return {}, {}
    for layer in layers:
        _check(layer)
    inputs = model.inputs if len(model.inputs) > 1 else model.inputs[0]
    probe = keras.Model(inputs, [layer_input(model, layer) for layer in layers])
    rng = np.random.default_rng(seed)
    reuse = positions is not None
    positions = {layer.name: [] for layer in layers} if positions is None else positions
    rows = {layer.name: [] for layer in layers}
    seen, step = 0, 0
    for x, _ in batches(data, with_targets=False, batch_size=batch_size):
        first = x[0] if isinstance(x, (list, tuple)) else x
        take = min(int(first.shape[0]), max_images - seen)
        if take <= 0:
            break
        if take < first.shape[0]:
            x = [a[:take] for a in x] if isinstance(x, (list, tuple)) else x[:take]
        outs = probe(x, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for layer, out in zip(layers, outs):
            a = keras.ops.convert_to_numpy(out)
            if reuse:
                where = positions[layer.name][step]
            else:
                where = random_positions(rng, take, output_spatial(layer, a.shape[1:-1]), positions_per_image)
                positions[layer.name].append(where)
            rows[layer.name].append(conv_patches(a, layer, where))
        seen += take
        step += 1
    if not seen:
        raise ValueError("Argument `data` holds no examples.")
    return {name: np.concatenate(r) for name, r in rows.items()}, positions
