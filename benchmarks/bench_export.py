#!/usr/bin/env python
"""Export: TFLite size, accuracy and latency of a pruned MNIST CNN.

The tfmot tutorial's MNIST CNN (Conv2D 32@5x5 + MaxPool, Conv2D 64@5x5 +
MaxPool, Dense 1024, Dense 10; 3,274,634 parameters) is trained on
scikit-learn's digits, resized from 8x8 to 28x28 (`tf.image.resize`,
bilinear; `kprune.cli.demo.load_digits_data` split, seed 0: 1437 training and 360
test images). Then, each exported with `kprune.export_tflite` (verified against
Keras in LiteRT on 64 test images) and evaluated on the whole test set both in
Keras and in LiteRT:

a. dense, float32;
b. 90% unstructured sparsity: `kprune.prune_low_magnitude` with
   `kprune.PolynomialDecay(0.5 -> 0.9)` (frequency 10, final sparsity reached
   at 60% of the fine-tuning steps), fine-tuned with
   `kprune.UpdatePruningStep`; float32 with `sparse_encoding="auto"` (TFLite's
   sparse format when LiteRT runs it) and with dense encoding. The export
   also removes the Dense units whose outgoing weights are all pruned
   (`remove_pruned_channels=True`, outputs unchanged), hence fewer params;
c. the same, quantized: "int8" (full integer, float inputs/outputs,
   calibrated on 256 training images) and "dynamic" (int8 weights), both
   with dense encoding (XNNPACK rejects sparse quantized files);
d. structured: `kprune.plan_channels(dense, 0.5, importance="l2",
   round_to=8)` + `kprune.remove_channels` (32/64/1024 -> 16/32/512 channels),
   fine-tuned; float32 and int8.

For reference (full runs; `--tfmot`/`--no-tfmot` override), the same
pipeline in tfmot 0.8.1 on tf_keras in a subprocess with
`TF_USE_LEGACY_KERAS=1`, starting from the same dense weights:
`prune_low_magnitude` with the same schedule, the same fine-tuning,
`strip_pruning`, `tf.lite.TFLiteConverter` (float32, dynamic, int8 with the
same calibration images); sizes gzipped at level 9 like `ExportReport`'s.

Latency: every .tflite file is loaded into its own LiteRT interpreter (1
thread, batch 1) and, after warm-up, they run in interleaved rounds (~30 ms
each, the order rotated and reversed every round) until each has run for the
time budget, so that load from other processes hits all of them alike; the
median and 10th percentile per invoke are reported. The dense file also runs
in a second interpreter, as a noise check (their ratio should be 1.00);
speedups divide the median of both dense interpreters' invokes pooled.
`export_tflite`'s own
figure (`report.latency_ms`: median of 50 invokes, measured right after each
export, not interleaved) is in the JSON as `report_latency_ms`.

Goals (issue 4): gzip <= 2 MB for 90% float32, <= 0.5 MB for 90% int8 (and
dynamic); every step's test accuracy, Keras and LiteRT, within 1 point of the
dense Keras model's.

Usage:
    python benchmarks/bench_export.py [--quick] [--out PATH] [--[no-]tfmot]

`--quick` trains fewer epochs, times latency for less long and skips tfmot
(about 1 minute); the full run takes about 4 minutes on 2 cores. Prints progress to stderr, the
tables to stdout, and writes JSON to `benchmarks/results/export.json` (or
`--out`).
"""

import argparse
import contextlib
import gzip
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "export.json")
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from bench_io import write_json  # noqa: E402
from bench_training import build_cnn  # noqa: E402  (one definition of the CNN)

SPARSITY = (0.5, 0.9)  # PolynomialDecay initial -> final
CHANNEL_SPARSITY = 0.5
ROUND_TO = 8
GOAL_FP32_GZIP = 2_000_000
GOAL_INT8_GZIP = 500_000
GOAL_ACCURACY_DROP = 0.01
SEED = 0
NOISE_CONTROL = "dense_fp32_again"

FULL = {"dense_epochs": 8, "prune_epochs": 8, "structured_epochs": 6, "batch_size": 32,
        "frequency": 10, "calibration": 256, "latency_budget_s": 3.0, "latency_warmup": 10}
QUICK = {"dense_epochs": 3, "prune_epochs": 3, "structured_epochs": 2, "batch_size": 32,
         "frequency": 10, "calibration": 128, "latency_budget_s": 0.5, "latency_warmup": 5}
LEARNING_RATE = {"dense": 1e-3, "finetune": 5e-4}


def log(msg):
    print(f"[bench_export {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def mb(n):
    return "n/a" if n is None else f"{n / 1e6:.3f} MB"


# ----------------------------------------------------------------------- data
def load_data():
    """Digits at 28x28x1 in [0, 1]: `(x_train, y_train, x_test, y_test)`."""
    import numpy as np
    import tensorflow as tf

    from kprune.cli.demo import load_digits_data

    tf.get_logger().setLevel("ERROR")  # predict() on several models warns about retracing

    x_train, y_train, x_test, y_test = load_digits_data(seed=SEED)

    def resize(x):
        return np.asarray(tf.image.resize(x, (28, 28), method="bilinear"), np.float32)

    return resize(x_train), y_train, resize(x_test), y_test


def schedule_steps(cfg, n_train):
    """Steps of the pruning fine-tune and the schedule's end step (a multiple
    of the frequency, so tfmot applies the final sparsity too)."""
    steps = math.ceil(n_train / cfg["batch_size"]) * cfg["prune_epochs"]
    f = cfg["frequency"]
    return steps, max(f, int(0.6 * steps) // f * f)


def compile_model(keras, model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def keras_accuracy(model, x, y):
    import numpy as np

    return float(np.mean(np.argmax(model.predict(x, batch_size=128, verbose=0), -1) == y))


# --------------------------------------------------------------------- LiteRT
def tflite_accuracy(path, x, y, batch=60):
    """Test accuracy of a .tflite file in LiteRT (float inputs/outputs)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=1)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    predictions = []
    for start in range(0, len(x), batch):
        xb = x[start:start + batch]
        if tuple(inp["shape"]) != xb.shape:
            interp.resize_tensor_input(inp["index"], xb.shape)
            interp.allocate_tensors()
            inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        interp.set_tensor(inp["index"], xb.astype(np.float32))
        interp.invoke()
        predictions.append(np.argmax(interp.get_tensor(out["index"]), -1))
    return float(np.mean(np.concatenate(predictions) == y))


class Runner:
    """One LiteRT interpreter (1 thread, batch 1) and its invoke times."""

    def __init__(self, name, path, x):
        from ai_edge_litert.interpreter import Interpreter

        self.name = name
        self.interpreter = Interpreter(model_path=path, num_threads=1)
        self.interpreter.allocate_tensors()
        self.interpreter.set_tensor(self.interpreter.get_input_details()[0]["index"], x)
        self.times, self.per_round = [], 1

    def run(self, n, record=True):
        invoke, clock = self.interpreter.invoke, time.perf_counter
        for _ in range(n):
            t = clock()
            invoke()
            if record:
                self.times.append(clock() - t)


def interleaved_latency(files, x, cfg):
    """`({name: {"ms", "p10_ms", "invokes"}}, rounds, {name: [seconds]})` for
    `files` (`{name: path}`): after warm-up, rounds of ~30 ms per model, the
    order rotated and reversed every round, until every model has run
    `latency_budget_s` seconds (and at least 20 invokes)."""
    runners = [Runner(name, path, x[:1]) for name, path in files.items()]
    for r in runners:
        r.run(1, record=False)  # the first invoke packs (or densifies) the weights
        t = time.perf_counter()
        r.run(cfg["latency_warmup"], record=False)
        r.per_round = max(1, round(0.03 * cfg["latency_warmup"] / (time.perf_counter() - t)))
    spent = {r.name: 0.0 for r in runners}
    k = 0
    while min(spent.values()) < cfg["latency_budget_s"] or min(len(r.times) for r in runners) < 20:
        order = runners[k % len(runners):] + runners[:k % len(runners)]
        for r in (order if k % 2 == 0 else order[::-1]):
            t = time.perf_counter()
            r.run(r.per_round)
            elapsed = time.perf_counter() - t
            spent[r.name] += elapsed
            r.per_round = max(1, round(0.03 * r.per_round / elapsed))  # keep rounds ~30 ms
        k += 1
    return {r.name: latency_stats(r.times) for r in runners}, k, {r.name: r.times for r in runners}


def latency_stats(times_s):
    ms = sorted(t * 1e3 for t in times_s)
    return {"ms": statistics.median(ms), "p10_ms": ms[len(ms) // 10], "invokes": len(ms)}


@contextlib.contextmanager
def quiet():
    """Send fds 1 and 2 to a temporary file (the converter prints the
    SavedModel signature and calibration settings from C++); on an error, or
    for Python warnings, show what was captured."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile("w+") as capture:
        failed = True
        try:
            for fd in (1, 2):
                os.dup2(capture.fileno(), fd)
            yield
            failed = False
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)
            capture.seek(0)
            lines = capture.read().splitlines()
            shown = lines[-30:] if failed else [line for line in lines if "Warning:" in line]
            for line in shown:
                print(f"  | {line}", file=sys.stderr, flush=True)


# -------------------------------------------------------------------- kprune
def export_step(model, path, step, data, cfg, **kwargs):
    """`kprune.export_tflite` + LiteRT accuracy; the step's result dict."""
    import kprune.export

    x_train, _, x_test, y_test = data
    if kwargs.get("quantize") == "int8":
        kwargs["representative_data"] = x_train[:cfg["calibration"]]
    t = time.perf_counter()
    with quiet():
        report = kprune.export.export_tflite(model, path, sample_inputs=x_test[:64], **kwargs)
    export_s = time.perf_counter() - t
    step.update({
        "tflite_accuracy": tflite_accuracy(path, x_test, y_test),
        "file_bytes": report.file_bytes,
        "gzip_bytes": report.gzip_bytes,
        "quantization": report.quantization,
        "sparse_encoding": report.sparse_encoding,
        "params": report.params,
        "nonzero_params": report.nonzero_params,
        "sparsity": report.sparsity,
        "macs": report.macs,
        "params_before": report.params_before,
        "channels_removed": report.channels_removed,
        "verified": report.verified,
        "verification": report.verification,
        "report_latency_ms": report.latency_ms,
        "notes": list(report.notes),
        "export_s": export_s,
        "path": path,
    })
    log(f"  {step['label']}: {report.file_bytes:,} bytes ({report.gzip_bytes:,} gzipped), "
        f"sparse encoding {'yes' if report.sparse_encoding else 'no'}, "
        f"verified {report.verified}, LiteRT accuracy {step['tflite_accuracy']:.4f}, "
        f"export {export_s:.1f}s" + "".join(f"; note: {n}" for n in report.notes))
    return step


def kprune_pipeline(cfg, data, workdir):
    import keras
    import numpy as np

    import kprune

    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(SEED)
    fit = {"batch_size": cfg["batch_size"], "verbose": 0}
    steps, info = [], {}

    def step(key, label, kind, keras_acc, source):
        return {"key": key, "label": label, "kind": kind, "library": "kprune",
                "keras_accuracy": keras_acc, "source": source}

    # a. dense
    log(f"[1/4] dense: training {cfg['dense_epochs']} epochs")
    t = time.perf_counter()
    dense = compile_model(keras, build_cnn(keras), LEARNING_RATE["dense"])
    dense.fit(x_train, y_train, epochs=cfg["dense_epochs"], **fit)
    info["dense_train_s"] = time.perf_counter() - t
    dense_acc = keras_accuracy(dense, x_test, y_test)
    info["dense_params"] = int(dense.count_params())
    log(f"  trained in {info['dense_train_s']:.1f}s; Keras test accuracy {dense_acc:.4f}")
    steps.append(export_step(dense, os.path.join(workdir, "dense.tflite"),
                             step("dense_fp32", "a. dense float32", "dense", dense_acc, "dense"),
                             data, cfg))

    # b. unstructured 90%
    n_steps, end_step = schedule_steps(cfg, len(x_train))
    schedule = kprune.PolynomialDecay(SPARSITY[0], SPARSITY[1], begin_step=0, end_step=end_step,
                                      frequency=cfg["frequency"])
    log(f"[2/4] unstructured: PolynomialDecay {SPARSITY[0]} -> {SPARSITY[1]} over steps 0-{end_step} "
        f"(frequency {cfg['frequency']}), fine-tuning {cfg['prune_epochs']} epochs ({n_steps} steps)")
    t = time.perf_counter()
    pruned = compile_model(keras, kprune.prune_low_magnitude(dense, pruning_schedule=schedule),
                           LEARNING_RATE["finetune"])
    pruned.fit(x_train, y_train, epochs=cfg["prune_epochs"], callbacks=[kprune.UpdatePruningStep()], **fit)
    info["prune_train_s"] = time.perf_counter() - t
    stripped = kprune.strip_pruning(pruned)
    pruned_acc = keras_accuracy(stripped, x_test, y_test)
    kernels = [w for w in stripped.weights if "kernel" in w.path]
    info["unstructured_kernel_sparsity"] = {
        w.path: float(np.mean(keras.ops.convert_to_numpy(w) == 0)) for w in kernels}
    log(f"  fine-tuned in {info['prune_train_s']:.1f}s; Keras test accuracy {pruned_acc:.4f}; kernel "
        "sparsity " + ", ".join(f"{v:.3f}" for v in info["unstructured_kernel_sparsity"].values()))
    # Quantized files are not tried with sparse encoding: XNNPACK rejects
    # sparse int8 and dynamic-range files (`export_tflite`'s docstring), so
    # "auto" would convert twice and fall back to dense encoding.
    for key, label, kwargs in (
        ("unstructured_fp32", "b. 90% float32", {}),
        ("unstructured_fp32_dense_enc", "b. 90% float32, dense encoding", {"sparse_encoding": False}),
        ("unstructured_int8", "c. 90% int8", {"quantize": "int8", "sparse_encoding": False}),
        ("unstructured_dynamic", "c. 90% dynamic", {"quantize": "dynamic", "sparse_encoding": False}),
    ):
        steps.append(export_step(pruned, os.path.join(workdir, f"{key}.tflite"),
                                 step(key, label, "unstructured", pruned_acc, "unstructured"),
                                 data, cfg, **kwargs))

    # d. structured 50% channels
    log(f"[3/4] structured: plan_channels({CHANNEL_SPARSITY}, l2, round_to={ROUND_TO}) on the dense "
        f"model, remove_channels, fine-tune {cfg['structured_epochs']} epochs")
    plan = kprune.plan_channels(dense, CHANNEL_SPARSITY, importance="l2", round_to=ROUND_TO)
    small = compile_model(keras, kprune.remove_channels(dense, plan), LEARNING_RATE["finetune"])
    info["structured_params"] = int(small.count_params())
    info["structured_widths"] = [int(getattr(layer, "filters", None) or layer.units)
                                 for layer in small.layers if hasattr(layer, "filters") or hasattr(layer, "units")]
    info["structured_accuracy_before_finetune"] = keras_accuracy(small, x_test, y_test)
    t = time.perf_counter()
    small.fit(x_train, y_train, epochs=cfg["structured_epochs"], **fit)
    info["structured_train_s"] = time.perf_counter() - t
    small_acc = keras_accuracy(small, x_test, y_test)
    log(f"  widths {info['structured_widths']}, {info['structured_params']:,} params; accuracy "
        f"{info['structured_accuracy_before_finetune']:.4f} after removal, {small_acc:.4f} after "
        f"fine-tuning ({info['structured_train_s']:.1f}s)")
    for key, label, kwargs in (
        ("structured_fp32", "d. 50% channels float32", {}),
        ("structured_int8", "d. 50% channels int8", {"quantize": "int8"}),
    ):
        steps.append(export_step(small, os.path.join(workdir, f"{key}.tflite"),
                                 step(key, label, "structured", small_acc, "structured"),
                                 data, cfg, **kwargs))
    weights = {f"w{i}": w for i, w in enumerate(dense.get_weights())}
    return steps, info, weights


# ---------------------------------------------------------- tfmot (tf_keras)
def tfmot_worker(cfg, data_path, workdir, result_path):
    """The tfmot pipeline, in a process run with TF_USE_LEGACY_KERAS=1."""
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise RuntimeError("the tfmot worker needs TF_USE_LEGACY_KERAS=1")
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    d = np.load(data_path)
    x_train, y_train, x_test, y_test = (d[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    keras.utils.set_random_seed(SEED)
    model = build_cnn(keras)
    model.set_weights([d[f"w{i}"] for i in range(len(model.weights))])
    result = {"tfmot_version": tfmot.__version__ if hasattr(tfmot, "__version__") else None,
              "dense_keras_accuracy": keras_accuracy(model, x_test, y_test)}
    sparsity = tfmot.sparsity.keras
    n_steps, end_step = schedule_steps(cfg, len(x_train))
    schedule = sparsity.PolynomialDecay(SPARSITY[0], SPARSITY[1], begin_step=0, end_step=end_step,
                                        frequency=cfg["frequency"])
    log(f"tfmot: fine-tuning {cfg['prune_epochs']} epochs with the same schedule")
    t = time.perf_counter()
    pruned = compile_model(keras, sparsity.prune_low_magnitude(model, pruning_schedule=schedule),
                           LEARNING_RATE["finetune"])
    pruned.fit(x_train, y_train, batch_size=cfg["batch_size"], epochs=cfg["prune_epochs"], verbose=0,
               callbacks=[sparsity.UpdatePruningStep()])
    result["prune_train_s"] = time.perf_counter() - t
    stripped = sparsity.strip_pruning(pruned)
    result["keras_accuracy"] = keras_accuracy(stripped, x_test, y_test)
    kernels = [w for w in stripped.weights if "kernel" in w.name]
    result["kernel_sparsity"] = {w.name: float(np.mean(w.numpy() == 0)) for w in kernels}
    log(f"tfmot: fine-tuned in {result['prune_train_s']:.1f}s; Keras test accuracy "
        f"{result['keras_accuracy']:.4f}; kernel sparsity "
        + ", ".join(f"{v:.3f}" for v in result["kernel_sparsity"].values()))
    calibration = x_train[:cfg["calibration"]]
    files = {}
    for key, quantize in (("tfmot_fp32", None), ("tfmot_int8", "int8"), ("tfmot_dynamic", "dynamic")):
        converter = tf.lite.TFLiteConverter.from_keras_model(stripped)
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "int8":
            converter.representative_dataset = lambda: ([calibration[i:i + 1]] for i in range(len(calibration)))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        t = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            content = converter.convert()
        path = os.path.join(workdir, f"{key}.tflite")
        with open(path, "wb") as f:
            f.write(content)
        files[key] = {"path": path, "convert_s": time.perf_counter() - t}
        log(f"tfmot: {key} {len(content):,} bytes ({files[key]['convert_s']:.1f}s)")
    result["files"] = files
    with open(result_path, "w") as f:
        json.dump(result, f)


def run_tfmot(cfg, data, weights, workdir, timeout):
    """Run `tfmot_worker` in a subprocess; its result dict, or raise RuntimeError."""
    import numpy as np

    x_train, y_train, x_test, y_test = data
    data_path = os.path.join(workdir, "tfmot_data.npz")
    np.savez(data_path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, **weights)
    result_path = os.path.join(workdir, "tfmot_result.json")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", json.dumps(cfg), data_path, workdir, result_path]
    # Only the worker's progress lines are shown; the rest of its stderr (TF
    # and converter logs) is kept for the error message.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tail = []
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for line in proc.stderr:
            if line.startswith("[bench_export"):
                print(line, end="", file=sys.stderr, flush=True)
            else:
                tail = (tail + [line.rstrip()])[-20:]
        proc.wait()
    finally:
        timer.cancel()
    if not timer.is_alive() and proc.returncode and proc.returncode < 0:
        tail.append(f"killed after the {timeout}s time limit")
    if proc.returncode != 0 or not os.path.exists(result_path):
        raise RuntimeError(f"tfmot worker exited with status {proc.returncode}: " + " | ".join(tail[-5:]))
    with open(result_path) as f:
        return json.load(f)


def tfmot_steps(result, data):
    _, _, x_test, y_test = data
    labels = {"tfmot_fp32": ("b. 90% float32", "float32"), "tfmot_int8": ("c. 90% int8", "int8"),
              "tfmot_dynamic": ("c. 90% dynamic", "dynamic")}
    steps = []
    for key, f in result["files"].items():
        with open(f["path"], "rb") as fh:
            content = fh.read()
        label, quantization = labels[key]
        steps.append({
            "key": key, "label": label, "kind": "unstructured", "library": "tfmot", "source": "tfmot",
            "quantization": quantization, "sparse_encoding": False,
            "keras_accuracy": result["keras_accuracy"],
            "tflite_accuracy": tflite_accuracy(f["path"], x_test, y_test),
            "file_bytes": len(content), "gzip_bytes": len(gzip.compress(content, compresslevel=9)),
            "export_s": f["convert_s"], "path": f["path"],
        })
    return steps


# ------------------------------------------------------------------ analysis
def add_goals(steps, dense_acc):
    """Each step's goals: accuracy (Keras and LiteRT) within 1 point of the
    dense Keras model; gzip size for the 90% float32 and quantized files."""
    for s in steps:
        goals = []
        for which in ("keras", "tflite"):
            acc = s.get(f"{which}_accuracy")
            if acc is not None:
                goals.append({"goal": f"{which} accuracy >= dense - {GOAL_ACCURACY_DROP * 100:.0f} point",
                              "value": acc - dense_acc, "pass": acc >= dense_acc - GOAL_ACCURACY_DROP - 1e-9})
        if s["kind"] == "unstructured" and s["library"] == "kprune":
            limit = GOAL_FP32_GZIP if s["quantization"] == "float32" else GOAL_INT8_GZIP
            goals.append({"goal": f"gzip <= {limit / 1e6:g} MB", "value": s["gzip_bytes"],
                          "pass": s["gzip_bytes"] <= limit})
        s["goals"] = goals
        s["goal_met"] = all(g["pass"] for g in goals)


def add_latency(steps, latency, dense):
    """Latency figures per step; speedups relative to `dense` (the pooled
    invokes of the dense file's two interpreters)."""
    for s in steps:
        lat = latency.get(s["key"])
        if lat:
            s["latency_ms"], s["latency_p10_ms"], s["latency_invokes"] = lat["ms"], lat["p10_ms"], lat["invokes"]
            if dense:
                s["speedup"] = dense["ms"] / lat["ms"]
                s["speedup_p10"] = dense["p10_ms"] / lat["p10_ms"]


def environment():
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    for pkg in ("tensorflow", "keras", "tf_keras", "tensorflow-model-optimization", "ai-edge-litert",
                "numpy", "kprune"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def goal_text(s):
    if not s.get("goals"):
        return ""
    missed = [g["goal"] for g in s["goals"] if not g["pass"]]
    return "yes" if not missed else "NO: " + "; ".join(missed)


def step_rows(steps):
    header = (f"{'step':<32}{'acc keras':>10}{'acc tflite':>11}{'params':>11}{'nonzero':>10}{'MACs':>11}"
              f"{'file bytes':>12}{'gzip bytes':>12}{'latency ms':>11}{'p10 ms':>8}{'speedup':>8}  goal met?")
    lines = [header, "-" * len(header)]
    for s in steps:
        label = s["label"] + (" [sparse enc]" if s.get("sparse_encoding") else "")
        lines.append(
            f"{label:<32}{fmt(s.get('keras_accuracy'), '.4f'):>10}{fmt(s.get('tflite_accuracy'), '.4f'):>11}"
            f"{fmt(s.get('params'), ','):>11}{fmt(s.get('nonzero_params'), ','):>10}{fmt(s.get('macs'), ','):>11}"
            f"{s['file_bytes']:>12,}{s['gzip_bytes']:>12,}{fmt(s.get('latency_ms'), '.3f'):>11}"
            f"{fmt(s.get('latency_p10_ms'), '.3f'):>8}{fmt(s.get('speedup'), '.2f') + 'x':>8}  {goal_text(s)}"
        )
    return lines


def render(result):
    cfg, info = result["config"], result["info"]
    lines = [
        f"TFLite export: MNIST CNN ({info.get('dense_params', 0):,} params) on digits 28x28 "
        f"({result['data']['train']} train / {result['data']['test']} test); "
        f"dense Keras accuracy {result['dense_accuracy']:.4f}",
        f"epochs: dense {cfg['dense_epochs']}, pruning {cfg['prune_epochs']} (PolynomialDecay "
        f"{SPARSITY[0]} -> {SPARSITY[1]}, end step {cfg['end_step']}), structured fine-tune "
        f"{cfg['structured_epochs']}; latency: LiteRT 1 thread, batch 1, interleaved, median "
        f"({cfg['latency_budget_s']}s per model)",
        "",
        "kprune (Keras 3)",
    ]
    lines += step_rows(result["steps"])
    if result.get("tfmot_steps"):
        lines += ["", f"tfmot {result['tfmot'].get('tfmot_version') or ''} (tf_keras), same dense weights "
                  "and schedule (reference; no goals)"]
        lines += step_rows(result["tfmot_steps"])
        by_key = {s["key"]: s for s in result["steps"]}
        pairs = [("float32 (dense encoding)", "unstructured_fp32_dense_enc", "tfmot_fp32"),
                 ("float32 (kprune auto)", "unstructured_fp32", "tfmot_fp32"),
                 ("int8", "unstructured_int8", "tfmot_int8"), ("dynamic", "unstructured_dynamic", "tfmot_dynamic")]
        tf_by_key = {s["key"]: s for s in result["tfmot_steps"]}
        lines.append("gzip bytes kprune / tfmot: " + ", ".join(
            f"{name} {by_key[k]['gzip_bytes'] / tf_by_key[t]['gzip_bytes']:.3f}"
            for name, k, t in pairs if k in by_key and t in tf_by_key))
        lines.append("(kprune's export also removes Dense units no pruned weight reads any more; tfmot keeps them)")
    elif result.get("tfmot_error"):
        lines += ["", f"tfmot: {result['tfmot_error']}"]
    noise = result["latency"]["noise_control"]
    ref = result["latency"]["dense_reference"]
    lines += ["", f"speedup: dense median / median, the dense median ({ref['ms']:.3f} ms, p10 {ref['p10_ms']:.3f}) "
              "pooled over the dense file's two interpreters; p10: 10th percentile ms (less sensitive to other load).",
              f"Noise check, dense vs the same file in its second interpreter: x{noise['speedup']:.2f} "
              f"(p10 x{noise['speedup_p10']:.2f}).",
              "acc keras of an int8/dynamic row is its float Keras model's.",
              f"load average {result['loadavg_start']} -> {result['loadavg_end']}", "", "Goals"]
    for g in result["goals"]:
        lines.append(f"  {'PASS' if g['pass'] else 'MISS'}  {g['goal']}")
    notes = [f"{s['label']}: {n}" for s in result["steps"] for n in s.get("notes", [])]
    if notes:
        lines += ["", "Export notes"] + [f"  {n}" for n in notes]
    lines += [f"ERROR {e}" for e in result["errors"]]
    return "\n".join(lines)


def summary_goals(result):
    out = []
    for s in result["steps"]:
        for g in s.get("goals", []):
            value = g["value"]
            shown = f"{mb(value)}" if "gzip" in g["goal"] else f"{value * 100:+.2f} points"
            out.append({"goal": f"{s['label']}: {g['goal']} ({shown})", "pass": g["pass"]})
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs, shorter timing (smoke run, < 1.5 minutes)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON output path (default: {DEFAULT_OUT})")
    parser.add_argument("--tfmot", action=argparse.BooleanOptionalAction, default=None,
                        help="also run the tfmot (tf_keras) pipeline (default: on in full runs, off with --quick)")
    parser.add_argument("--_worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._worker:
        cfg_json, data_path, workdir, result_path = args._worker
        tfmot_worker(json.loads(cfg_json), data_path, workdir, result_path)
        return 0

    cfg = dict(QUICK if args.quick else FULL)
    t_start = time.perf_counter()
    result = {
        "benchmark": "export", "schema": 1, "quick": args.quick,
        "command": " ".join([os.path.relpath(sys.argv[0]) if sys.argv[0] else "bench_export.py", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_start": [round(v, 2) for v in os.getloadavg()],
        "errors": [],
    }
    log(f"start ({'quick' if args.quick else 'full'} run)")
    data = load_data()
    n_steps, end_step = schedule_steps(cfg, len(data[0]))
    result["config"] = {**cfg, "sparsity": list(SPARSITY), "end_step": end_step, "prune_steps": n_steps,
                        "channel_sparsity": CHANNEL_SPARSITY, "round_to": ROUND_TO, "importance": "l2",
                        "learning_rate": LEARNING_RATE, "seed": SEED, "threads": 1,
                        "goals": {"fp32_gzip_bytes": GOAL_FP32_GZIP, "int8_gzip_bytes": GOAL_INT8_GZIP,
                                  "accuracy_drop": GOAL_ACCURACY_DROP}}
    result["data"] = {"train": len(data[0]), "test": len(data[2]), "shape": [28, 28, 1],
                      "source": "sklearn digits (kprune.cli.demo.load_digits_data, seed 0), tf.image.resize bilinear"}
    log(f"data: {len(data[0])} training and {len(data[2])} test images, 28x28")
    with tempfile.TemporaryDirectory(prefix="bench_export_") as workdir:
        steps, info, weights = kprune_pipeline(cfg, data, workdir)
        result["steps"], result["info"] = steps, info
        result["dense_accuracy"] = steps[0]["keras_accuracy"]
        result["tfmot_steps"], result["tfmot"], result["tfmot_error"] = [], None, None
        if args.tfmot if args.tfmot is not None else not args.quick:
            log("[4/4] tfmot: same pipeline in tf_keras (subprocess, TF_USE_LEGACY_KERAS=1)")
            try:
                tm = run_tfmot(cfg, data, weights, workdir, timeout=300 if args.quick else 900)
                result["tfmot"] = {k: v for k, v in tm.items() if k != "files"}
                result["tfmot_steps"] = tfmot_steps(tm, data)
            except Exception as e:  # the kprune results stand on their own
                result["tfmot_error"] = f"{type(e).__name__}: {e}"
                result["errors"].append(f"tfmot: {result['tfmot_error']}")
                log(f"ERROR {result['tfmot_error']}")
        else:
            log("[4/4] tfmot: skipped (--quick or --no-tfmot; --tfmot runs it)")
        all_steps = steps + result["tfmot_steps"]
        files = {s["key"]: s["path"] for s in all_steps}
        files[NOISE_CONTROL] = files["dense_fp32"]  # a second interpreter of the dense file
        log(f"latency: {len(files)} interpreters, LiteRT 1 thread, interleaved, {cfg['latency_budget_s']}s each")
        latency, rounds, times = interleaved_latency(files, data[2], cfg)
        control = latency[NOISE_CONTROL]
        reference = latency_stats(times["dense_fp32"] + times[NOISE_CONTROL])
        result["latency"] = {
            "method": "interleaved rounds of ~30 ms, order rotated and reversed each round; median per invoke",
            "rounds": rounds, "per_model": latency,
            "dense_reference": {**reference, "what": "both dense interpreters' invokes pooled; speedups divide it"},
            "noise_control": {"what": "the dense file in a second interpreter, timed like the others",
                              "speedup": latency["dense_fp32"]["ms"] / control["ms"],
                              "speedup_p10": latency["dense_fp32"]["p10_ms"] / control["p10_ms"]},
        }
    add_latency(all_steps, latency, reference)
    add_goals(steps, result["dense_accuracy"])
    for s in all_steps:
        s.pop("path", None)
    result["goals"] = summary_goals(result)
    result["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    result["environment"] = environment()
    result["elapsed_s"] = time.perf_counter() - t_start
    write_json(result, args.out)
    print(render(result), flush=True)
    log(f"done in {result['elapsed_s']:.0f}s; wrote {os.path.relpath(args.out)}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
