"""Calibration data as batches of a model's inputs.

`input_batches(model, data, batch_size)` accepts what users hold:

* an array (NumPy, or a backend tensor) for a model of one input -- or, for a
  KerasHub backbone or task whose inputs are `token_ids` and
  `padding_mask`, an integer array of token ids (the padding mask is then all
  ones: calibration windows are full, as in the references);
* a dict of arrays keyed like the model's inputs (a KerasHub preprocessor's
  output: `{"token_ids": ..., "padding_mask": ...}`);
* a list of arrays, one per input, in the order of `model.inputs`;
* a `tf.data.Dataset`, a generator or any iterable of batches, each in one of
  the forms above or `(x, y)` / `(x, y, sample_weight)` (x is used).

Arrays are cut into batches of `batch_size` examples; an iterable's batches
are used as they come. Each batch is returned as a flat list of tensors in
the order of the model's (flattened) inputs, converted to the inputs' dtypes.

Example:

>>> import keras, numpy as np
>>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
>>> batches = input_batches(model, np.zeros((10, 3)), batch_size=4)
>>> [tuple(b[0].shape) for b in batches]
[(4, 3), (4, 3), (2, 3)]
"""

import keras
import numpy as np
from keras import tree

from kprune._internal import functional

TOKEN_INPUTS = {"token_ids", "padding_mask"}


def _structure(model):
    function = functional.function_of(model, purpose="One-shot pruning")
    return function, model.input if hasattr(model, "input") else function.inputs


def _is_array(x):
    """An array or a tensor of any framework (a tf.data batch on JAX is a TensorFlow tensor)."""
    return isinstance(x, np.ndarray) or keras.ops.is_tensor(x) or (hasattr(x, "__array__") and hasattr(x, "shape"))


def _flat_inputs(function, structure, x):
    """`x` as a flat list in the order of `function.inputs`, or None if it does not fit."""
    names = [t.name for t in function.inputs]
    if isinstance(x, dict):
        if isinstance(structure, dict):
            if not set(structure) <= set(x):
                return None
            return tree.flatten({k: x[k] for k in structure})
        if set(names) <= set(x):
            return [x[n] for n in names]
        return None
    if _is_array(x):
        if len(names) == 1:
            return [x]
        if isinstance(structure, dict) and set(structure) == TOKEN_INPUTS:
            tokens = np.asarray(keras.ops.convert_to_numpy(x))
            return tree.flatten({"token_ids": tokens, "padding_mask": np.ones_like(tokens)})
        return None
    if isinstance(x, list) and len(x) == len(names) and all(_is_array(v) for v in x):
        return list(x)
    return None


def _expected(function, structure):
    if isinstance(structure, dict):
        return f"a dict with keys {sorted(structure)}"
    names = [t.name for t in function.inputs]
    return "an array" if len(names) == 1 else f"a list of {len(names)} arrays ({names}) or a dict by input name"


def _convert(function, flat):
    return [keras.ops.convert_to_tensor(v, dtype=t.dtype) for v, t in zip(flat, function.inputs)]


def input_batches(model, data, batch_size=8):
    """Batches of `data` for `model` (see the module docstring).

    Raises:
        ValueError: `data` fits none of the forms, or holds no example.
    """
    if data is None:
        raise ValueError(
            "Argument `data` is required: calibration inputs for the model (an array, a dict of "
            "arrays such as a KerasHub preprocessor's output, or a tf.data.Dataset). Received: data=None")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Argument `batch_size` must be an integer >= 1. Received: batch_size={batch_size!r}")
    function, structure = _structure(model)
    flat = _flat_inputs(function, structure, data)
    if flat is not None:
        n = int(flat[0].shape[0])
        batches = [_convert(function, [v[i:i + batch_size] for v in flat]) for i in range(0, n, batch_size)]
    else:
        if _is_array(data) or isinstance(data, (dict, list)):
            raise ValueError(
                f"Argument `data` does not fit the inputs of model '{model.name}': expected "
                f"{_expected(function, structure)}. Received: data of type {type(data).__name__}")
        batches = []
        for element in data:
            flat = _flat_inputs(function, structure, element)
            if flat is None and isinstance(element, tuple) and 2 <= len(element) <= 3:
                flat = _flat_inputs(function, structure, element[0])
            if flat is None:
                raise ValueError(
                    f"Argument `data` yields batches that do not fit the inputs of model '{model.name}': "
                    f"expected {_expected(function, structure)} (or (x, y)). Received: a batch of type "
                    f"{type(element).__name__}")
            batches.append(_convert(function, flat))
    if not batches:
        raise ValueError(f"Argument `data` holds no example. Received: data of type {type(data).__name__}")
    return batches
