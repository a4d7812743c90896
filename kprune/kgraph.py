"""The one place that reads Keras' internals: the functional graph, the
stateless scope and callback model that `kprune.backends` needs, and the mark
that keeps Keras from decorating kprune's errors raised inside a layer call.

kprune walks the graph of Sequential and Functional models (nodes in
dependency order, nested models, `keras.ops` operations between layers). The
attributes it needs (`Functional`, `_nodes_by_depth`, `Sequential._functional`,
`_flatten_layers`) are private to Keras, so they are read here only: a Keras
upgrade touches this file.

Example:

>>> import keras
>>> from kprune import kgraph
>>> x = keras.Input((4,))
>>> model = keras.Model(x, keras.layers.Dense(2, name="d")(x) * 2.0)
>>> [type(node.operation).__name__ for node in kgraph.nodes(model)]
['Dense', 'Multiply']
"""

import keras
from keras.src.backend.common.stateless_scope import get_stateless_scope
from keras.src.models.functional import Functional


def is_graph(model):
    """Whether `model` is a Sequential or Functional model (it has a graph)."""
    return isinstance(model, (Functional, keras.Sequential))


def is_nested_graph(op):
    """Whether a graph node's operation is itself a Sequential/Functional model."""
    return isinstance(op, keras.Model) and is_graph(op)


def is_layer(op):
    """Whether a graph node's operation is a Keras layer (not a `keras.ops`
    operation such as `Add` from `x + y`, or `GetItem` from `x[:, 0]`)."""
    return isinstance(op, keras.layers.Layer)


def function_of(model, purpose="Channel pruning"):
    """The Functional graph of a Sequential or Functional model.

    Raises:
        ValueError: an unbuilt Sequential model, or a subclassed model.
    """
    if isinstance(model, keras.Sequential):
        if model._functional is None:
            raise ValueError(
                f"Sequential model '{model.name}' is not built: give it an `Input` or "
                "call `model.build(input_shape)` first."
            )
        return model._functional
    if not is_graph(model):
        raise ValueError(
            f"{purpose} needs a Sequential or Functional model. Received: model "
            f"'{model.name}' of type {type(model).__name__} (subclassed models have no "
            "graph to analyse)."
        )
    return model


def nodes(model):
    """The call nodes of a graph model in dependency order (inputs first),
    input placeholders left out. Nested models are single nodes."""
    function = function_of(model)
    for depth in sorted(function._nodes_by_depth, reverse=True):
        for node in function._nodes_by_depth[depth]:
            if not node.is_input:
                yield node


def sublayers(layer, recursive=True):
    """The layers tracked inside `layer` (not `layer` itself)."""
    return list(layer._flatten_layers(include_self=False, recursive=recursive))


def rebuild(model, call):
    """A new Functional model that re-runs the graph of `model` on fresh `Input`s.

    `call(node, args, kwargs)` computes each node's outputs from its inputs in
    the new graph (`args`/`kwargs` are the node's call arguments with the new
    tensors filled in); returning `node.operation(*args, **kwargs)` reproduces
    the node. The layers are the same objects (shared weights).
    """
    function = function_of(model, purpose="Rebuilding a model")
    tensors = {}
    inputs = []
    for t in function.inputs:
        new = keras.Input(batch_shape=t.shape, dtype=t.dtype)
        tensors[id(t)] = new
        inputs.append(new)
    for node in nodes(function):
        args, kwargs = node.arguments.fill_in(tensors)
        outputs = call(node, args, kwargs)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for old, new in zip(node.outputs, outputs):
            tensors[id(old)] = new
    outputs = [tensors[id(t)] for t in function.outputs]
    return keras.Model(
        inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else outputs[0], name=model.name
    )


def scope_hides(variable):
    """Whether a `keras.StatelessScope` is active that does not map `variable`
    (its stored value is then not the one the scope's computation uses)."""
    scope = get_stateless_scope()
    return scope is not None and scope.get_current_value(variable) is None


def callback_model(callback):
    """A callback's model as set by `set_model`, without the JAX state sync
    that the `Callback.model` property runs."""
    return callback._model


def undecorated(error):
    """`error`, marked so that Keras passes it on from a layer's `call` as it is.

    Keras re-raises an exception from inside `Layer.__call__` as "Exception
    encountered when calling X.call()", with the message between ANSI bold
    codes and the call's arguments, and leaves alone an exception that
    already carries the attribute set here (it decorates the innermost
    failing call only). kprune's own errors name the layer and the fix, so
    they reach the user undecorated.

    Example:

    >>> class Fails(keras.layers.Layer):
    ...     def call(self, x):
    ...         raise undecorated(ValueError("Layer 'fails' says why."))
    >>> try:
    ...     Fails(name="fails")(keras.ops.ones((1, 2)))
    ... except ValueError as e:
    ...     print(e)
    Layer 'fails' says why.
    """
    error._keras_call_info_injected = True
    return error


def tuple_build_shape(model):
    """Give a subclassed model loaded from .keras the build input shape a call
    records (a tuple: its build config holds a JSON list, which TFLite's
    converter reads as a list of shapes)."""
    shapes = getattr(model, "_build_shapes_dict", None)
    shape = shapes.get("input_shape") if isinstance(shapes, dict) else None
    if isinstance(shape, list) and all(d is None or isinstance(d, int) for d in shape):
        shapes["input_shape"] = tuple(shape)
