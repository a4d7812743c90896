"""Tracing the call of a layer that holds layers into the calls it makes.

`trace_call` lists the layer and `keras.ops` calls one call of a layer makes
(KerasHub's transformer blocks, a user's residual block), with exact shapes;
`trace_graph` gives the same as a graph for the channel dependency graph. The
trace runs the layer's `call` on fresh symbolic inputs, which records nodes in
Keras' private per-layer node lists; they are removed, and Keras' name
counters restored, afterwards. Like `functional`, it reads Keras' private
attributes (`_inbound_nodes`, `_outbound_nodes`, `_keras_history`, the name
counters), so only this package does.

Example:

>>> import keras
>>> from kprune._internal import tracing
>>> class Block(keras.layers.Layer):
...     def __init__(self, **kwargs):
...         super().__init__(**kwargs)
...         self.dense = keras.layers.Dense(3)
...     def call(self, x):
...         return x[..., :3] + self.dense(x)
>>> calls = tracing.trace_call(Block(), (keras.Input((None, 4)),), {})
>>> [type(c.operation).__name__ for c in calls]
['GetItem', 'Dense', 'Add']
"""

import inspect
import warnings
from typing import NamedTuple

import keras
from keras import tree
from keras.src.backend import compute_output_spec
from keras.src.backend.common import global_state

from kprune._internal.functional import sublayers


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
