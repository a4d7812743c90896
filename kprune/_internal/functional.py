"""The one place that reads Keras' internals: the functional graph, the
stateless scope and callback model that `kprune.utils.backends` needs, and the mark
that keeps Keras from decorating kprune's errors raised inside a layer call
(the tracing of a layer's call into the calls it makes is `tracing`'s).

kprune walks the graph of Sequential and Functional models (nodes in
dependency order, nested models, `keras.ops` operations between layers), and
`kprune._internal.tracing` traces the call of a layer that holds layers
(KerasHub's transformer blocks, a user's residual block) into the calls it makes. The
attributes it needs (`Functional`, `_nodes_by_depth`, `Sequential._functional`,
`_flatten_layers`, `_keras_history`, `_inbound_nodes`, Keras' name counters)
are private to Keras, so they are read here only: a Keras upgrade touches this
file.

Example:

>>> import keras
>>> from kprune._internal import functional
>>> x = keras.Input((4,))
>>> model = keras.Model(x, keras.layers.Dense(2, name="d")(x) * 2.0)
>>> [type(node.operation).__name__ for node in functional.nodes(model)]
['Dense', 'Multiply']
"""

import contextlib
import inspect

import keras
from keras import tree
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


def input_structure(model):
    """The structure of a Sequential or Functional model's inputs (a tensor, a
    list, or a dict by name), as its graph was built."""
    return function_of(model, purpose="Reading a model's inputs").input


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


def tree_flatten(structure):
    """The leaves of a nested structure (lists, tuples, dicts), as Keras orders them."""
    return tree.flatten(structure)


def call_arguments(node):
    """`{parameter name: value}` of a node's call, positional arguments named by
    the signature of its operation's `call` (`{}` where it cannot be read)."""
    try:
        signature = inspect.signature(node.operation.call)
        bound = signature.bind_partial(*node.arguments.args, **node.arguments.kwargs)
    except (TypeError, ValueError):
        return {}
    return dict(bound.arguments)


def ordered_input_tensors(node):
    """A node's input tensors, keyword arguments in the order of its
    operation's `call` signature (a layer called as `attention(hidden_states=x,
    attention_mask=m)` reads `x` first), positional ones first."""
    named = call_arguments(node)
    if not named:
        return list(node.input_tensors)
    return [t for t in tree.flatten(list(named.values())) if isinstance(t, keras.KerasTensor)]


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


@contextlib.contextmanager
def recording_inputs(layers, record):
    """While active, every call of a layer in `layers` first hands its first
    input to `record(layer, x)` (an eager tensor when the model runs eagerly).

    Keras has no forward hooks: the layers' `call` is wrapped on the
    instances, and restored on exit. This is how data criteria read what a
    layer inside a KerasHub block reads (the input of an attention layer's
    output projection, of an FFN's down projection).

    Example:

    >>> dense = keras.layers.Dense(2)
    >>> seen = []
    >>> with recording_inputs([dense], lambda layer, x: seen.append(tuple(x.shape))):
    ...     _ = dense(keras.ops.ones((3, 4)))
    >>> seen, "call" in vars(dense)
    ([(3, 4)], False)
    """
    patched = []  # (layer, its own `call` attribute or None)
    try:
        for layer in dict.fromkeys(layers):  # each layer once
            original = layer.call
            own = vars(layer).get("call")

            def call(*args, _layer=layer, _original=original, **kwargs):
                record(_layer, args[0] if args else next(iter(kwargs.values())))
                return _original(*args, **kwargs)

            object.__setattr__(layer, "call", call)
            patched.append((layer, own))
        yield
    finally:
        for layer, own in patched:
            if own is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", own)


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


def build_input_shape(model):
    """The input shape a subclassed model was built or first called with (one
    tensor), or None (several inputs, or not built)."""
    shapes = getattr(model, "_build_shapes_dict", None)
    shape = shapes.get("input_shape") if isinstance(shapes, dict) and len(shapes) == 1 else None
    if isinstance(shape, (list, tuple)) and all(d is None or isinstance(d, int) for d in shape):
        return tuple(shape)
    return None


def tuple_build_shape(model):
    """Give a subclassed model loaded from .keras the build input shape a call
    records (a tuple: its build config holds a JSON list, which TFLite's
    converter reads as a list of shapes)."""
    shapes = getattr(model, "_build_shapes_dict", None)
    shape = shapes.get("input_shape") if isinstance(shapes, dict) else None
    if isinstance(shape, list) and all(d is None or isinstance(d, int) for d in shape):
        shapes["input_shape"] = tuple(shape)
