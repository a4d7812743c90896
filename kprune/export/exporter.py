"""Export to TFLite: strip, remove channels, quantize, convert, verify, report.

`export_tflite(model, path, ...)` turns a pruned (or plain) Keras model into a
.tflite file that LiteRT runs, and returns an `ExportReport`: sizes (raw and
gzipped), parameters and MACs before and after channel removal, per-layer
sparsity, the quantization and sparse encoding used, how closely LiteRT's
outputs match Keras', and LiteRT latency on one thread.

The file is written atomically (a temporary file in the destination directory,
then `os.replace`): on any error an existing file at `path` is left as it was.
Running the file in LiteRT (sample inputs, I/O matching, latency) is
`kprune.litert`'s part.
"""

import os
import warnings

import keras

from kprune.export import tf_convert
from kprune.export.convert import convert_best, encodings_to_try, quiet_native_logs, timed
from kprune.export.fixed_shapes import fixed_shapes, takes_dict
from kprune.export.prepare import prepare
from kprune.export.report import ExportReport
from kprune.export.verify import TOLERANCES, keras_outputs, mismatch_message, verification
from kprune.litert import runtime as litert
from kprune.litert import timing
from kprune.quantization.quantize import is_quantize_aware
from kprune.stats import keras_stats as summary_lib
from kprune.utils.atomic import write_bytes
from kprune.utils.files import load_keras_file

QUANTIZATIONS = (None, "dynamic", "float16", "int8")
# What `report.quantization` says of a quantization-aware model's file.
QAT_LABEL = "int8 (QAT ranges)"
_VERIFY_SAMPLES = 64
# Random verification samples total about this many MACs (4 to 16 samples).
_RANDOM_SAMPLE_MACS, _MIN_RANDOM_SAMPLES = 2e9, 4


def _check_arguments(
    path, quantize, representative_data, sparse_encoding, int8_io, latency_runs, tolerance, qat
):
    """Raise on invalid arguments. `qat`: whether the model is quantization
    aware, or None while that is unknown (a path not loaded yet: the checks
    that depend on it wait for `_check_quantization`)."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).endswith(".tflite"):
        raise ValueError(
            f"Argument `path` must be a file path ending in '.tflite'. Received: path={path!r}"
        )
    if quantize not in QUANTIZATIONS:
        raise ValueError(
            f"Argument `quantize` must be one of {QUANTIZATIONS}. Received: quantize={quantize!r}"
        )
    if qat is not None:
        _check_quantization(quantize, representative_data, int8_io, qat)
    if sparse_encoding != "auto" and not isinstance(sparse_encoding, bool):
        raise ValueError(
            "Argument `sparse_encoding` must be 'auto', True or False. "
            f"Received: sparse_encoding={sparse_encoding!r}"
        )
    if not isinstance(int8_io, bool):
        raise ValueError(f"Argument `int8_io` must be True or False. Received: int8_io={int8_io!r}")
    if isinstance(latency_runs, bool) or not isinstance(latency_runs, int) or latency_runs < 1:
        raise ValueError(
            f"Argument `latency_runs` must be an integer >= 1. Received: latency_runs={latency_runs!r}"
        )
    if tolerance is not None and not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ValueError(
            f"Argument `tolerance` must be a number >= 0 or None. Received: tolerance={tolerance!r}"
        )


def _check_quantization(quantize, representative_data, int8_io, qat):
    """The checks that depend on whether the model is quantization aware."""
    if qat and quantize not in (None, "int8"):
        raise ValueError(
            "A quantization-aware model (kprune.quantization) converts to int8 with the ranges it "
            f"learned: pass quantize=None or 'int8'. Received: quantize={quantize!r}"
        )
    if quantize == "int8" and representative_data is None and not qat:
        raise ValueError(
            "Argument `representative_data` is required for quantize='int8' (calibration "
            "inputs: an array, or a callable/iterable of input batches). Received: "
            "representative_data=None"
        )
    if int8_io is True and quantize != "int8" and not qat:
        raise ValueError(
            f"Argument `int8_io` needs quantize='int8'. Received: int8_io=True with "
            f"quantize={quantize!r}"
        )


def export_tflite(
    model,
    path,
    quantize=None,
    representative_data=None,
    sparse_encoding="auto",
    verify=True,
    int8_io=False,
    sample_inputs=None,
    remove_pruned_channels=True,
    measure_latency=True,
    latency_runs=50,
    tolerance=None,
    verbose=False,
    input_shapes=None,
):
    """Convert a (pruned) Keras model to a verified .tflite file.

    Steps: load (if `model` is a path), strip pruning wrappers, remove pruned
    channels (`kprune.remove_channels`), convert with
    `tf.lite.TFLiteConverter.from_keras_model` -- or, for a model whose input
    is a dict (a KerasHub backbone or task), with Keras' own exporter
    (`model.export(format="litert")`) at fixed input shapes and LiteRT's
    builtin ops only (`kprune.export.convert`) --, run the result in LiteRT and
    compare with Keras, write the file atomically, time it. On the JAX or
    PyTorch backend these steps run in a TensorFlow-backend subprocess on the
    model saved as .keras (`kprune.export.tf_convert`); the result is the same.

    Args:
        model: a Keras model (wrapped by `prune_low_magnitude`, channel-pruned,
            or plain) or a path to a .keras file (loaded with `safe_mode=True`).
        path: where to write; must end in ".tflite" and must not be the
            source .keras file. Its directory must exist.
        quantize: None (default: float32), "dynamic" (int8 weights, float
            activations), "float16" (float16 weights) or "int8" (full integer,
            calibrated on `representative_data`). A quantization-aware model
            (`kprune.quantization.quantize_model`) is converted to int8 with
            the ranges it learned, without calibration, whether `quantize` is
            None or "int8" (`report.quantization` is "int8 (QAT ranges)").
        representative_data: inputs for int8 calibration (required then,
            except for a quantization-aware model): an
            array (one input), a list or dict (by input name) of arrays, or a
            callable/iterable yielding such batches (`tf.data` works), read into
            memory once. For other quantizations, used only as verification
            inputs. Defaults to None.
        sparse_encoding: "auto" (default): when at least half the model's
            parameters are 0, also convert with TFLite's sparse weight format
            and keep that file if LiteRT runs it and it is smaller than the
            dense one; `report.notes` says why it was not kept. True: always
            the sparse format (RuntimeError if LiteRT cannot run it -- XNNPACK
            rejects sparse int8 and dynamic-range files). False: never.
        verify: run the file in LiteRT on all sample inputs and compare with
            the exported Keras model. Defaults to True. (With False it still
            runs once: a file LiteRT cannot run is never written.)
        int8_io: with quantize="int8" (or a quantization-aware model), make
            the file's inputs and outputs int8 too (callers quantize them).
            Defaults to False (float32 I/O).
        sample_inputs: verification inputs, in the forms `representative_data`
            accepts. Defaults to None: the first 64 representative samples,
            else 16 seeded standard-normal samples (fewer for models above
            125M MACs per sample, so that they total about 2G MACs; at least 4).
        remove_pruned_channels: physically remove channels no layer reads
            (after `mask_channels`); skipped, with a note, for subclassed
            models. Defaults to True.
        measure_latency: time LiteRT on one thread (5 warm-up invokes, then
            the median of `latency_runs`). Defaults to True.
        latency_runs: timed invokes. Defaults to 50.
        verbose: show the converter's and LiteRT's native log lines (kept
            off the terminal by default). Defaults to False.
        tolerance: verification passes when, for each output, max |LiteRT -
            Keras| (int8: the mean, after dequantizing) is at most `tolerance`
            times that output's largest |Keras value|. Defaults to None: 1e-3
            for float32, 1e-2 for float16 and quantization-aware models (whose
            Keras outputs simulate the file's), 5e-2 for dynamic and int8.
        input_shapes: the fixed input shapes the file is exported at,
            without the batch axis: `{input name: shape}` or one shape per
            input (`{"token_ids": (128,), "padding_mask": (128,)}` for a
            causal LM at 128 tokens). Needed for a model whose inputs have
            unknown axes (a KerasHub model's sequence length) unless
            `sample_inputs` or `representative_data` give them; parameters
            and MACs are counted at them. Defaults to None (the model's own
            shapes, or the samples').

    Returns:
        An `ExportReport`. A verification outside tolerance does not raise: it
        sets `report.verified = False` and issues a `RuntimeWarning`.

    Raises:
        ValueError: invalid arguments (named in the message), an unreadable
            .keras file, or conversion to TFLite failing.
        FileNotFoundError: `model` is a path that does not exist, or the
            directory of `path` does not exist.
        RuntimeError: LiteRT cannot run the converted file.

    Example:

    >>> import os, tempfile, keras, kprune
    >>> model = kprune.prune_low_magnitude(keras.Sequential(
    ...     [keras.Input((32,)), keras.layers.Dense(16), keras.layers.Dense(4)]))
    >>> kprune.update_masks(model, sparsity=0.8)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.tflite")
    >>> report = export_tflite(model, path, latency_runs=5)
    >>> report.verified, report.sparse_encoding, round(report.sparsity, 1)
    (True, True, 0.8)
    """
    loaded = isinstance(model, keras.Model)
    _check_arguments(
        path, quantize, representative_data, sparse_encoding, int8_io, latency_runs, tolerance,
        qat=is_quantize_aware(model) if loaded else None,
    )
    path = os.fspath(path)
    timings = {}
    model = _load(model, path)
    qat = is_quantize_aware(model)
    if not loaded:
        _check_quantization(quantize, representative_data, int8_io, qat)
    if tf_convert.needs_subprocess():
        # TFLite's converter needs TensorFlow: the same steps, in a
        # TensorFlow-backend subprocess, on the model saved as .keras.
        report = ExportReport.from_dict(tf_convert.export_on_tensorflow(model, path, dict(
            quantize=quantize, representative_data=representative_data,
            sparse_encoding=sparse_encoding, verify=verify, int8_io=int8_io,
            sample_inputs=sample_inputs, remove_pruned_channels=remove_pruned_channels,
            measure_latency=measure_latency, latency_runs=latency_runs, tolerance=tolerance,
            verbose=verbose, input_shapes=_json_shapes(input_shapes),
        )))
        if report.verified is False:
            warnings.warn(mismatch_message(report.verification), RuntimeWarning, stacklevel=2)
        return report
    notes = []
    if qat:
        # The converter reads the fake-quantization ranges the model learned.
        notes.append("int8 from the quantization-aware model's ranges: no calibration"
                     + (" (representative_data only verifies)" if representative_data is not None else ""))
        if remove_pruned_channels:
            notes.append("channels not removed: a quantization-aware model is exported as trained "
                         "(remove channels before quantize_model)")
        quantize, remove_pruned_channels = "qat", False
    tolerance = TOLERANCES[quantize] if tolerance is None else float(tolerance)
    shapes = fixed_shapes(model, input_shapes, sample_inputs, representative_data)
    before = summary_lib.layer_stats(model, shapes)
    calibration, samples = _sample_sets(
        model, quantize, representative_data, sample_inputs, sum(r.macs for r in before), shapes
    )

    exported, removed = prepare(model, remove_pruned_channels, notes, timings)
    rows = summary_lib.layer_stats(exported, shapes)
    params, nonzero = sum(r.params for r in rows), sum(r.nonzero for r in rows)
    sparsity = 1.0 - nonzero / params if params else 0.0

    checked = samples if verify else samples[:1]  # always run it once
    candidates = encodings_to_try(sparse_encoding, quantize, sparsity, notes)
    content, actual, sparse = convert_best(
        model.name, exported, candidates, sparse_encoding, checked, notes, timings,
        dict(quantize=quantize, calibration=calibration, int8_io=int8_io, verbose=verbose,
             input_shapes=shapes),
    )
    checked_figures = verified = None
    if verify:
        with timed(timings, "verify"):
            names = litert.io_names(exported)[0] if takes_dict(exported) else None
            expected = keras_outputs(exported, samples, names)
        checked_figures = verification(expected, actual, quantize, tolerance, samples)
        verified = checked_figures["passed"]
        if not verified:
            warnings.warn(mismatch_message(checked_figures), RuntimeWarning, stacklevel=2)
    with timed(timings, "write"):
        write_bytes(path, content)
    latency = None
    if measure_latency:
        with timed(timings, "latency"), quiet_native_logs(not verbose):
            latency = timing.latency_ms(path, litert.io_names(exported), samples[0], latency_runs)
    return ExportReport(
        path=path, file_bytes=len(content),
        params=int(params), nonzero_params=int(nonzero), macs=int(sum(r.macs for r in rows)),
        params_before=int(sum(r.params for r in before)),
        macs_before=int(sum(r.macs for r in before)), layers=rows,
        quantization=QAT_LABEL if qat else quantize or "float32", int8_io=bool(int8_io), sparse_encoding=bool(sparse),
        channels_removed=bool(removed and params < sum(r.params for r in before)),
        verification=checked_figures, verified=verified, latency_ms=latency, notes=notes,
        timings={k: round(v, 4) for k, v in timings.items()},
    )


# ------------------------------------------------------------------- steps


def _load(model, path):
    """The Keras model to export (loaded if `model` is a path), checked
    against `path` (never overwrite the source)."""
    if isinstance(model, (str, os.PathLike)):
        source = os.fspath(model)
        if os.path.exists(path) and os.path.exists(source) and os.path.samefile(source, path):
            raise ValueError(
                f"Argument `path` is the source model file '{source}': refusing to overwrite it."
            )
        model = load_keras_file(source, "model")
    elif not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a Keras model or a path to a .keras file. "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Argument `path`: directory '{directory}' does not exist.")
    return model


def _json_shapes(input_shapes):
    """`input_shapes` as JSON data (the TensorFlow worker gets them as lists)."""
    if isinstance(input_shapes, dict):
        return {k: [int(d) for d in v] for k, v in input_shapes.items()}
    if isinstance(input_shapes, (list, tuple)) and input_shapes and isinstance(input_shapes[0], (list, tuple)):
        return [[int(d) for d in v] for v in input_shapes]
    return None if input_shapes is None else [int(d) for d in input_shapes]


def _sample_sets(model, quantize, representative_data, sample_inputs, macs, shapes=None):
    """`(calibration, verification samples)` as lists of batch-1 samples."""
    specs = litert.input_specs(model)
    if shapes is not None:  # random samples at the fixed shapes
        specs = [(name, (None,) + tuple(shapes[name]), dtype) for name, _, dtype in specs]
    calibration = None
    if quantize == "int8":
        calibration = litert.to_samples(representative_data, specs, "representative_data")
    if sample_inputs is not None:
        samples = litert.to_samples(sample_inputs, specs, "sample_inputs")
    elif representative_data is not None:
        samples = calibration or litert.to_samples(representative_data, specs, "representative_data")
        samples = samples[:_VERIFY_SAMPLES]
    else:
        count = max(_MIN_RANDOM_SAMPLES, min(litert.RANDOM_SAMPLES, int(_RANDOM_SAMPLE_MACS // max(macs, 1))))
        samples = litert.random_samples(specs, count)
    return calibration, samples
