"""Check M:N sparsity of a Keras model or a .tflite file: `check_sparsity_m_by_n`.

tfmot's 2:4 guide checks its converted model with a script
(`sparsity/keras/tools/check_sparsity_m_by_n.py`); this is that check as a
function. Groups of `n` consecutive weights run along the input-channel axis
(the last axis of TFLite's CONV_2D and FULLY_CONNECTED weights, the axis
`kprune.registry.keras_layers` names for a Keras weight); a group at the end of the axis
may be shorter, and passes if it holds at most `n - m` non-zeros.
`(m, n)` is read as tfmot reads it: `m` zeros in every `n`.
"""

import keras
import numpy as np

from kprune._internal import functional
from kprune.litert.runtime import decoded_interpreter
from kprune.registry import keras_layers
from kprune.sparsity.pruning_wrapper import MaskedWrapper

# TFLite ops whose weights (input 1) are laid out `(out, ..., in)`.
_WEIGHT_OPS = ("CONV_2D", "FULLY_CONNECTED")
# Ops that decode a stored weight (sparse encoding, int8/float16 storage).
_DECODE_OPS = ("DENSIFY", "DEQUANTIZE")


def is_m_by_n(weights, m, n, axis=-1):
    """Whether every `n` consecutive entries of `weights` along `axis` hold at
    least `m` zeros (at most `n - m` non-zeros; a short last group counts its
    missing entries as zeros).

    Example:

    >>> import numpy as np
    >>> is_m_by_n(np.array([[1.0, 0.0, 2.0, 0.0], [0.0, 3.0, 4.0, 5.0]]), 2, 4)
    False
    """
    w = np.moveaxis(np.asarray(weights), axis, -1)
    size = w.shape[-1]
    pad = (-size) % n
    nonzero = np.pad(w != 0, [(0, 0)] * (w.ndim - 1) + [(0, pad)])
    return bool((nonzero.reshape(-1, n).sum(axis=1) <= n - m).all())


def _keras_weights(model):
    """`(name, value, input_axis)` of every prunable weight, masks applied."""
    layers = [model] if not isinstance(model, keras.Model) else functional.sublayers(model)
    inside_wrappers = set()
    for layer in layers:
        if id(layer) in inside_wrappers:
            continue
        if isinstance(layer, MaskedWrapper):
            inside_wrappers.update(id(l) for l in [layer.layer, *functional.sublayers(layer.layer)])
            masks = {id(v): m for v, m in layer.pruned_weights}
            source = layer.layer
        elif keras_layers.classify(layer) == "prunable" and layer.built:
            masks, source = {}, layer
        else:
            continue
        for w in keras_layers.prunable_weights(source):
            value = keras.ops.convert_to_numpy(w.variable.value)
            if id(w.variable) in masks:
                value = value * keras.ops.convert_to_numpy(masks[id(w.variable)])
            yield f"{source.name}/{w.variable.name}", value, w.input_axis


def _tflite_weights(path_or_bytes):
    """`(name, value, -1)` of the weights of CONV_2D and FULLY_CONNECTED ops
    (decoded: the file is run once, as `kprune.stats.tflite_ops` does)."""
    interp, ops = decoded_interpreter(path_or_bytes, "model_or_tflite")
    names = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    decoded_from = {int(op["outputs"][0]): int(op["inputs"][0]) for op in ops if op["op_name"] in _DECODE_OPS}
    for op in ops:
        if op["op_name"] in _WEIGHT_OPS and len(op["inputs"]) > 1:
            index = source = int(op["inputs"][1])
            while source in decoded_from:  # named after the stored (encoded) constant
                source = decoded_from[source]
            yield names[source], interp.get_tensor(index), -1


def check_sparsity_m_by_n(model_or_tflite, m, n):
    """Which weights of a model hold at least `m` zeros in every `n`.

    The check of tfmot's `check_sparsity_m_by_n.py` tool, for a Keras model
    (wrapped by `prune_low_magnitude` or stripped) or a .tflite file, with
    tfmot's reading of `(m, n)`: `m` zeros in every `n`, as
    `prune_low_magnitude(..., sparsity_m_by_n=(m, n))` prunes.

    Args:
        model_or_tflite: a Keras model or layer, a .tflite path, or TFLite
            flatbuffer bytes.
        m: zeros required per group, `1 <= m < n`.
        n: group size.

    Returns:
        `{weight name: bool}` for every prunable weight of a Keras model
        (`"<layer>/<weight>"`, the inner layer of a wrapper), or for the weights of every CONV_2D and
        FULLY_CONNECTED op of a .tflite file (the weight tensor's name).

    Example:

    >>> import keras, numpy as np, kprune
    >>> model = kprune.prune_low_magnitude(
    ...     keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="d")]),
    ...     sparsity_m_by_n=(2, 4))
    >>> kprune.update_masks(model)
    >>> kprune.check_sparsity_m_by_n(kprune.strip_pruning(model), 2, 4)
    {'d/kernel': True}
    """
    ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (m, n))
    if not ints or not 1 <= m < n:
        raise ValueError(
            f"Arguments `m` and `n` must be integers with 1 <= m < n. Received: m={m!r}, n={n!r}"
        )
    if isinstance(model_or_tflite, keras.layers.Layer):
        weights = _keras_weights(model_or_tflite)
    elif isinstance(model_or_tflite, (str, bytes)) or hasattr(model_or_tflite, "__fspath__"):
        source = model_or_tflite if isinstance(model_or_tflite, bytes) else str(model_or_tflite)
        weights = _tflite_weights(source)
    else:
        raise TypeError(
            "Argument `model_or_tflite` must be a Keras model or layer, a .tflite path or "
            f"TFLite bytes. Received: model_or_tflite={model_or_tflite!r} (of type "
            f"{type(model_or_tflite).__name__})"
        )
    return {name: is_m_by_n(value, m, n, axis) for name, value, axis in weights}
