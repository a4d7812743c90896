"""Per-layer parameters, sparsity and MACs of a Keras model.

`layer_stats(model)` walks the model's graph (nested models included) and
returns one `LayerStats` row per layer that has weights or compute;
`count_macs(model)` and `count_params(model)` add them up. Wrapped layers
(`PruneLowMagnitude`, `PruneChannels`) are counted as the layer they wrap, with
their masks applied, so the figures describe the model that export produces.

Example:

>>> import keras
>>> from kprune.summary import count_macs, count_params
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...                           keras.layers.Conv2D(4, 3, padding="same"),
...                           keras.layers.Flatten(), keras.layers.Dense(2)])
>>> count_macs(model), count_params(model)
(7424, 626)
"""

from typing import NamedTuple

import keras
import numpy as np

from kprune import handlers


class LayerStats(NamedTuple):
    """One layer's figures (MACs for one example)."""

    name: str
    type: str
    params: int
    nonzero: int
    macs: int

    @property
    def sparsity(self):
        return 1.0 - self.nonzero / self.params if self.params else 0.0


def _shapes(tensors):
    return [tuple(t.shape) for t in tensors]


def _nodes(model):
    """`(layer, input_shapes, output_shapes)` per call in a graph model, nested
    models expanded; a subclassed model yields its layers without shapes."""
    from kprune.graph import _function_of, _is_graph

    if not _is_graph(model):
        for layer in model._flatten_layers(include_self=False, recursive=True):
            if not list(layer._flatten_layers(include_self=False, recursive=False)) or handlers.unwrap(layer) is not layer:
                yield layer, None, None
        return
    function = _function_of(model)
    for depth in sorted(function._nodes_by_depth, reverse=True):
        for node in function._nodes_by_depth[depth]:
            op = node.operation
            if node.is_input:
                continue
            if isinstance(op, keras.Model) and _is_graph(op):
                yield from _nodes(op)
                continue
            yield op, _shapes(node.input_tensors), _shapes(node.outputs)


def _masked_values(layer):
    if hasattr(layer, "masked_layer_weights"):
        return layer.masked_layer_weights()
    return [keras.ops.convert_to_numpy(v.value) for v in layer.weights]


def layer_stats(model):
    """One `LayerStats` per layer call that has weights or MACs, in graph order.

    A layer called several times (shared weights) counts its parameters once
    and its MACs at every call.
    """
    rows, seen = [], set()
    for layer, ins, outs in _nodes(model):
        first = id(layer) not in seen
        seen.add(id(layer))
        values = _masked_values(layer) if first else []
        params = int(sum(v.size for v in values))
        nonzero = int(sum(np.count_nonzero(v) for v in values))
        inner = handlers.unwrap(layer)
        macs = handlers.macs(inner, ins, outs) if ins is not None else 0
        if params or macs:
            rows.append(LayerStats(inner.name, type(inner).__name__, params, nonzero, int(macs)))
    return rows


def count_macs(model):
    """Multiply-accumulates of one forward pass on one example."""
    return int(sum(r.macs for r in layer_stats(model)))


def count_params(model, nonzero=False):
    """Parameters of the model (masks not counted); `nonzero=True` counts
    only those that are not 0."""
    return int(sum(r.nonzero if nonzero else r.params for r in layer_stats(model)))
