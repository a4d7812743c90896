"""The one place that reads Keras' internals: the functional graph, the
stateless scope and callback model that `kprune.utils.backends` needs, and the mark
that keeps Keras from decorating kprune's errors raised inside a layer call.

kprune walks the graph of Sequential and Functional models (nodes in
dependency order, nested models, `keras.ops` operations between layers), and
traces the call of a layer that holds layers (`trace_call`: KerasHub's
transformer blocks, a user's residual block) into the calls it makes. The
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
import warnings
from typing import NamedTuple

import keras
from keras import tree
from keras.src.backend import compute_output_spec
from keras.src.backend.common import global_state
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


class Call(NamedTuple):
    """One call made inside a traced layer call (`trace_call`).

    Attributes:
        operation: the layer or `keras.ops` operation called.
        args, kwargs: its arguments, tensors as `KerasTensor`s of exact shape.
        outputs: its outputs, a flat list of `KerasTensor`s.
    """

    operation: object
    args: tuple
    kwargs: dict
    outputs: list

    @property
    def input_shapes(self):
        """Shapes of the tensors among its arguments: positional ones, then
        keyword ones in the order of the `call` signature (a
        MultiHeadAttention called with `query=..., value=...` gets the
        query's shape first, as when called positionally)."""
        try:
            order = list(inspect.signature(self.operation.call).parameters)
        except (TypeError, ValueError):
            order = []
        rank = {name: i for i, name in enumerate(order)}
        kwargs = sorted(self.kwargs.items(), key=lambda item: rank.get(item[0], len(order)))
        return [tuple(t.shape) for t in tree.flatten((self.args, [v for _, v in kwargs]))
                if isinstance(t, keras.KerasTensor)]

    @property
    def output_shapes(self):
        return [tuple(t.shape) for t in self.outputs]


def tree_flatten(structure):
    """The leaves of a nested structure (lists, tuples, dicts), as Keras orders them."""
    return tree.flatten(structure)


def _example_input(tensor):
    """A fresh `Input` like `tensor` for one example: batch axis 1, unknown axes 1."""
    shape = tuple(1 if d is None else int(d) for d in tensor.shape)
    return keras.Input(batch_shape=(1,) + shape[1:] if shape else (), dtype=tensor.dtype)


def _graph_nodes(outputs):
    """The nodes that compute `outputs`, inputs first (input placeholders left out)."""
    order, done = [], set()

    def visit(tensor):
        operation, index, _ = getattr(tensor, "_keras_history", (None, 0, 0))
        if operation is None:
            return
        node = operation._inbound_nodes[index]
        if id(node) in done or node.is_input:
            return
        done.add(id(node))
        for t in node.input_tensors:
            visit(t)
        order.append(node)

    for tensor in outputs:
        visit(tensor)
    return order


def _dense(x):
    """A sparse `KerasTensor` as a dense one (Keras marks the product of a
    tensor and an eager constant sparse; shapes are what a trace is for)."""
    if isinstance(x, keras.KerasTensor) and x.sparse:
        return keras.KerasTensor(x.shape, x.dtype)
    return x


def _traced_spec(layer):
    """`layer.compute_output_spec` that traces `layer.call` with the backend:
    exact shapes, where a layer's own `compute_output_shape` (which Keras
    trusts) may leave axes unknown (EinsumDense's sequence axis), and code
    after it reshapes with them."""
    def spec(*args, **kwargs):
        args, kwargs = tree.map_structure(_dense, (args, kwargs))
        return compute_output_spec(layer.call, *args, **kwargs)
    return spec


def trace_call(layer, args, kwargs):
    """The calls that one call of `layer` makes, on one example.

    `layer.call` runs on fresh symbolic inputs shaped like the tensors in
    `args`/`kwargs` (batch axis 1, unknown axes 1), which records every layer
    and `keras.ops` call it makes as a node (as building a Functional model
    does). While it runs, the layers it holds compute their output shapes by
    tracing their `call` with the backend, so that every shape is exact.
    Nested layers that hold layers appear as single calls: trace them in
    turn. The layers are left as they were (the nodes the trace adds are
    removed, Keras' name counters restored).

    Args:
        layer: a built layer.
        args, kwargs: its call arguments (`KerasTensor`s where tensors go).

    Returns:
        A list of `Call`s in execution order.

    Raises:
        Whatever the layer's code raises on symbolic inputs.

    Example:

    >>> class Block(keras.layers.Layer):
    ...     def __init__(self, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.dense = keras.layers.Dense(3)
    ...     def call(self, x):
    ...         return keras.ops.relu(self.dense(x))
    >>> block = Block()
    >>> x = keras.Input((None, 4))
    >>> [(type(c.operation).__name__, c.output_shapes) for c in trace_call(block, (x,), {})]
    [('Dense', [(1, 1, 3)]), ('Relu', [(1, 1, 3)])]
    """
    return _traced(layer, args, kwargs, _trace)


def _traced(layer, args, kwargs, run):
    """`run(layer, args, kwargs)` with the layers inside `layer` tracing their
    calls for exact shapes, and every trace of it undone afterwards."""
    inner = sublayers(layer)
    lengths = [(op, len(op._inbound_nodes), len(op._outbound_nodes)) for op in [layer] + inner]
    patched = [op for op in inner if "compute_output_spec" not in vars(op)]
    uids = global_state.get_global_attribute("object_name_uids")
    saved_uids = dict(uids) if uids is not None else None
    try:
        for op in patched:
            object.__setattr__(op, "compute_output_spec", _traced_spec(op))
        with warnings.catch_warnings():
            # Keras' warnings about the traced example (a softmax over an axis
            # of size 1 where the sequence length is unknown) are not the user's.
            warnings.simplefilter("ignore")
            return run(layer, args, kwargs)
    finally:
        for op in patched:
            object.__delattr__(op, "compute_output_spec")
        for op, inbound, outbound in lengths:
            del op._inbound_nodes[inbound:]
            del op._outbound_nodes[outbound:]
        if saved_uids is not None:
            uids.clear()
            uids.update(saved_uids)


def _trace(layer, args, kwargs):
    inputs, nodes, _ = _trace_nodes(layer, args, kwargs)
    return [Call(node.operation, node.arguments.args, node.arguments.kwargs, list(node.outputs))
            for node in nodes]


def _trace_nodes(layer, args, kwargs):
    fresh = {}
    for t in tree.flatten((args, kwargs)):
        if isinstance(t, keras.KerasTensor) and id(t) not in fresh:
            fresh[id(t)] = _example_input(t)
    call_args, call_kwargs = tree.map_structure(
        lambda x: fresh[id(x)] if isinstance(x, keras.KerasTensor) else x, (args, kwargs))
    outputs = [t for t in tree.flatten(layer.call(*call_args, **call_kwargs))
               if isinstance(t, keras.KerasTensor)]
    return fresh, _graph_nodes(outputs), outputs


class Trace(NamedTuple):
    """One call of a layer that holds layers, as the graph of the calls it makes
    (`trace_graph`).

    Attributes:
        inputs: `{id(argument tensor): traced input}`: the `KerasTensor` that
            stands for each tensor among the call's arguments.
        nodes: the nodes of the calls it makes, in execution order (each has
            `operation`, `arguments`, `input_tensors` and `outputs`).
        outputs: the call's output tensors (flat).
    """

    inputs: dict
    nodes: list
    outputs: list


def trace_graph(layer, args, kwargs):
    """`trace_call`, as a graph: the traced inputs, the nodes and the outputs.

    The channel dependency graph walks these nodes as it walks a nested
    model's (a layer and `keras.ops` call each), so that it follows channels
    through a KerasHub transformer block.

    Example:

    >>> class Block(keras.layers.Layer):
    ...     def __init__(self, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.dense = keras.layers.Dense(4)
    ...     def call(self, x):
    ...         return x + self.dense(x)
    >>> block = Block()
    >>> x = keras.Input((None, 4))
    >>> trace = trace_graph(block, (x,), {})
    >>> [type(n.operation).__name__ for n in trace.nodes], len(trace.outputs)
    (['Dense', 'Add'], 1)
    """
    return _traced(layer, args, kwargs, lambda *call: Trace(*_trace_nodes(*call)))


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
