"""All knowledge of Keras layer types lives here.

For each supported layer type a handler says which of its weights are
prunable and which axis of each weight indexes the layer's input channels
(the axis M:N groups run along). Everything else in kprune asks this module;
nothing else branches on layer type.

Layers fall in three classes (`classify`):

* ``"prunable"``: a registered type, a subclass of one, or a layer that
  implements the `PrunableLayer` protocol;
* ``"pass_through"``: no trainable weights (activations, pooling, Flatten,
  merges, ...) or weights that are deliberately left dense (normalization
  layers, PReLU);
* ``"unsupported"``: trainable weights kprune does not know how to prune.
"""

import re
from typing import NamedTuple

import keras
from keras import layers as L


class PrunableWeight(NamedTuple):
    """A prunable weight and the axis of it that indexes input channels."""

    variable: keras.Variable
    input_axis: int


class PrunableLayer:
    """Protocol for custom layers that kprune can prune.

    Implement `get_prunable_weights()` returning the list of weight variables
    to prune (the layer must be built). M:N sparsity groups run along axis -2
    of each weight unless the layer also defines
    `get_prunable_weight_input_axes()` returning one axis per weight.

    Example:

    >>> import keras, kprune
    >>> class MyDense(keras.layers.Dense, kprune.PrunableLayer):
    ...     def get_prunable_weights(self):
    ...         return [self.kernel]
    >>> layer = kprune.prune_low_magnitude(MyDense(4))
    >>> type(layer).__name__
    'PruneLowMagnitude'
    """

    def get_prunable_weights(self):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `get_prunable_weights()`."
        )


def _variable(layer, *names):
    """The first attribute in `names` that holds a Keras variable."""
    for name in names:
        value = getattr(layer, name, None)
        if isinstance(value, keras.Variable):
            return value
    raise ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}) has none of the weights "
        f"{names} kprune prunes; LoRA-enabled or quantized layers are not supported. "
        "Leave the layer unwrapped."
    )


def _einsum_input_axis(layer):
    """Axis of an EinsumDense kernel contracted with the input (the last one)."""
    match = re.match(r"([\w.]+),([\w.]+)->", layer.equation.replace(" ", ""))
    if match:
        inputs, kernel = match.groups()
        contracted = [i for i, ch in enumerate(kernel) if ch in inputs]
        if contracted:
            return contracted[-1] - len(kernel)
    return -2


def _dense(layer):
    return [PrunableWeight(_variable(layer, "_kernel", "kernel"), -2)]


def _einsum_dense(layer):
    return [PrunableWeight(_variable(layer, "_kernel", "kernel"), _einsum_input_axis(layer))]


def _conv(layer):
    return [PrunableWeight(_variable(layer, "_kernel", "kernel"), -2)]


def _conv_transpose(layer):
    # Transposed kernels are (..., out_channels, in_channels).
    return [PrunableWeight(_variable(layer, "_kernel", "kernel"), -1)]


def _depthwise(layer):
    return [PrunableWeight(_variable(layer, "kernel"), -2)]


def _separable(layer):
    return [
        PrunableWeight(_variable(layer, "depthwise_kernel"), -2),
        PrunableWeight(_variable(layer, "pointwise_kernel"), -2),
    ]


def _embedding(layer):
    return [PrunableWeight(_variable(layer, "_embeddings", "embeddings"), -2)]


def _rnn(layer):
    cell = layer.cell
    return [
        PrunableWeight(_variable(cell, "kernel"), -2),
        PrunableWeight(_variable(cell, "recurrent_kernel"), -2),
    ]


def _bidirectional(layer):
    return prunable_weights(layer.forward_layer) + prunable_weights(layer.backward_layer)


def _time_distributed(layer):
    return prunable_weights(layer.layer)


def _multi_head_attention(layer):
    parts = (layer._query_dense, layer._key_dense, layer._value_dense, layer._output_dense)
    return [w for part in parts for w in _einsum_dense(part)]


# Order matters only for subclasses: the first matching base wins.
_HANDLERS = (
    (L.Dense, _dense),
    (L.EinsumDense, _einsum_dense),
    (L.SeparableConv1D, _separable),
    (L.SeparableConv2D, _separable),
    (L.DepthwiseConv1D, _depthwise),
    (L.DepthwiseConv2D, _depthwise),
    (L.Conv1DTranspose, _conv_transpose),
    (L.Conv2DTranspose, _conv_transpose),
    (L.Conv3DTranspose, _conv_transpose),
    (L.Conv1D, _conv),
    (L.Conv2D, _conv),
    (L.Conv3D, _conv),
    (L.Embedding, _embedding),
    (L.SimpleRNN, _rnn),
    (L.GRU, _rnn),
    (L.LSTM, _rnn),
    (L.Bidirectional, _bidirectional),
    (L.TimeDistributed, _time_distributed),
    (L.MultiHeadAttention, _multi_head_attention),
)

# Layers with trainable weights that are left dense on purpose.
_DENSE_BY_DESIGN = tuple(
    cls
    for cls in (
        L.BatchNormalization,
        L.LayerNormalization,
        L.GroupNormalization,
        getattr(L, "RMSNormalization", None),
        L.UnitNormalization,
        L.PReLU,
        L.Normalization,
    )
    if cls is not None
)


# Layers that override `build` but never create trainable weights, so they
# can be classified before they are built.
_WEIGHTLESS = tuple(
    cls
    for cls in (
        L.Add,
        L.Subtract,
        L.Multiply,
        L.Average,
        L.Maximum,
        L.Minimum,
        L.Concatenate,
        L.Dot,
        getattr(L, "AugMix", None),
        getattr(L, "RandAugment", None),
        getattr(L, "RandomColorJitter", None),
        getattr(L, "TextVectorization", None),
    )
    if cls is not None
)


def _handler(layer):
    for cls, fn in _HANDLERS:
        if isinstance(layer, cls):
            return fn
    return None


def is_prunable_layer(layer):
    """Whether `layer` implements the `PrunableLayer` protocol."""
    return callable(getattr(layer, "get_prunable_weights", None))


def classify(layer):
    """Return ``"prunable"``, ``"pass_through"`` or ``"unsupported"`` for a layer."""
    if is_prunable_layer(layer):
        return "prunable"
    if isinstance(layer, L.TimeDistributed):
        return classify(layer.layer)
    if isinstance(layer, L.Bidirectional):
        return classify(layer.forward_layer)
    if _handler(layer) is not None:
        return "prunable"
    if isinstance(layer, _DENSE_BY_DESIGN + _WEIGHTLESS) or isinstance(layer, L.InputLayer):
        return "pass_through"
    if layer.built:
        return "unsupported" if layer.trainable_weights else "pass_through"
    # An unbuilt layer that never overrides `build` creates no weights.
    return "pass_through" if type(layer).build is L.Layer.build else "unsupported"


def prunable_weights(layer):
    """The `PrunableWeight`s of a built layer (an empty list for pass-through layers)."""
    if is_prunable_layer(layer):
        variables = list(layer.get_prunable_weights())
        axes_fn = getattr(layer, "get_prunable_weight_input_axes", None)
        axes = list(axes_fn()) if callable(axes_fn) else [-2] * len(variables)
        if len(axes) != len(variables):
            raise ValueError(
                f"Layer '{layer.name}': `get_prunable_weight_input_axes()` returned "
                f"{len(axes)} axes for {len(variables)} prunable weights."
            )
        for v in variables:
            if not isinstance(v, keras.Variable):
                raise TypeError(
                    f"Layer '{layer.name}': `get_prunable_weights()` must return Keras "
                    f"variables. Received: {type(v).__name__}"
                )
        return [PrunableWeight(v, a) for v, a in zip(variables, axes)]
    fn = _handler(layer)
    return fn(layer) if fn is not None else []


def describe(layer):
    """`'name' (ClassName)`, for messages."""
    return f"'{layer.name}' ({type(layer).__name__})"
