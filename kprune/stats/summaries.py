"""`kprune.summary`: per-layer parameters, sparsity and MACs of a model, a .keras or a .tflite file.

One `kprune.stats.records.ModelSummary` whatever the source: a Keras model
(`kprune.stats.keras_stats`), a .keras file (loaded in safe mode) or a
.tflite file (`kprune.stats.tflite_ops`), so the three can be compared.
"""

import os

import keras

from kprune.stats.keras_stats import layer_stats
from kprune.stats.records import ModelSummary
from kprune.stats.tflite_ops import tflite_stats
from kprune.utils.files import check_file, load_keras_file


def summary(model_or_path, input_shapes=None):
    """Per-layer sparsity, parameters and MACs of a model or a saved file.

    Args:
        model_or_path: a Keras model (kprune wrappers count as the layer they
            wrap, masks applied), a path to a .keras file (loaded with
            `safe_mode=True`) or a path to a .tflite file (one row per op that
            reads weights; BatchNormalization folded into a convolution and zero
            biases the converter drops make its parameters differ from the
            Keras model's, MACs agree).
        input_shapes: for a Keras model, the input shapes to count at
            (`{input name: shape without the batch axis}`: a KerasHub model
            at the sequence length its .tflite file was exported at).
            Defaults to None (the model's own shapes, unknown axes as 1).

    Returns:
        A `ModelSummary`: `print` it, or use `.rows`, `.params`, `.nonzero`,
        `.macs`, `.sparsity` and `.to_dict()`.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the path is not a .keras/.tflite file, or cannot be read.

    Example:

    >>> import keras, kprune
    >>> from kprune.stats.summaries import summary
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
        return ModelSummary(f"Keras model '{model_or_path.name}'", layer_stats(model_or_path, input_shapes))
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise TypeError(
            "Argument `model_or_path` must be a Keras model or a path to a .keras or "
            f".tflite file. Received: model_or_path={model_or_path!r} "
            f"(of type {type(model_or_path).__name__})"
        )
    path = check_file(model_or_path, "model_or_path", (".keras", ".tflite"))
    if path.endswith(".keras"):
        return ModelSummary(path, layer_stats(load_keras_file(path, "model_or_path")))
    return ModelSummary(path, tflite_stats(path))
