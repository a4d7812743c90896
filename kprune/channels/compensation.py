"""FLAP's bias compensation: a removed unit's mean contribution moves into the reader's bias.

When a unit (an FFN unit, an attention head, a channel) goes, each layer
that reads it loses `x_j W_j` from its output. FLAP (An et al.,
"Fluctuation-based Adaptive Structured Pruning for Large Language Models",
AAAI 2024; `lib/prune.py: compress`) keeps its average: on calibration data,
the reader's output bias absorbs the mean of what the pruned inputs gave,

    b += mean(X)[pruned] @ W[pruned, :]

where `X` is the reader's input seen as the rows of its matrix
(`kprune.registry.linear.LinearView`: a Dense layer's input, a head's
`head_dim` channels into the attention output projection, a convolution's
patches) and `W` its kernel as a matrix. The means come from one pass of the
dense model over the data (`kprune._internal.functional.recording_inputs`),
with no propagation, as in FLAP.

`bias_shifts` returns what to add to each bias; `kprune.channels.apply_plan`
adds it before the units are zeroed or removed, so the masked and the smaller
model stay equal. A head's mean output includes its value bias, so an
attention layer whose output bias is compensated does not also fold that
bias (`kprune.registry.attention.fold_value_bias`). A reader without a bias
(KerasHub's Llama, Gemma and Qwen projections: `use_bias=False`) or that is
not a matrix product raises: nothing is skipped silently.

Example (a Dense layer reading 4 units, 2 removed):

>>> import keras, numpy as np
>>> from kprune.dependency.channel_graph import ChannelGraph
>>> x = keras.Input((3,))
>>> model = keras.Model(x, keras.layers.Dense(1, name="out")(keras.layers.Dense(4, name="up")(x)))
>>> graph = ChannelGraph(model)
>>> group = graph.prunable_groups[0]
>>> flags = graph.pruned_flags(set(group.units[:2]))
>>> data = np.ones((5, 3), "float32")
>>> shift = bias_shifts(model, graph, flags, data)[id(model.get_layer("out").bias)]
>>> hidden = model.get_layer("up")(data).numpy().mean(axis=0)
>>> bool(np.allclose(shift, hidden[:2] @ model.get_layer("out").kernel.numpy()[:2], atol=1e-5))
True
"""

import keras
import numpy as np

from kprune._internal import functional
from kprune.criteria.importance import batches
from kprune.dependency.unit_space import usage_name
from kprune.registry import queries
from kprune.registry.linear import column_bias


class _Reader:
    """A layer that reads pruned units: its matrix view, bias and the usages."""

    def __init__(self, layer, name, view, bias):
        self.layer = layer
        self.name = name
        self.view = view
        self.bias = bias
        self.usages = []
        self.sum = None
        self.rows = 0

    def add(self, x):
        rows = keras.ops.convert_to_numpy(self.view.rows(x)).astype(np.float64)
        self.sum = rows.sum(axis=0) if self.sum is None else self.sum + rows.sum(axis=0)
        self.rows += rows.shape[0]


def _name(usage, owner):
    name = usage_name(usage)
    return name if owner is usage.layer else f"{name}/{owner.name}"


def pruned_readers(graph, flags):
    """The `_Reader`s of the units flagged in `flags`: every layer that holds
    an `"in"` slice of a pruned unit (a depthwise layer, whose output is the
    same unit, excepted), checked to have a view and a bias.

    Raises:
        ValueError: a reader has no bias, or is not a matrix product.
    """
    readers = {}
    for usage in graph.usages:
        if usage.role != "in" or usage.kind == "depthwise":
            continue
        if len(graph.keep_positions(usage, flags)) == len(usage.ids):
            continue
        variable = usage.slices[0][0]
        owner = queries.weight_owner(usage.layer, variable)
        reader = readers.get(id(owner))
        if reader is None:
            view = queries.linear_view(owner)
            name = _name(usage, owner)
            if view is None or view.variable is not variable:
                raise ValueError(
                    f"Layer '{name}' ({type(owner).__name__}) reads pruned units, but kprune can "
                    "compensate only the bias of a Dense, EinsumDense or single-group Conv1D/Conv2D "
                    "layer (`compensate=`). Exclude the layers that write those units "
                    "(`plan_channels(..., exclude=...)`) or call without `compensate`."
                )
            bias = column_bias(owner, view)
            if bias is None:
                raise ValueError(
                    f"Layer '{name}' ({type(owner).__name__}) reads pruned units but has no bias to "
                    "absorb their mean contribution (`compensate=`): build it with `use_bias=True` "
                    "(KerasHub's Llama, Gemma and Qwen projections have none), exclude the layers "
                    "that write those units, or call without `compensate`."
                )
            reader = readers[id(owner)] = _Reader(owner, name, view, bias)
        reader.usages.append(usage)
    return list(readers.values())


def input_means(model, readers, data):
    """Run `model` over `data` once, summing each reader's input rows."""
    by_layer = {id(r.layer): r for r in readers}
    with functional.recording_inputs([r.layer for r in readers], lambda layer, x: by_layer[id(layer)].add(x)):
        for x, _ in batches(data, with_targets=False):
            model(x, training=False)
    for reader in readers:
        if not reader.rows:
            raise ValueError(
                f"Argument `compensate` must hold calibration inputs that reach layer '{reader.name}'. "
                f"Received: compensate of type {type(data).__name__} with no examples"
            )


def bias_shifts(model, graph, flags, data):
    """`{id(bias variable): array to add}` for the readers of the units
    flagged in `flags` (`UnitSpace.pruned_flags`), from their mean inputs on
    `data` (see the module docstring)."""
    readers = pruned_readers(graph, flags)
    if not readers:
        return {}
    input_means(model, readers, data)
    shifts = {}
    for reader in readers:
        view = reader.view
        kernel = keras.ops.convert_to_numpy(view.matrix(view.variable.value)).astype(np.float64)
        keep = graph.keep_masks(flags, reader.usages)[id(view.variable)]
        gone = ~keras.ops.convert_to_numpy(view.matrix(keras.ops.convert_to_tensor(keep)))
        shift = (reader.sum / reader.rows) @ (kernel * gone)
        shifts[id(reader.bias)] = shift.reshape(tuple(reader.bias.shape))
    return shifts
