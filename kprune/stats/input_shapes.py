"""A model seen at fixed input shapes: what it computes at a given sequence length.

A KerasHub model's inputs are `(batch, None)` token ids: its MACs depend on
the sequence length, which the graph leaves open (counted as 1). TFLite
files are exported at one fixed length. `at_input_shapes(model, shapes)`
wraps the model in a Functional model whose inputs have the given shapes
(one per input name, a dict input passed on as a dict), so that counting
(`kprune.count_macs(model, input_shapes=...)`) and export see the same
shapes. The wrapper shares the model's layers and weights.

Example:

>>> import keras
>>> x = keras.Input((None, 8), name="x")
>>> model = keras.Model(x, keras.layers.Dense(4)(x))
>>> view = at_input_shapes(model, {"x": (10, 8)})
>>> tuple(view.inputs[0].shape)
(None, 10, 8)
"""

import keras

from kprune._internal import functional


def input_structure(model):
    """`(names, dtypes, shapes, as_dict)` of a Functional or Sequential model's
    inputs (shapes without the batch axis; `as_dict`: the model takes a dict)."""
    if not functional.is_graph(model):
        raise ValueError(
            f"Fixed input shapes need a Sequential or Functional model (KerasHub's are). Received: "
            f"model '{model.name}' of type {type(model).__name__}."
        )
    structure = functional.input_structure(model)
    as_dict = isinstance(structure, dict)
    tensors = list(structure.values()) if as_dict else list(functional.function_of(model).inputs)
    names = list(structure) if as_dict else [t.name for t in tensors]
    return names, [str(t.dtype) for t in tensors], [tuple(t.shape)[1:] for t in tensors], as_dict


def normalize_shapes(model, input_shapes, argname="input_shapes"):
    """`{name: shape without the batch axis}` from a dict, a list (one shape
    per input, in order) or one shape (a single input), checked against the
    model's known axes."""
    names, _, shapes, _ = input_structure(model)
    if isinstance(input_shapes, dict):
        if set(input_shapes) != set(names):
            raise ValueError(
                f"Argument `{argname}` must have one shape per input of model '{model.name}' {names}. "
                f"Received keys: {sorted(input_shapes)}"
            )
        given = [input_shapes[n] for n in names]
    elif isinstance(input_shapes, (list, tuple)) and input_shapes and isinstance(input_shapes[0], (list, tuple)):
        given = list(input_shapes)
    else:
        given = [input_shapes]
    if len(given) != len(names):
        raise ValueError(
            f"Argument `{argname}` must have one shape per input of model '{model.name}' {names}. "
            f"Received: {argname}={input_shapes!r}"
        )
    result = {}
    for name, known, shape in zip(names, shapes, given):
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(known) or any(k is not None and k != d for k, d in zip(known, shape)):
            raise ValueError(
                f"Argument `{argname}`: input '{name}' of model '{model.name}' has shape {known} "
                f"(without the batch axis). Received: {shape}"
            )
        result[name] = shape
    return result


def at_input_shapes(model, input_shapes):
    """A Functional model that calls `model` on inputs of `input_shapes` (see
    the module docstring)."""
    shapes = normalize_shapes(model, input_shapes)
    names, dtypes, _, as_dict = input_structure(model)
    inputs = [keras.Input(shapes[n], dtype=d, name=n) for n, d in zip(names, dtypes)]
    args = dict(zip(names, inputs)) if as_dict else (inputs if len(inputs) > 1 else inputs[0])
    return keras.Model(inputs, model(args), name=model.name)
