"""Per-layer parameters, sparsity and MACs of a Keras model.

`layer_stats(model)` walks the model's graph (nested models included) and
returns one `LayerStats` row per layer that has weights or compute;
`count_macs(model)` and `count_params(model)` add them up. A layer that holds
layers and has no MACs record of its own (KerasHub's transformer blocks and
attention layers, a user's residual block; a subclassed model) is traced
(`kprune._internal.tracing.trace_call`): each layer and `keras.ops` matmul it
calls is a row ("block/attention/query"), so attention's score and context
matmuls count as the TFLite file's BATCH_MATMULs do. Unknown axes (a sequence
length of None) count 1, unless `input_shapes` gives them
(`kprune.stats.input_shapes`). Wrapped layers (`PruneLowMagnitude`, `PruneChannels`) and
layers pruned in place are counted with their masks applied, so the figures
describe the model that export produces; on a pruned model the `pruned`
column says which rows' prunable weights are masked.
`summary(x)` gives the same table (a `ModelSummary`) for a model, a .keras file
or a .tflite file (one row per op that reads weights).

Example:

>>> import keras
>>> from kprune.stats.keras_stats import count_macs, count_params
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...                           keras.layers.Conv2D(4, 3, padding="same"),
...                           keras.layers.Flatten(), keras.layers.Dense(2)])
>>> count_macs(model), count_params(model)
(7424, 626)
"""

import warnings

import keras
import numpy as np

from kprune._internal import functional, tracing
from kprune.registry import keras_layers
from kprune.registry import ops as ops_rules
from kprune.sparsity import in_place
from kprune.stats.input_shapes import at_input_shapes
from kprune.stats.records import LayerStats

# The .tflite side of `summary` lives in kprune.litert.


def _rows(model, prefix="", trace=True):
    """`(layer or op, name, macs)` per call in a model, in call order
    (`_call_rows`). A subclassed model is traced on the input shape it was
    built with; if it cannot be (or `trace` is False: parameters only), its
    leaf layers are listed without MACs."""
    if not functional.is_graph(model):
        shape = functional.build_input_shape(model)
        calls = None
        if shape is not None and trace:
            calls = _trace(model, (keras.KerasTensor(shape, dtype=model.input_dtype),), {})
        if calls is not None:
            yield from _calls_rows(calls, prefix, trace)
            yield model, prefix + model.name, 0  # weights of layers it did not call
            return
        layers = functional.sublayers(model)
        # A wrapper stands for the layer it wraps: that layer is not listed again.
        wrapped = {id(keras_layers.unwrap(l)) for l in layers if keras_layers.unwrap(l) is not l}
        for layer in layers:
            leaf = not functional.sublayers(layer, recursive=False)
            if id(layer) not in wrapped and (leaf or keras_layers.unwrap(layer) is not layer):
                yield layer, prefix + keras_layers.unwrap(layer).name, 0
        return
    for node in functional.nodes(model):
        yield from _call_rows(node.operation, node.arguments.args, node.arguments.kwargs,
                              [tuple(t.shape) for t in node.input_tensors],
                              [tuple(t.shape) for t in node.outputs], prefix, trace)


def _same_inputs(model, shapes):
    """Whether a nested graph model is called on inputs of the shapes its own
    graph was built for (batch axis aside)."""
    own = sorted(str(tuple(t.shape)[1:]) for t in functional.tree_flatten(model.inputs))
    return own == sorted(str(tuple(s)[1:]) for s in shapes)


def _call_rows(op, args, kwargs, ins, outs, prefix, trace):
    """Rows of one call: a `keras.ops` operation; a nested graph model (its
    layers, named as in the model; traced when it is called on other shapes
    than its graph's, e.g. a fixed sequence length where its graph has
    None); a layer with a MACs record; or a layer that holds layers and has
    none (`keras_layers.counted_inside`): the calls it makes, named
    "layer/sublayer", then a row for its own weights (and those of layers it
    did not call). Without `trace`, such layers are single rows without MACs."""
    if not functional.is_layer(op):
        yield op, prefix + op.name, ops_rules.op_macs(op, args, outs)
        return
    name = prefix + keras_layers.unwrap(op).name
    if functional.is_nested_graph(op) and (_same_inputs(op, ins) or not trace):
        yield from _rows(op, prefix, trace)
    elif trace and (functional.is_nested_graph(op) or keras_layers.counted_inside(op)):
        calls = _trace(keras_layers.unwrap(op), args, kwargs)
        inner = prefix if functional.is_nested_graph(op) else name + "/"
        yield from _calls_rows(calls or [], inner, trace)
        yield op, name, 0
    else:
        yield op, name, keras_layers.macs(op, ins, outs)


def _calls_rows(calls, prefix, trace):
    for call in calls:
        yield from _call_rows(call.operation, call.args, call.kwargs, call.input_shapes,
                              call.output_shapes, prefix, trace)


def _trace(layer, args, kwargs):
    """`tracing.trace_call`, or None with a warning if the layer's code fails
    on symbolic inputs."""
    try:
        return tracing.trace_call(layer, args, kwargs)
    except Exception as e:  # any error of the layer's own code, run symbolically
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        warnings.warn(
            f"kprune counts 0 MACs for layer {keras_layers.describe(layer)}: its call could not "
            f"be traced to count the layers and operations inside it ({type(e).__name__}: "
            f"{message}). Describe its type with kprune.register_layer(cls, "
            "prunable=..., macs=...).",
            RuntimeWarning, stacklevel=5,
        )
        return None


def _masks(model):
    """`{id(variable): mask}` of the weights under pruning masks in `model`:
    those of its kprune wrappers and of its layers pruned in place."""
    holders = in_place.targets_of(model) + [
        layer for layer in functional.sublayers(model) if hasattr(layer, "pruned_weights")]
    return {id(v): m for holder in holders for v, m in holder.pruned_weights}


def _pruned(prunable, masks):
    """Whether the prunable weights of a row are under masks: "yes", "no",
    "partly", or "" (no prunable weight, or a model without masks)."""
    if not masks or not prunable:
        return ""
    masked = sum(id(v) in masks for v in prunable)
    return "yes" if masked == len(prunable) else "no" if not masked else "partly"


def layer_stats(model, input_shapes=None):
    """One `LayerStats` per layer call (or `keras.ops` call) that has weights
    or MACs, in graph order.

    `input_shapes` (`{input name: shape without the batch axis}`, or one shape
    per input) counts the model called on inputs of those shapes (a KerasHub
    model at a sequence length: `kprune.stats.input_shapes`); by default the
    model's own input shapes, unknown axes counting 1.

    Each weight is counted once, with the first call that reads it (a layer
    called several times counts its parameters once and its MACs at every
    call); a layer that holds layers is listed as the calls it makes
    ("block/dense", ...) and, if it holds weights of its own, a row of its
    own. Weights under pruning masks count their masked values; the
    `pruned` column says whether the weights kprune prunes in each row are
    masked (on a model with masks).
    """
    if input_shapes is not None:
        model = at_input_shapes(model, input_shapes)
    return _stats(model, trace=True)


def _stats(model, trace):
    masks = _masks(model)
    rows, seen = [], set()
    for layer, name, macs in _rows(model, trace=trace):
        inner = keras_layers.unwrap(layer)
        variables = [v for v in getattr(inner, "weights", ()) if id(v) not in seen]
        variables = variables if functional.is_layer(layer) else []
        seen.update(id(v) for v in variables)
        if inner is not layer:  # a wrapper's masks and step are not the model's parameters
            seen.update(id(v) for v in layer.weights)
        values = [_masked_value(v, masks) for v in variables]
        params = int(sum(v.size for v in values))
        nonzero = int(sum(np.count_nonzero(v) for v in values))
        pruned = _pruned(_prunable(inner, variables), masks) if masks and variables else ""
        if params or macs:
            rows.append(LayerStats(name, type(inner).__name__, params, nonzero, int(macs), pruned))
    return rows


def _prunable(layer, variables):
    """Those of `variables` that kprune prunes in `layer` or the layers it holds."""
    new, found = {id(v) for v in variables}, {}
    for part in [layer] + functional.sublayers(layer):
        if not part.built or keras_layers.classify(part) != "prunable":
            continue
        try:
            weights = keras_layers.prunable_weights(part)
        except ValueError:  # a layer kprune cannot prune (its message says why)
            continue
        found.update((id(w.variable), w.variable) for w in weights if id(w.variable) in new)
    return list(found.values())


def _masked_value(variable, masks):
    value = keras.ops.convert_to_numpy(variable.value)
    if id(variable) in masks:
        value = np.where(keras.ops.convert_to_numpy(masks[id(variable)]).astype(bool), value, 0)
    return value


def count_macs(model, input_shapes=None):
    """Multiply-accumulates of one forward pass on one example (at
    `input_shapes`, see `layer_stats`)."""
    return int(sum(r.macs for r in layer_stats(model, input_shapes)))


def count_params(model, nonzero=False):
    """Parameters of the model (masks not counted); `nonzero=True` counts
    only those that are not 0."""
    return int(sum(r.nonzero if nonzero else r.params for r in _stats(model, trace=False)))
