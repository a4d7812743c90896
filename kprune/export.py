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

import contextlib
import dataclasses
import gzip
import io
import os
import re
import tempfile
import warnings

import keras
import numpy as np

from kprune import stats as summary_lib
from kprune.channels import remove_channels, unread_units
from kprune.graph import ChannelGraph
from kprune.kgraph import is_graph
from kprune import litert
from kprune.pruning import collect_wrappers, strip_pruning

QUANTIZATIONS = (None, "dynamic", "float16", "int8")
# Default verification tolerance per quantization (see `export_tflite`).
TOLERANCES = {None: 1e-3, "dynamic": 5e-2, "float16": 1e-2, "int8": 5e-2}
SPARSITY_FOR_ENCODING = 0.5  # "auto" sparse-encodes from this weight sparsity on
_VERIFY_SAMPLES = 64


@dataclasses.dataclass
class ExportReport:
    """What `export_tflite` wrote, and how it checked it.

    Attributes:
        path: the .tflite file.
        file_bytes / gzip_bytes: its size, raw and gzipped (level 9).
        params / nonzero_params / macs: of the exported Keras model (after
            stripping wrappers and removing channels).
        params_before / macs_before: of the model passed in (masks applied).
        layers: per-layer `LayerStats` of the exported Keras model.
        quantization: "float32", "dynamic", "float16" or "int8".
        int8_io: whether the file's inputs and outputs are int8.
        sparse_encoding: whether weights are stored in TFLite's sparse format.
        channels_removed: whether channels were physically removed (the model
            had channels that no layer reads, and `remove_pruned_channels`).
        verification: a dict of figures (see `export_tflite`), or None.
        verified: whether LiteRT's outputs were within tolerance (None if
            not verified).
        latency_ms: median LiteRT latency of one invoke on one thread, or None.
        notes: fallbacks and skipped steps, with reasons.

    Example:

    >>> report = ExportReport(path="m.tflite", file_bytes=10, gzip_bytes=8,
    ...     params=4, nonzero_params=2, macs=4, params_before=4, macs_before=4)
    >>> report.to_dict()["sparsity"]
    0.5
    """

    path: str
    file_bytes: int
    gzip_bytes: int
    params: int
    nonzero_params: int
    macs: int
    params_before: int
    macs_before: int
    layers: list = dataclasses.field(default_factory=list)
    quantization: str = "float32"
    int8_io: bool = False
    sparse_encoding: bool = False
    channels_removed: bool = False
    verification: dict = None
    verified: bool = None
    latency_ms: float = None
    notes: list = dataclasses.field(default_factory=list)

    @property
    def sparsity(self):
        return 1.0 - self.nonzero_params / self.params if self.params else 0.0

    def to_dict(self):
        """Plain Python data: `json.dumps(report.to_dict())` works."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["layers"] = [summary_lib.row_dict(r) for r in self.layers]
        data["notes"] = list(self.notes)
        data["verification"] = dict(self.verification) if self.verification else None
        data["sparsity"] = float(self.sparsity)
        return data

    def __str__(self):
        check = "not run"
        if self.verification:
            v = self.verification
            check = f"{'passed' if self.verified else 'FAILED'}: max |diff| {v['max_abs_error']:.3g}, "
            check += f"mean |diff| {v['mean_abs_error']:.3g}"
            if v["top1_agreement"] is not None:
                check += f", top-1 agreement {v['top1_agreement']:.1%}"
            check += f" ({v['samples']} samples)"
        lines = [
            f"TFLite export: {self.path}",
            f"  size            {self.file_bytes:,} bytes ({self.gzip_bytes:,} gzipped)",
            f"  quantization    {self.quantization}{' (int8 inputs/outputs)' if self.int8_io else ''}",
            f"  sparse encoding {'yes' if self.sparse_encoding else 'no'}",
            f"  parameters      {self.params:,} ({self.nonzero_params:,} nonzero, "
            f"{self.sparsity:.1%} sparse); before export {self.params_before:,}",
            f"  MACs            {self.macs:,}; before export {self.macs_before:,}",
            f"  verification    {check}",
            "  latency         " + (
                "not measured" if self.latency_ms is None
                else f"{self.latency_ms:.3f} ms (LiteRT, 1 thread)"),
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n" + summary_lib.format_rows(self.layers)


def _check_arguments(
    path, quantize, representative_data, sparse_encoding, int8_io, latency_runs, tolerance
):
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).endswith(".tflite"):
        raise ValueError(
            f"Argument `path` must be a file path ending in '.tflite'. Received: path={path!r}"
        )
    if quantize not in QUANTIZATIONS:
        raise ValueError(
            f"Argument `quantize` must be one of {QUANTIZATIONS}. Received: quantize={quantize!r}"
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "Argument `representative_data` is required for quantize='int8' (calibration "
            "inputs: an array, or a callable/iterable of input batches). Received: "
            "representative_data=None"
        )
    if sparse_encoding != "auto" and not isinstance(sparse_encoding, bool):
        raise ValueError(
            "Argument `sparse_encoding` must be 'auto', True or False. "
            f"Received: sparse_encoding={sparse_encoding!r}"
        )
    if not isinstance(int8_io, bool):
        raise ValueError(f"Argument `int8_io` must be True or False. Received: int8_io={int8_io!r}")
    if int8_io and quantize != "int8":
        raise ValueError(
            f"Argument `int8_io` needs quantize='int8'. Received: int8_io=True with "
            f"quantize={quantize!r}"
        )
    if isinstance(latency_runs, bool) or not isinstance(latency_runs, int) or latency_runs < 1:
        raise ValueError(
            f"Argument `latency_runs` must be an integer >= 1. Received: latency_runs={latency_runs!r}"
        )
    if tolerance is not None and not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ValueError(
            f"Argument `tolerance` must be a number >= 0 or None. Received: tolerance={tolerance!r}"
        )


# ---------------------------------------------------------------- verification


def _keras_outputs(model, samples):
    batch = [np.concatenate(xs) for xs in zip(*samples)]
    ys = model(batch if len(batch) > 1 else batch[0], training=False)
    return [np.asarray(keras.ops.convert_to_numpy(y), np.float64) for y in keras.tree.flatten(ys)]


def _verification(expected, actual, quantize, tolerance, samples):
    """Figures comparing LiteRT with Keras; each output is judged against its own scale."""
    diffs = [np.abs(e - a) for e, a in zip(expected, actual)]
    name, stat = ("mean", np.mean) if quantize == "int8" else ("max", np.max)
    relative = max(
        float(stat(d)) / max(float(np.max(np.abs(e))), 1e-12) for d, e in zip(diffs, expected)
    )
    agree = [float(np.mean(np.argmax(e, -1) == np.argmax(a, -1)))
             for e, a in zip(expected, actual) if e.shape[-1] > 1]
    return {
        "samples": len(samples),
        "max_abs_error": max(float(d.max()) for d in diffs),
        "mean_abs_error": float(np.mean(np.concatenate([d.ravel() for d in diffs]))),
        "relative_error": relative,
        "top1_agreement": min(agree) if agree else None,
        "criterion": f"{name} |diff| / max |Keras output| <= {tolerance:g} for each output",
        "passed": relative <= tolerance,
    }


# ---------------------------------------------------------------- conversion


def _convert(model, quantize, calibration, sparse, int8_io):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = [tf.lite.Optimize.DEFAULT] if quantize else []
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.representative_dataset = lambda: iter(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    # The converter prints the intermediate SavedModel's signature: keep it quiet.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


def _conversion_error(error, model):
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


def _write_atomic(path, content):
    """Write via a temporary file in the same directory and `os.replace`, so
    `path` holds either its old content or all of `content`. The file gets the
    old file's permissions, or those `open` would give a new one."""
    if os.path.isfile(path):
        mode = os.stat(path).st_mode & 0o777
    else:
        umask = os.umask(0o022)
        os.umask(umask)
        mode = 0o666 & ~umask
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _prepare(model, remove_pruned_channels, notes):
    """The plain Keras model to convert: wrappers stripped, channels removed."""
    if not is_graph(model):
        if collect_wrappers(model):
            notes.append(f"pruning wrappers kept: subclassed model '{model.name}' cannot be cloned")
        if remove_pruned_channels:
            notes.append(f"channels not removed: subclassed model '{model.name}' has no layer graph")
        notes.append("MACs not counted: a subclassed model's layer shapes are unknown")
        return model, False
    if collect_wrappers(model):
        model = strip_pruning(model)
    if not remove_pruned_channels:
        return model, False
    # Rebuild the model only when some channel is unread: a plain model with
    # nothing to remove converts as it is (custom layers need not clone).
    if not unread_units(ChannelGraph(model)):
        return model, False
    return remove_channels(model), True


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
):
    """Convert a (pruned) Keras model to a verified .tflite file.

    Steps: load (if `model` is a path), strip pruning wrappers, remove pruned
    channels (`kprune.remove_channels`), convert with
    `tf.lite.TFLiteConverter.from_keras_model`, run the result in LiteRT and
    compare with Keras, write the file atomically, time it.

    Args:
        model: a Keras model (wrapped by `prune_low_magnitude`, channel-pruned,
            or plain) or a path to a .keras file (loaded with `safe_mode=True`).
        path: where to write; must end in ".tflite" and must not be the
            source .keras file. Its directory must exist.
        quantize: None (default: float32), "dynamic" (int8 weights, float
            activations), "float16" (float16 weights) or "int8" (full integer,
            calibrated on `representative_data`).
        representative_data: inputs for int8 calibration (required then): an
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
        int8_io: with quantize="int8", make the file's inputs and outputs int8
            too (callers quantize them). Defaults to False (float32 I/O).
        sample_inputs: verification inputs, in the forms `representative_data`
            accepts. Defaults to None: the first 64 representative samples,
            else 16 seeded standard-normal samples.
        remove_pruned_channels: physically remove channels no layer reads
            (after `mask_channels`); skipped, with a note, for subclassed
            models. Defaults to True.
        measure_latency: time LiteRT on one thread (5 warm-up invokes, then
            the median of `latency_runs`). Defaults to True.
        latency_runs: timed invokes. Defaults to 50.
        tolerance: verification passes when, for each output, max |LiteRT -
            Keras| (int8: the mean, after dequantizing) is at most `tolerance`
            times that output's largest |Keras value|. Defaults to None: 1e-3
            for float32, 1e-2 for float16, 5e-2 for dynamic and int8.

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
    _check_arguments(
        path, quantize, representative_data, sparse_encoding, int8_io, latency_runs, tolerance
    )
    path = os.fspath(path)
    if isinstance(model, (str, os.PathLike)):
        source = os.fspath(model)
        if os.path.exists(path) and os.path.exists(source) and os.path.samefile(source, path):
            raise ValueError(
                f"Argument `path` is the source model file '{source}': refusing to overwrite it."
            )
        model = summary_lib.load_keras_file(source, "model")
    elif not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a Keras model or a path to a .keras file. "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Argument `path`: directory '{directory}' does not exist.")
    tolerance = TOLERANCES[quantize] if tolerance is None else float(tolerance)
    specs = litert.input_specs(model)
    calibration = None
    if quantize == "int8":
        calibration = litert.to_samples(representative_data, specs, "representative_data")
    if sample_inputs is not None:
        samples = litert.to_samples(sample_inputs, specs, "sample_inputs")
    elif representative_data is not None:
        samples = calibration or litert.to_samples(representative_data, specs, "representative_data")
        samples = samples[:_VERIFY_SAMPLES]
    else:
        samples = litert.random_samples(specs)

    notes = []
    before = summary_lib.layer_stats(model)
    exported, removed = _prepare(model, remove_pruned_channels, notes)
    rows = summary_lib.layer_stats(exported)
    io_names = litert.io_names(exported)
    params, nonzero = sum(r.params for r in rows), sum(r.nonzero for r in rows)
    params_before = sum(r.params for r in before)
    sparsity = 1.0 - nonzero / params if params else 0.0

    def convert(sparse):
        try:
            return _convert(exported, quantize, calibration, sparse, int8_io)
        except Exception as e:
            reason = _conversion_error(e, exported)
            raise ValueError(f"TFLite conversion of model '{model.name}' failed: {reason}") from e

    wants_sparse = sparse_encoding is True or (
        sparse_encoding == "auto" and sparsity >= SPARSITY_FOR_ENCODING)
    if sparse_encoding == "auto" and not wants_sparse:
        notes.append(
            f"sparse encoding not used: weight sparsity {sparsity:.1%} < {SPARSITY_FOR_ENCODING:.0%}"
        )
    checked = samples if verify else samples[:1]  # always run it once
    sparse_content = sparse_actual = None
    if wants_sparse:
        sparse_content = convert(True)
        try:
            sparse_actual = litert.run_samples(sparse_content, io_names, checked)
        except RuntimeError as e:
            if sparse_encoding is True:
                raise RuntimeError(
                    f"LiteRT cannot run the sparse-encoded model ({e}). Use "
                    "sparse_encoding='auto' to fall back to dense weights, or False."
                ) from e
            notes.append(f"sparse encoding fell back to dense: LiteRT cannot run the sparse file ({e})")
    sparse = sparse_encoding is True
    if sparse:
        content, actual = sparse_content, sparse_actual
    else:
        content = convert(False)
        if sparse_actual is not None and len(sparse_content) < len(content):
            sparse, content, actual = True, sparse_content, sparse_actual
        else:
            if sparse_actual is not None:
                notes.append(
                    f"sparse encoding not used: the sparse file ({len(sparse_content):,} bytes) "
                    f"is not smaller than the dense one ({len(content):,} bytes)"
                )
            try:
                actual = litert.run_samples(content, io_names, checked)
            except RuntimeError as e:
                raise RuntimeError(f"LiteRT cannot run the converted model: {e}") from e

    verification = verified = None
    if verify:
        expected = _keras_outputs(exported, samples)
        verification = _verification(expected, actual, quantize, tolerance, samples)
        verified = verification["passed"]
        if not verified:
            warnings.warn(
                f"The TFLite model's outputs differ from Keras': {verification['criterion']} does "
                f"not hold (relative error {verification['relative_error']:.3g}, max |diff| "
                f"{verification['max_abs_error']:.3g}).", RuntimeWarning, stacklevel=2,
            )
    _write_atomic(path, content)
    latency = litert.latency_ms(path, io_names, samples[0], latency_runs) if measure_latency else None
    return ExportReport(
        path=path,
        file_bytes=len(content),
        gzip_bytes=len(gzip.compress(content, compresslevel=9)),
        params=int(params),
        nonzero_params=int(nonzero),
        macs=int(sum(r.macs for r in rows)),
        params_before=int(params_before),
        macs_before=int(sum(r.macs for r in before)),
        layers=rows,
        quantization=quantize or "float32",
        int8_io=bool(int8_io),
        sparse_encoding=bool(sparse),
        channels_removed=bool(removed and params < params_before),
        verification=verification,
        verified=verified,
        latency_ms=latency,
        notes=notes,
    )
