"""Per-layer parameters, sparsity and MACs of a Keras model.

`layer_stats(model)` walks the model's graph (nested models included) and
returns one `LayerStats` row per layer that has weights or compute;
`count_macs(model)` and `count_params(model)` add them up. Wrapped layers
(`PruneLowMagnitude`, `PruneChannels`) are counted as the layer they wrap, with
their masks applied, so the figures describe the model that export produces.
`summary(x)` gives the same table (a `ModelSummary`) for a model, a .keras file
or a .tflite file (one row per op that reads weights).

Example:

>>> import keras
>>> from kprune.stats import count_macs, count_params
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...                           keras.layers.Conv2D(4, 3, padding="same"),
...                           keras.layers.Flatten(), keras.layers.Dense(2)])
>>> count_macs(model), count_params(model)
(7424, 626)
"""

import os

import keras
import numpy as np

from kprune import handlers, kgraph, op_rules
# The .tflite side of `summary` lives in kprune.litert.
from kprune.litert import tflite_stats
from kprune.tables import LayerStats, ModelSummary


def _rows(model):
    """`(layer or None, name, type, weights, macs)` per call in a graph model,
    nested models expanded, `keras.ops` operations included (no weights); a
    subclassed model yields its leaf layers without MACs (shapes unknown)."""
    if not kgraph.is_graph(model):
        layers = kgraph.sublayers(model)
        # A wrapper stands for the layer it wraps: that layer is not listed again.
        wrapped = {id(handlers.unwrap(l)) for l in layers if handlers.unwrap(l) is not l}
        for layer in layers:
            leaf = not kgraph.sublayers(layer, recursive=False)
            if id(layer) not in wrapped and (leaf or handlers.unwrap(layer) is not layer):
                yield layer, 0
        return
    for node in kgraph.nodes(model):
        op = node.operation
        if kgraph.is_nested_graph(op):
            yield from _rows(op)
        elif kgraph.is_layer(op):
            ins = [tuple(t.shape) for t in node.input_tensors]
            outs = [tuple(t.shape) for t in node.outputs]
            yield op, handlers.macs(op, ins, outs)
        else:
            yield op, op_rules.macs(node)


def _masked_values(layer):
    if hasattr(layer, "masked_layer_weights"):
        return layer.masked_layer_weights()
    return [keras.ops.convert_to_numpy(v.value) for v in getattr(layer, "weights", ())]


def layer_stats(model):
    """One `LayerStats` per layer call (or `keras.ops` call) that has weights
    or MACs, in graph order.

    A layer called several times (shared weights) counts its parameters once
    and its MACs at every call.
    """
    rows, seen = [], set()
    for layer, macs in _rows(model):
        first = id(layer) not in seen
        seen.add(id(layer))
        values = _masked_values(layer) if first and kgraph.is_layer(layer) else []
        params = int(sum(v.size for v in values))
        nonzero = int(sum(np.count_nonzero(v) for v in values))
        inner = handlers.unwrap(layer)
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


# --------------------------------------------------------------------------
# `summary`: the same figures for a model, a .keras file or a .tflite file.


def _check_file(path, argname, suffixes):
    path = os.fspath(path)
    if not path.endswith(suffixes):
        raise ValueError(
            f"Argument `{argname}` must be a Keras model or a path to a "
            f"{' or '.join(suffixes)} file. Received: {argname}={path!r}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such file: '{path}' (argument `{argname}`).")
    return path


def load_keras_file(path, argname="model"):
    """Load a .keras file with `safe_mode=True`.

    Args:
        path: the .keras file.
        argname: the caller's argument name, for error messages. Defaults to
            "model".

    Returns:
        The Keras model.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` does not end in .keras, or Keras cannot load it
            (the message names the path and gives Keras' first line).

    Example:

    >>> load_keras_file("missing.keras")
    Traceback (most recent call last):
    ...
    FileNotFoundError: No such file: 'missing.keras' (argument `model`).
    """
    path = _check_file(path, argname, (".keras",))
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as e:  # corrupt zip, unknown layer, unsafe lambda, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"Could not load the Keras model '{path}': {first}") from e


def summary(model_or_path):
    """Per-layer sparsity, parameters and MACs of a model or a saved file.

    Args:
        model_or_path: a Keras model (kprune wrappers count as the layer they
            wrap, masks applied), a path to a .keras file (loaded with
            `safe_mode=True`) or a path to a .tflite file (one row per op that
            reads weights; BatchNormalization folded into a convolution and zero
            biases the converter drops make its parameters differ from the
            Keras model's, MACs agree).

    Returns:
        A `ModelSummary`: `print` it, or use `.rows`, `.params`, `.nonzero`,
        `.macs`, `.sparsity` and `.to_dict()`.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the path is not a .keras/.tflite file, or cannot be read.

    Example:

    >>> import keras, kprune
    >>> from kprune.stats import summary
    >>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(4, name="dense")],
    ...                          name="tiny")
    >>> s = summary(model)
    >>> s.params, s.macs
    (68, 64)
    >>> print(s)  # doctest: +NORMALIZE_WHITESPACE
    Keras model 'tiny'
    layer  type  params  nonzero  sparsity  MACs
    dense  Dense     68       64      5.9%    64
    total            68       64      5.9%    64
    """
    if isinstance(model_or_path, keras.Model):
        return ModelSummary(f"Keras model '{model_or_path.name}'", layer_stats(model_or_path))
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise TypeError(
            "Argument `model_or_path` must be a Keras model or a path to a .keras or "
            f".tflite file. Received: model_or_path={model_or_path!r} "
            f"(of type {type(model_or_path).__name__})"
        )
    path = _check_file(model_or_path, "model_or_path", (".keras", ".tflite"))
    if path.endswith(".keras"):
        return ModelSummary(path, layer_stats(load_keras_file(path, "model_or_path")))
    return ModelSummary(path, tflite_stats(path))
