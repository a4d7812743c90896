"""Layers as matrix products: `y = x W`, the view one-shot pruning works on.

Wanda, SparseGPT and magnitude pruning of language models (`kprune.llm`)
treat a layer as one matrix `W` of shape `(d_in, d_out)` applied to rows `x`
of `d_in` features. A `LinearView` says how a layer's kernel and its call
input map to that form:

* `Dense`: the kernel is the matrix; rows are the input with its leading
  axes flattened;
* `EinsumDense`: the kernel axes contracted with the input become the rows
  of the matrix (in the kernel's order), the others its columns -- Llama's
  query `bqm,muh->bquh` is `(m, u*h)`, its output `bquh,uhm->bqm` is
  `(u*h, m)`, Gemma's query `btd,ndh->btnh` is `(d, n*h)`; rows of `x` are
  its contracted axes, every other axis flattened into the row count;
* `Conv1D`/`Conv2D` (channels last, one group): the kernel
  `(*window, c_in, c_out)` is `(window * c_in, c_out)` and rows are the
  input's patches (im2col), so that `conv(x) = patches(x) @ W`.

An equation that is not a plain contraction (a kernel axis that is also an
input and output axis, an input axis summed away) has no view (`None`), and
neither has a LoRA-enabled or quantized layer. The views are described with
each layer type's `LayerRule` (`linear=`) in `kprune.registry.keras_layers`.

All three functions are `keras.ops` code: they run on the device that holds
the weight (a kernel sharded by `keras.distribution` stays sharded).

Example:

>>> import keras, numpy as np
>>> from kprune.registry import keras_layers
>>> layer = keras.layers.EinsumDense("bqm,muh->bquh", output_shape=(None, 2, 3))
>>> layer.build((None, 5, 4))
>>> view = keras_layers.linear_view(layer)
>>> view.shape, tuple(view.rows(np.ones((2, 5, 4), "float32")).shape)
((4, 6), (10, 4))
>>> x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
>>> y = keras.ops.matmul(view.rows(x), view.matrix(layer.kernel))
>>> bool(np.allclose(keras.ops.reshape(y, (2, 5, 2, 3)), layer(x), atol=1e-6))
True
"""

import math
from typing import Callable, NamedTuple

import keras
from keras import ops

from kprune.registry.einsum import einsum_contraction


class LinearView(NamedTuple):
    """A layer seen as `y = rows(x) @ matrix(kernel)`.

    Attributes:
        variable: the kernel variable.
        shape: `(d_in, d_out)` of the matrix.
        matrix: `kernel value -> (d_in, d_out)` tensor.
        kernel: `(d_in, d_out) tensor -> kernel-shaped tensor` (the inverse).
        rows: `layer input -> (n, d_in)` tensor (the rows the matrix multiplies).
    """

    variable: keras.Variable
    shape: tuple
    matrix: Callable
    kernel: Callable
    rows: Callable


def _plain(layer):
    return not getattr(layer, "lora_enabled", False) and not getattr(layer, "quantization_mode", None)


def dense_view(layer, kernel):
    """The view of a `Dense` layer's kernel `(d_in, d_out)`."""
    if not _plain(layer) or len(kernel.shape) != 2:
        return None
    d_in, d_out = (int(d) for d in kernel.shape)
    return LinearView(kernel, (d_in, d_out), lambda w: w, lambda m: m,
                      lambda x: ops.reshape(x, (-1, d_in)))


def einsum_view(layer, kernel):
    """The view of an `EinsumDense` layer's kernel, or None (see the module docstring)."""
    if not _plain(layer):
        return None
    parsed = einsum_contraction(layer.equation)
    if parsed is None:
        return None
    input_spec, kernel_spec, contracted, free = parsed
    shape = tuple(int(d) for d in kernel.shape)
    order = [kernel_spec.index(c) for c in contracted + free]
    inverse = [order.index(i) for i in range(len(order))]
    d_in = math.prod(shape[kernel_spec.index(c)] for c in contracted)
    d_out = math.prod(shape[kernel_spec.index(c)] for c in free)
    permuted = tuple(shape[i] for i in order)

    def matrix(w):
        return ops.reshape(ops.transpose(w, order), (d_in, d_out))

    def back(m):
        return ops.transpose(ops.reshape(m, permuted), inverse)

    def rows(x):
        rank = len(x.shape)
        letters = input_spec.split("...")
        # Axis of each input letter: letters after an ellipsis count from the end.
        axes = {c: i for i, c in enumerate(letters[0])}
        if len(letters) == 2:
            axes.update({c: rank - len(letters[1]) + i for i, c in enumerate(letters[1])})
        inner = [axes[c] for c in contracted]
        outer = [i for i in range(rank) if i not in inner]
        return ops.reshape(ops.transpose(x, outer + inner), (-1, d_in))

    return LinearView(kernel, (d_in, d_out), matrix, back, rows)


def column_bias(layer, view):
    """The bias of a layer seen as `view` (its `LinearView`) when it holds one
    value per column of the matrix, in the matrix's column order, else None:
    a `Dense` or convolution bias, an `EinsumDense` bias over exactly its free
    kernel axes (an attention output projection's `"m"`). What a constant
    added to every row of `rows(x) @ matrix` can be folded into.

    >>> layer = keras.layers.EinsumDense("bquh,uhm->bqm", output_shape=(None, 4), bias_axes="m")
    >>> layer.build((None, 5, 2, 3))
    >>> from kprune.registry import keras_layers
    >>> column_bias(layer, keras_layers.linear_view(layer)) is layer.bias
    True
    """
    bias = getattr(layer, "bias", None)
    if view is None or not isinstance(bias, keras.Variable):
        return None
    equation = getattr(layer, "equation", None)
    if isinstance(equation, str):
        parsed = einsum_contraction(equation)
        if parsed is None or (getattr(layer, "bias_axes", None) or "") != "".join(parsed[3]):
            return None
    return bias if math.prod(int(d) for d in bias.shape) == view.shape[1] else None


def _same_pads(size, window, stride, dilation):
    span = (window - 1) * dilation + 1
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + span - size)
    return total // 2, total - total // 2


def conv_view(layer, kernel):
    """The view of a channels-last `Conv1D`/`Conv2D` with one group, or None."""
    rank = len(kernel.shape) - 2
    if (not _plain(layer) or rank not in (1, 2) or getattr(layer, "groups", 1) != 1
            or getattr(layer, "data_format", "channels_last") not in (None, "channels_last")
            or getattr(layer, "padding", "valid") not in ("valid", "same")):
        return None
    shape = tuple(int(d) for d in kernel.shape)
    d_in, d_out = math.prod(shape[:-1]), shape[-1]
    window, strides, dilations = shape[:rank], tuple(layer.strides), tuple(layer.dilation_rate)

    def rows(x):
        if layer.padding == "same":
            pads = [(0, 0)] + [_same_pads(int(x.shape[1 + a]), window[a], strides[a], dilations[a])
                               for a in range(rank)] + [(0, 0)]
            x = ops.pad(x, pads)
        sizes = [int(x.shape[1 + a]) for a in range(rank)]
        outs = [(sizes[a] - (window[a] - 1) * dilations[a] - 1) // strides[a] + 1 for a in range(rank)]
        patches = []
        for offset in _offsets(window):
            index = [slice(None)]
            for a in range(rank):
                start = offset[a] * dilations[a]
                index.append(slice(start, start + (outs[a] - 1) * strides[a] + 1, strides[a]))
            patches.append(x[tuple(index)])
        # (batch, *outs, window..., c_in) in the kernel's row-major order.
        stacked = ops.stack(patches, axis=-2)
        return ops.reshape(stacked, (-1, d_in))

    return LinearView(kernel, (d_in, d_out), lambda w: ops.reshape(w, (d_in, d_out)),
                      lambda m: ops.reshape(m, shape), rows)


def _offsets(window):
    """Every kernel position, row-major (the order of the kernel's window axes)."""
    if len(window) == 1:
        return [(i,) for i in range(window[0])]
    return [(i, j) for i in range(window[0]) for j in range(window[1])]
