#!/usr/bin/env python
"""Export: TFLite size, accuracy and latency of a pruned MNIST CNN.

The tfmot tutorial's MNIST CNN (Conv2D 32@5x5 + MaxPool, Conv2D 64@5x5 +
MaxPool, Dense 1024, Dense 10; 3,274,634 parameters) is trained on
scikit-learn's digits, resized from 8x8 to 28x28 (bilinear, as
`tf.image.resize`; `common.digits`, seed 0: 1437 training and 360 test
images). Then, each exported with `kprune.export_tflite` (verified against
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

For reference (`--no-tfmot` skips it), the same
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
    python benchmarks/bench_export.py [--quick] [--[no-]tfmot]

`--quick` trains fewer epochs and times latency for less long (about 2
minutes); the full run took 161 s (2026-11-23). tfmot's side needs
tensorflow-model-optimization and tf-keras (`pip install -e ".[bench]"`, or
`KPRUNE_TFMOT_PYTHON=<python with them>`); a quick run without them skips it.
"""

import argparse
import gzip
import math
import os
import sys
import tempfile
import time

import common

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
log = common.logger("bench_export")


def schedule_steps(cfg, n_train):
    """Steps of the pruning fine-tune and the schedule's end step (a multiple
    of the frequency, so tfmot applies the final sparsity too)."""
    steps = math.ceil(n_train / cfg["batch_size"]) * cfg["prune_epochs"]
    f = cfg["frequency"]
    return steps, max(f, int(0.6 * steps) // f * f)


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


# -------------------------------------------------------------------- kprune
def export_step(model, path, step, data, cfg, **kwargs):
    """`kprune.export_tflite` + LiteRT accuracy; the step's result dict."""
    import kprune

    x_train, _, x_test, y_test = data
    if kwargs.get("quantize") == "int8":
        kwargs["representative_data"] = x_train[:cfg["calibration"]]
    t = time.perf_counter()
    with common.quiet():
        report = kprune.export_tflite(model, path, sample_inputs=x_test[:64], **kwargs)
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
    dense = common.compile_classifier(keras, common.mnist_cnn(keras), LEARNING_RATE["dense"])
    dense.fit(x_train, y_train, epochs=cfg["dense_epochs"], **fit)
    info["dense_train_s"] = time.perf_counter() - t
    dense_acc = common.accuracy(dense, x_test, y_test)
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
    pruned = common.compile_classifier(keras, kprune.prune_low_magnitude(dense, pruning_schedule=schedule),
                                       LEARNING_RATE["finetune"])
    pruned.fit(x_train, y_train, epochs=cfg["prune_epochs"], callbacks=[kprune.UpdatePruningStep()], **fit)
    info["prune_train_s"] = time.perf_counter() - t
    stripped = kprune.strip_pruning(pruned)
    pruned_acc = common.accuracy(stripped, x_test, y_test)
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
    small = common.compile_classifier(keras, kprune.remove_channels(dense, plan), LEARNING_RATE["finetune"])
    info["structured_params"] = int(small.count_params())
    info["structured_widths"] = [int(getattr(layer, "filters", None) or layer.units)
                                 for layer in small.layers if hasattr(layer, "filters") or hasattr(layer, "units")]
    info["structured_accuracy_before_finetune"] = common.accuracy(small, x_test, y_test)
    t = time.perf_counter()
    small.fit(x_train, y_train, epochs=cfg["structured_epochs"], **fit)
    info["structured_train_s"] = time.perf_counter() - t
    small_acc = common.accuracy(small, x_test, y_test)
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
def tfmot_worker(cfg):
    """The tfmot pipeline, in a process run with TF_USE_LEGACY_KERAS=1."""
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise RuntimeError("the tfmot worker needs TF_USE_LEGACY_KERAS=1")
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    d, workdir = np.load(cfg["data_path"]), cfg["workdir"]
    x_train, y_train, x_test, y_test = (d[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    keras.utils.set_random_seed(SEED)
    model = common.mnist_cnn(keras)
    model.set_weights([d[f"w{i}"] for i in range(len(model.weights))])
    result = {"tfmot_version": tfmot.__version__ if hasattr(tfmot, "__version__") else None,
              "dense_keras_accuracy": common.accuracy(model, x_test, y_test)}
    sparsity = tfmot.sparsity.keras
    n_steps, end_step = schedule_steps(cfg, len(x_train))
    schedule = sparsity.PolynomialDecay(SPARSITY[0], SPARSITY[1], begin_step=0, end_step=end_step,
                                        frequency=cfg["frequency"])
    log(f"tfmot: fine-tuning {cfg['prune_epochs']} epochs with the same schedule")
    t = time.perf_counter()
    pruned = common.compile_classifier(keras, sparsity.prune_low_magnitude(model, pruning_schedule=schedule),
                                       LEARNING_RATE["finetune"])
    pruned.fit(x_train, y_train, batch_size=cfg["batch_size"], epochs=cfg["prune_epochs"], verbose=0,
               callbacks=[sparsity.UpdatePruningStep()])
    result["prune_train_s"] = time.perf_counter() - t
    stripped = sparsity.strip_pruning(pruned)
    result["keras_accuracy"] = common.accuracy(stripped, x_test, y_test)
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
        with common.quiet():
            content = converter.convert()
        path = os.path.join(workdir, f"{key}.tflite")
        with open(path, "wb") as f:
            f.write(content)
        files[key] = {"path": path, "convert_s": time.perf_counter() - t}
        log(f"tfmot: {key} {len(content):,} bytes ({files[key]['convert_s']:.1f}s)")
    result["files"] = files
    return result


def run_tfmot(cfg, data, weights, workdir, timeout):
    """Run `tfmot_worker` in a subprocess (`TF_USE_LEGACY_KERAS=1`); its result, or raise WorkerError."""
    import numpy as np

    x_train, y_train, x_test, y_test = data
    data_path = os.path.join(workdir, "tfmot_data.npz")
    np.savez(data_path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, **weights)
    return common.run_worker("bench_export.py", "tfmot", {**cfg, "data_path": data_path, "workdir": workdir},
                             timeout=timeout, echo="[bench_export", python=common.tfmot_python(),
                             env=common.child_env(TF_USE_LEGACY_KERAS="1"))


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


def summary_goals(result):
    out = []
    for s in result["steps"]:
        for g in s.get("goals", []):
            value = g["value"]
            shown = f"{value / 1e6:.3f} MB" if "gzip" in g["goal"] else f"{value * 100:+.2f} points"
            out.append({"goal": f"{s['label']}: {g['goal']} ({shown})", "pass": g["pass"]})
    return out


def export_rows(r):
    return [(s, "kprune") for s in r.get("steps") or []] + [(s, "tfmot") for s in r.get("tfmot_steps") or []]


def markdown(r):
    """Sizes, latency and accuracy tables; goals."""
    num, ratio, table = common.num, common.ratio, common.md_table
    cfg, info = r.get("config", {}), r.get("info", {})
    dense = next((s for s in r.get("steps") or [] if s.get("key") == "dense_fp32"), {})
    goals = cfg.get("goals", {})
    lines = [
        f"The tfmot tutorial's MNIST CNN trained on scikit-learn digits resized to 28x28 "
        f"({num((r.get('data') or {}).get('train'), 'd')} train / {num((r.get('data') or {}).get('test'), 'd')} "
        f"test), exported with `kprune.export_tflite`. Unstructured: `prune_low_magnitude` + PolynomialDecay "
        f"{' -> '.join(str(v) for v in cfg.get('sparsity', []))} over {cfg.get('prune_epochs')} epochs; structured: "
        f"`plan_channels({cfg.get('channel_sparsity')}, round_to={cfg.get('round_to')})` + `remove_channels` "
        f"(widths {info.get('structured_widths')}), fine-tuned {cfg.get('structured_epochs')} epochs. gzip at "
        f"level 9. Goals: 90% float32 gzip <= {num((goals.get('fp32_gzip_bytes') or 0) / 1e6, 'g')} MB, int8 <= "
        f"{num((goals.get('int8_gzip_bytes') or 0) / 1e6, 'g')} MB.",
        "", "## Sizes", "",
    ]
    rows = []
    for s, lib in export_rows(r):
        size_goal = [g for g in s.get("goals", []) if "gzip" in g.get("goal", "")]
        rows.append([s.get("label", s.get("key")), lib, s.get("quantization"),
                     "sparse" if s.get("sparse_encoding") else "dense", num(s.get("params"), ","),
                     num(s.get("nonzero_params"), ","), num(s.get("file_bytes"), ","), num(s.get("gzip_bytes"), ","),
                     num(ratio(dense.get("gzip_bytes"), s.get("gzip_bytes")), ".1f", "x"),
                     ("met" if all(g.get("pass") for g in size_goal) else "**missed**") if size_goal else ""])
    lines.append(table(["step", "library", "weights", "encoding", "params:", "nonzero:", "file bytes:",
                        "gzip bytes:", "gzip vs dense:", "size goal"], rows))
    if r.get("tfmot_error"):
        lines += ["", f"tfmot pipeline: {r['tfmot_error']}"]
    if r.get("tfmot_steps"):
        lines += ["", "kprune's export also removes the Dense units that no unpruned weight reads any more "
                  "(`remove_pruned_channels=True`; outputs unchanged), hence its smaller parameter counts; tfmot's "
                  "`strip_pruning` + `TFLiteConverter` keeps them."]
    lat = r.get("latency") or {}
    noise, ref = lat.get("noise_control") or {}, lat.get("dense_reference") or {}
    lines += ["", "## Latency: dense vs unstructured vs structured vs int8", "",
              "LiteRT, 1 thread, batch 1; all files in interleaved rounds "
              f"({lat.get('rounds')} rounds, order rotated and reversed), median and 10th percentile per invoke. "
              "Speedups are relative to the dense float32 file"
              + (f" ({num(ref.get('ms'), '.3f')} ms: the median of its invokes in two interpreters, pooled)"
                 if ref else "")
              + f". Noise check: the dense file's two interpreters differ by x{num(noise.get('speedup'))} "
              f"(p10 x{num(noise.get('speedup_p10'))}); read speedups within about that margin.", ""]
    rows = [[s.get("label", s.get("key")), lib, s.get("kind"), s.get("quantization"), num(s.get("macs"), ","),
             num(s.get("latency_ms"), ".3f"), num(s.get("latency_p10_ms"), ".3f"), num(s.get("speedup"), ".2f", "x"),
             num(s.get("speedup_p10"), ".2f", "x")] for s, lib in export_rows(r) if s.get("latency_ms") is not None]
    lines.append(table(["step", "library", "pruning", "weights", "MACs:", "median ms:", "p10 ms:", "speedup:",
                        "p10 speedup:"], rows))
    dense_acc = r.get("dense_accuracy")
    drop = goals.get("accuracy_drop", GOAL_ACCURACY_DROP)
    lines += ["", "## Accuracy", "",
              f"Test set of {num((r.get('data') or {}).get('test'), 'd')} digits; dense Keras accuracy "
              f"{num(dense_acc, '.4f')}. Goal: every step within {num(drop * 100, 'g')} point of it, in Keras and in "
              "LiteRT (an int8/dynamic row's Keras accuracy is its float model's).", ""]
    rows = []
    for s, lib in export_rows(r):
        ka, ta = s.get("keras_accuracy"), s.get("tflite_accuracy")
        worst = min((a for a in (ka, ta) if a is not None), default=None)
        delta = None if worst is None or dense_acc is None else (worst - dense_acc) * 100
        ok = "" if delta is None else ("yes" if worst >= dense_acc - drop - 1e-9 else "NO")
        rows.append([s.get("label", s.get("key")), lib, num(ka, ".4f"), num(ta, ".4f"), num(delta, "+.2f"), ok])
    lines.append(table(["step", "library", "Keras:", "LiteRT:", "worst - dense (points):", "within goal"], rows))
    lines += ["", "## Goals", "", common.goal_lines(r.get("goals") or [])]
    lines += [f"- ERROR {e}" for e in r.get("errors") or []]
    return "\n".join(lines)


def main(argv=None):
    p = common.add_worker_arguments(common.parser(__doc__))
    p.add_argument("--tfmot", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the tfmot (tf_keras) pipeline (default: on; a quick run skips it when tfmot "
                        "is not installed)")
    args = p.parse_args(argv)
    if args._worker:
        import json

        common.write_worker_result(args._result, tfmot_worker(json.loads(args._config)))
        return 0
    cfg = dict(QUICK if args.quick else FULL)
    run = common.Run("export", args.quick)
    result = {"errors": []}
    x_train, y_train, x_test, y_test = common.digits(28, seed=SEED)
    data = (x_train, y_train, x_test, y_test)
    n_steps, end_step = schedule_steps(cfg, len(x_train))
    result["config"] = {**cfg, "sparsity": list(SPARSITY), "end_step": end_step, "prune_steps": n_steps,
                        "channel_sparsity": CHANNEL_SPARSITY, "round_to": ROUND_TO, "importance": "l2",
                        "learning_rate": LEARNING_RATE, "seed": SEED, "threads": 1,
                        "goals": {"fp32_gzip_bytes": GOAL_FP32_GZIP, "int8_gzip_bytes": GOAL_INT8_GZIP,
                                  "accuracy_drop": GOAL_ACCURACY_DROP}}
    result["data"] = {"train": len(x_train), "test": len(x_test), "shape": [28, 28, 1],
                      "source": "sklearn digits (common.digits(28), seed 0), bilinear as tf.image.resize"}
    log(f"data: {len(x_train)} training and {len(x_test)} test images, 28x28")
    missing = common.tfmot_missing() if args.tfmot else "--no-tfmot"
    with tempfile.TemporaryDirectory(prefix="bench_export_") as workdir:
        steps, info, weights = kprune_pipeline(cfg, data, workdir)
        result["steps"], result["info"] = steps, info
        result["dense_accuracy"] = steps[0]["keras_accuracy"]
        result["tfmot_steps"], result["tfmot"], result["tfmot_error"] = [], None, None
        if missing and (args.quick or not args.tfmot):
            result["tfmot_error"] = f"skipped: {missing}"
            log(f"[4/4] tfmot: skipped ({missing})")
        else:
            log("[4/4] tfmot: same pipeline in tf_keras (subprocess, TF_USE_LEGACY_KERAS=1)")
            try:
                if missing:
                    raise common.WorkerError(missing)
                tm = run_tfmot(cfg, data, weights, workdir, timeout=300 if args.quick else 900)
                result["tfmot"] = {k: v for k, v in tm.items() if k != "files"}
                result["tfmot_steps"] = tfmot_steps(tm, data)
            except common.WorkerError as e:  # the kprune results stand on their own
                result["tfmot_error"] = str(e)
                result["errors"].append(f"tfmot: {e}")
                log(f"ERROR {e}")
        all_steps = steps + result["tfmot_steps"]
        files = {s["key"]: s["path"] for s in all_steps}
        files[NOISE_CONTROL] = files["dense_fp32"]  # a second interpreter of the dense file
        log(f"latency: {len(files)} interpreters, LiteRT 1 thread, interleaved, {cfg['latency_budget_s']}s each")
        runners = [common.Runner(name, path, x_test[:1]) for name, path in files.items()]
        latency, rounds = common.interleave(runners, cfg["latency_budget_s"], cfg["latency_warmup"])
        control = latency[NOISE_CONTROL]
        times = {r.name: r.times for r in runners}
        reference = common.latency_stats(times["dense_fp32"] + times[NOISE_CONTROL])
        result["latency"] = {
            "method": "interleaved rounds of ~30 ms, order rotated and reversed; median per invoke",
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
    run.write(result, markdown(result), "Size and accuracy: the tfmot tutorial's CNN, exported")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
