"""TFLite conversion: quietly, with the best encoding LiteRT runs.

`convert(model, ...)` runs `tf.lite.TFLiteConverter.from_keras_model` with
kprune's quantization settings; the converter's Python prints and its C++ log
lines (a dozen `I0000 ... loader.cc` lines per conversion) are kept off the
terminal unless `verbose=True` (`kprune.utils.native_logs`). A failing conversion becomes a one-line
reason (`conversion_error`). `convert_best` converts with each candidate
weight encoding (`encodings_to_try`: sparse when the weights are sparse
enough and LiteRT can run it, dense), runs each file in LiteRT and keeps the
smallest that runs. The dense conversion is skipped when the sparse file
is already smaller than the dense file can be (`dense_floor_bytes`: the
kernels alone, at the file's float width).

Example:

>>> encodings_to_try("auto", "int8", 0.9, notes := [])
[False]
>>> notes[0].startswith("sparse encoding not tried")
True
"""

import contextlib
import io
import math
import os
import re
import tempfile
import time
import warnings

from kprune._internal import functional
from kprune.export.fixed_shapes import takes_dict
from kprune.litert import runtime as litert
from kprune.registry import queries
from kprune.utils.native_logs import quiet_native_logs

SPARSITY_FOR_ENCODING = 0.5  # "auto" sparse-encodes from this weight sparsity on
# LiteRT's CPU kernels (XNNPACK) reject sparse-encoded files of these types.
_NO_SPARSE_KERNELS = ("int8", "dynamic", "qat")


def converter_settings(quantize=None, calibration=None, sparse=False, int8_io=False):
    """The `TFLiteConverter` attributes of kprune's options, as a dict
    (`target_spec` a dict of its own): what both conversion paths set."""
    import tensorflow as tf

    optimizations = [tf.lite.Optimize.DEFAULT] if quantize else []
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    settings = {"optimizations": optimizations, "target_spec": {}}
    if quantize == "float16":
        settings["target_spec"]["supported_types"] = [tf.float16]
    if quantize == "int8":
        settings["representative_dataset"] = lambda: iter(calibration)
        settings["target_spec"]["supported_ops"] = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if quantize in ("int8", "qat") and int8_io:
        settings["inference_input_type"] = tf.int8
        settings["inference_output_type"] = tf.int8
    return settings


def _apply(converter, settings):
    for key, value in settings.items():
        if key == "target_spec":
            for name, spec_value in value.items():
                setattr(converter.target_spec, name, spec_value)
        else:
            setattr(converter, key, value)


def convert(model, quantize=None, calibration=None, sparse=False, int8_io=False, verbose=False,
            input_shapes=None):
    """The TFLite flatbuffer of a Keras model.

    Args:
        model: a plain Keras model (no kprune wrappers).
        quantize: None, "dynamic", "float16", "int8" or "qat" (int8 from
            the fake-quantization ranges of a quantization-aware model).
        calibration: with "int8", a list of samples (lists of arrays).
        sparse: also ask for TFLite's sparse weight encoding.
        int8_io: with "int8" or "qat", int8 inputs and outputs.
        verbose: let the converter's logs through. Defaults to False.
        input_shapes: `{input name: shape}` to convert at (a model that takes
            a dict goes through Keras' exporter, `keras_export`). Defaults to None.

    Returns:
        The flatbuffer as bytes.
    """
    import tensorflow as tf

    if takes_dict(model):
        return keras_export(model, input_shapes, quantize, calibration, sparse, int8_io, verbose)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    _apply(converter, converter_settings(quantize, calibration, sparse, int8_io))
    # The converter prints the intermediate SavedModel's signature: keep it quiet.
    stdout = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with stdout, quiet_native_logs(not verbose), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


def keras_export(model, input_shapes, quantize=None, calibration=None, sparse=False, int8_io=False,
                 verbose=False):
    """The flatbuffer of a model that takes a dict, from Keras' own exporter
    (`model.export(format="litert")`, Keras >= 3.13): its input signature at
    `input_shapes` (batch 1), LiteRT's builtin ops only (a Flex op fails the
    conversion instead of making a file LiteRT cannot run), kprune's
    quantization and encoding settings, the calibration samples as dicts."""
    import tensorflow as tf

    specs = litert.input_specs(model)
    signature = {name: tf.TensorSpec((1,) + tuple(input_shapes[name]), dtype, name=name)
                 for name, _, dtype in specs}
    settings = converter_settings(quantize, calibration, sparse, int8_io)
    settings["target_spec"].setdefault("supported_ops", [tf.lite.OpsSet.TFLITE_BUILTINS])
    if calibration is not None:
        names = [name for name, _, _ in specs]
        settings["representative_dataset"] = lambda: (dict(zip(names, sample)) for sample in calibration)
    stdout = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with tempfile.TemporaryDirectory(prefix="kprune_litert_") as folder:
        path = os.path.join(folder, "model.tflite")
        with stdout, quiet_native_logs(not verbose), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            model.export(path, format="litert", input_signature=[signature], verbose=verbose, **settings)
        with open(path, "rb") as f:
            return f.read()


def conversion_error(error, model):
    """The gist of a converter error (its messages run to pages of MLIR)."""
    text = str(error)
    ops = sorted(set(re.findall(r"'([\w.]+)' op is neither a custom op nor a flex op", text)))
    if ops:
        return f"ops without a TFLite builtin kernel: {', '.join(ops)}"
    if isinstance(error, TypeError):  # the converter hides SavedModel export errors
        with tempfile.TemporaryDirectory() as directory, contextlib.redirect_stdout(io.StringIO()):
            try:
                model.export(directory, format="tf_saved_model", verbose=False)
            except Exception as e:
                text = f"the model cannot be exported as a SavedModel: {e}"
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())[:1000]


@contextlib.contextmanager
def timed(timings, phase):
    """Add the seconds the block takes to `timings[phase]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start


def encodings_to_try(sparse_encoding, quantize, sparsity, notes):
    """The encodings to try, best first: [True, False], [True] or [False]."""
    if sparse_encoding is True:
        return [True]
    if sparse_encoding is False:
        return [False]
    if sparsity < SPARSITY_FOR_ENCODING:
        notes.append(
            f"sparse encoding not used: weight sparsity {sparsity:.1%} < {SPARSITY_FOR_ENCODING:.0%}"
        )
        return [False]
    if quantize in _NO_SPARSE_KERNELS:
        notes.append(
            f"sparse encoding not tried: LiteRT's CPU kernels (XNNPACK) do not run sparse "
            f"{quantize} files; pass sparse_encoding=True to force it"
        )
        return [False]
    return [True, False]


# Bytes per weight element of a dense file, by `quantize` (float types only:
# int8 and dynamic files are never sparse-encoded).
_FLOAT_BYTES = {None: 4, "float16": 2}


def dense_floor_bytes(model, quantize=None):
    """A lower bound on the size of `model`'s dense TFLite file: its prunable
    kernels (every one is a constant of the file; batch-norm folding rescales
    a kernel but keeps its size) at the file's float width. 0 for integer
    quantization.

    Example:

    >>> import keras
    >>> dense_floor_bytes(keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)]))
    128
    """
    width = _FLOAT_BYTES.get(quantize, 0)
    kernels = {
        id(w.variable): math.prod(w.variable.shape)
        for layer in functional.sublayers(model) if layer.built
        for w in queries.prunable_weights(layer)
    }
    return width * sum(kernels.values())


def convert_best(name, exported, candidates, sparse_encoding, checked, notes, timings, options):
    """Convert with each candidate encoding, run each file in LiteRT, keep the
    smallest that runs. Returns `(content, outputs, sparse)`."""
    verbose = options["verbose"]
    io_names = litert.io_names(exported)
    results = []
    floor = dense_floor_bytes(exported, options.get("quantize")) if len(candidates) > 1 else 0
    for sparse in candidates:
        if not sparse and results and len(results[0][0]) < floor:
            notes.append(
                f"dense encoding not converted: the sparse file ({len(results[0][0]):,} bytes) is "
                f"smaller than the dense kernels alone ({floor:,} bytes)"
            )
            break
        with timed(timings, "convert"):
            try:
                content = convert(exported, sparse=sparse, **options)
            except Exception as e:
                reason = conversion_error(e, exported)
                raise ValueError(f"TFLite conversion of model '{name}' failed: {reason}") from e
        try:
            with timed(timings, "verify"), quiet_native_logs(not verbose):
                results.append((content, litert.run_samples(content, io_names, checked), sparse))
        except RuntimeError as e:
            if sparse_encoding is True:
                raise RuntimeError(
                    f"LiteRT cannot run the sparse-encoded model ({e}). Use "
                    "sparse_encoding='auto' to fall back to dense weights, or False."
                ) from e
            if not sparse:
                raise RuntimeError(f"LiteRT cannot run the converted model: {e}") from e
            notes.append(f"sparse encoding fell back to dense: LiteRT cannot run the sparse file ({e})")
    content, actual, sparse = min(results, key=lambda r: len(r[0]))
    if len(results) > 1 and not sparse:
        notes.append(
            f"sparse encoding not used: the sparse file ({len(results[0][0]):,} bytes) "
            f"is not smaller than the dense one ({len(content):,} bytes)"
        )
    return content, actual, sparse
