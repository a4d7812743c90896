#!/usr/bin/env python
"""Channel removal: MACs, parameters and TFLite latency vs channel sparsity.

For a ResNet-like net (64x64x3 input, widths 64/128/256, residual Adds) and
MobileNetV2 (128x128x3, 10 classes), both with seeded random weights and
BatchNormalization statistics calibrated on random data (so activations have
a trained net's scale), and for every channel sparsity and `round_to`:

1. `plan = kprune.plan_channels(model, sparsity, importance="l2", round_to=r)`,
   `masked = kprune.mask_channels(model, plan)`,
   `small = kprune.remove_channels(masked)`;
2. parameters and MACs (`kprune.count_params` / `count_macs`) of both;
3. check: `small`'s outputs equal `masked`'s (max |diff| <= 1e-4 x max(1,
   max |output|)); also the pruned TFLite model's outputs vs `small`'s;
4. float32 TFLite (`tf.lite.TFLiteConverter.from_keras_model`) latency of the
   dense and the pruned model with LiteRT (`ai_edge_litert`, 1 thread): warm-up,
   then interleaved rounds (dense, pruned, pruned, dense, ...) so drifts in
   machine load hit both alike; the median per invoke.

Reported: MAC reduction (dense / pruned MACs), latency speedup (dense / pruned
ms) and their ratio, against the goal speedup >= 0.8 x MAC reduction
(Torch-Pruning's published ResNet-50 figures give ~0.57). Sparsities 0.3 and
0.7 give widths that are not multiples of 8 with `round_to=1` (64 -> 45), 0.5
gives round widths either way; 0.0 (empty plan) is a dense-vs-dense noise check.
Under load from other processes, long invokes are preempted more often than
short ones, which inflates median speedups; the 10th-percentile speedup is
reported beside the median as a load-robust figure.

Usage:
    python benchmarks/bench_channels.py [--quick] [--out PATH]

`--quick` (< 1 minute): sparsity 0.3 with round_to 1 and 8, MobileNetV2 at
96x96, ~0.6 s of timing per pair instead of ~4 s. The full run takes ~5 minutes.

Prints progress to stderr, tables to stdout, and writes JSON to
`benchmarks/results/channels.json` (or `--out`).
"""

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time

from bench_io import write_json  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "channels.json")

GOAL = 0.8  # latency speedup / MAC reduction
TORCH_PRUNING_RESNET50 = 0.57
OUTPUT_TOL = 1e-4

FULL = {"sparsities": [0.0, 0.3, 0.5, 0.7], "round_tos": [1, 8, 16], "mobilenet_size": 128,
        "warmup": 10, "round_s": 0.03, "min_invokes": 50, "budget_s": 4.0}
QUICK = {"sparsities": [0.3], "round_tos": [1, 8], "mobilenet_size": 96,
         "warmup": 5, "round_s": 0.03, "min_invokes": 30, "budget_s": 0.6}


def log(msg):
    print(f"[bench_channels {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------- models
def build_resnet(keras):
    """Stem conv 64 /2, then stages of two basic blocks at widths 64/128/256."""
    layers = keras.layers

    def conv_bn(x, filters, kernel=3, strides=1, relu=True):
        x = layers.Conv2D(filters, kernel, strides, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x) if relu else x

    inputs = keras.Input((64, 64, 3))
    x = conv_bn(inputs, 64, strides=2)
    for stage, width in enumerate((64, 128, 256)):
        for block in range(2):
            strides = 2 if stage and not block else 1
            y = conv_bn(conv_bn(x, width, strides=strides), width, relu=False)
            shortcut = x if strides == 1 and x.shape[-1] == width else conv_bn(x, width, 1, strides, relu=False)
            x = layers.ReLU()(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x), name="resnet_like")


def calibrate(keras, model, rng):
    """Random BN gammas/betas, then moving statistics = the batch statistics of
    one training-mode pass on random images (momentum 0 for that pass)."""
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for bn in bns:
        n = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.2, 1.5, n).astype("float32"))
        bn.beta.assign(rng.normal(0.0, 0.1, n).astype("float32"))
        bn.momentum, bn.saved_momentum = 0.0, bn.momentum
    model(rng.random((16, *model.input_shape[1:]), dtype="float32"), training=True)
    for bn in bns:
        bn.momentum = bn.saved_momentum
        del bn.saved_momentum


def build_models(cfg):
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    rng, size = np.random.default_rng(0), cfg["mobilenet_size"]
    models = [build_resnet(keras), keras.applications.MobileNetV2(
        weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None)]
    for model in models:
        calibrate(keras, model, rng)
    return models


# -------------------------------------------------------------- TFLite/LiteRT
@contextlib.contextmanager
def silenced():
    """Silence fds 1 and 2 (the converter prints the SavedModel signature)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved, devnull = [os.dup(1), os.dup(2)], os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            os.dup2(devnull, fd)
        yield
    finally:
        for fd, old in zip((1, 2), saved):
            os.dup2(old, fd)
        for fd in (*saved, devnull):
            os.close(fd)


def to_tflite(model, path):
    import tensorflow as tf

    with silenced():
        flatbuffer = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    with open(path, "wb") as f:
        f.write(flatbuffer)
    return path


class Runner:
    """A LiteRT interpreter (1 thread) with a fixed input set."""

    def __init__(self, path, x):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=path, num_threads=1)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.interpreter.set_tensor(self.input, x)
        self.times, self.per_round = [], 1

    def output_for(self, x):
        self.interpreter.set_tensor(self.input, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).copy()

    def run(self, n, record=True):
        invoke, clock = self.interpreter.invoke, time.perf_counter
        for _ in range(n):
            t = clock()
            invoke()
            if record:
                self.times.append(clock() - t)


def time_pair(dense, pruned, cfg):
    """Median and 10th-percentile ms per invoke of `dense` and `pruned`.

    After warm-up, the two alternate in short rounds (~`round_s` each, order
    ABBA) until both have `min_invokes` timings and `budget_s` has passed, so
    load from other processes hits both alike."""
    for runner in (dense, pruned):
        runner.times = []
        t = time.perf_counter()
        runner.run(cfg["warmup"], record=False)
        runner.per_round = max(1, round(cfg["round_s"] * cfg["warmup"] / (time.perf_counter() - t)))
    start, r = time.perf_counter(), 0
    while (min(len(dense.times), len(pruned.times)) < cfg["min_invokes"]
           or time.perf_counter() - start < cfg["budget_s"]):
        for runner in ((dense, pruned) if r % 2 == 0 else (pruned, dense)):
            runner.run(runner.per_round)
        r += 1
    stats = []
    for runner in (dense, pruned):
        ms = sorted(t * 1e3 for t in runner.times)
        stats.append({"ms": statistics.median(ms), "p10_ms": ms[len(ms) // 10], "invokes": len(ms)})
    return stats


# ------------------------------------------------------------------ benchmark
def max_diff(a, b):
    """Max |a - b| relative to max(1, max |a|)."""
    import numpy as np

    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(a)))))


def conv_widths(keras, model):
    """Output channels of every Conv2D (not depthwise) layer."""
    return [int(layer.filters) for layer in model.layers
            if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.DepthwiseConv2D)]


def bench_model(model, cfg, workdir):
    """Plan, mask, remove, check and time `model` at every configured
    (sparsity, round_to); returns the model's figures and one row per config."""
    import keras
    import numpy as np

    import kprune
    from kprune.stats.keras_stats import count_macs, count_params

    name = model.name
    x_check = np.random.default_rng(1).random((4, *model.input_shape[1:]), dtype="float32")
    x_time = x_check[:1]
    t = time.perf_counter()
    dense = Runner(to_tflite(model, os.path.join(workdir, f"{name}.tflite")), x_time)
    dense_macs, dense_params = count_macs(model), count_params(model)
    log(f"{name}: {dense_params:,} params, {dense_macs / 1e6:.1f}M MACs; converted in {time.perf_counter() - t:.1f}s")
    result = {"model": name, "input_shape": list(model.input_shape[1:]), "params": dense_params,
              "macs": dense_macs, "widths": conv_widths(keras, model), "rows": []}
    configs = [(s, r) for s in cfg["sparsities"] for r in cfg["round_tos"] if s > 0 or r == cfg["round_tos"][0]]
    for k, (sparsity, round_to) in enumerate(configs):
        t = time.perf_counter()
        plan = kprune.plan_channels(model, sparsity, importance="l2", round_to=round_to)
        masked = kprune.mask_channels(model, plan)
        small = kprune.remove_channels(masked)
        ref = keras.ops.convert_to_numpy(masked(x_check, training=False))
        out = keras.ops.convert_to_numpy(small(x_check, training=False))
        row = {"sparsity": sparsity, "round_to": round_to, "pruned_channels": plan.num_pruned,
               "params": count_params(small), "macs": count_macs(small),
               "widths": conv_widths(keras, small), "output_diff": max_diff(ref, out)}
        row["outputs_match"] = row["output_diff"] <= OUTPUT_TOL
        pruned = Runner(to_tflite(small, os.path.join(workdir, f"{name}_{k}.tflite")), x_time)
        row["tflite_diff"] = max_diff(out[:1], pruned.output_for(x_time))
        for side, stats in zip(("dense", "pruned"), time_pair(dense, pruned, cfg)):
            row.update({f"{side}_{key}": value for key, value in stats.items()})
        row["mac_reduction"] = dense_macs / row["macs"]
        row["param_reduction"] = dense_params / row["params"]
        row["speedup"] = row["dense_ms"] / row["pruned_ms"]
        row["efficiency"] = row["speedup"] / row["mac_reduction"]
        row["speedup_p10"] = row["dense_p10_ms"] / row["pruned_p10_ms"]
        row["efficiency_p10"] = row["speedup_p10"] / row["mac_reduction"]
        row["widths_mult8"] = float(np.mean([w % 8 == 0 for w in row["widths"]]))
        result["rows"].append(row)
        log(f"{name} [{k + 1}/{len(configs)}] sparsity {sparsity} round_to {round_to}: "
            f"MACs /{row['mac_reduction']:.2f}, {row['dense_ms']:.2f} -> {row['pruned_ms']:.2f} ms "
            f"(x{row['speedup']:.2f}, {row['efficiency']:.2f} of MAC reduction; p10 x{row['speedup_p10']:.2f}), "
            f"out diff {row['output_diff']:.1e}{'' if row['outputs_match'] else ' MISMATCH'}, "
            f"TFLite diff {row['tflite_diff']:.1e} "
            f"({time.perf_counter() - t:.1f}s)")
        del pruned
    return result


def goals(models):
    """Per model and round_to: speedup / MAC reduction at each sparsity > 0,
    from median latencies (the goal) and from 10th percentiles (robust to load)."""
    out = []
    for m in models:
        for r in sorted({row["round_to"] for row in m["rows"]}):
            rows = [row for row in m["rows"] if row["round_to"] == r and row["sparsity"] > 0]
            goal = {"model": m["model"], "round_to": r, "sparsities": [row["sparsity"] for row in rows]}
            for stat, key in (("median", "efficiency"), ("p10", "efficiency_p10")):
                goal[stat] = [row[key] for row in rows]
                goal[f"{stat}_pass"] = bool(rows) and min(goal[stat]) >= GOAL
            out.append(goal)
    return out


# ------------------------------------------------------------------- reporting
def environment():
    from importlib import metadata

    return {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            **{pkg: metadata.version(pkg) for pkg in ("tensorflow", "keras", "ai-edge-litert", "numpy", "kprune")}}


def render(result):
    lines = []
    for m in result["models"]:
        shape = "x".join(str(d) for d in m["input_shape"])
        lines.append(f"{m['model']} ({shape} input): {m['params']:,} params, {m['macs'] / 1e6:.1f}M MACs; "
                     "TFLite fp32, LiteRT 1 thread, median ms")
        header = (f"{'sparsity':>8}{'round_to':>9}{'params':>11}{'MACs (M)':>10}{'MAC red':>9}{'w%8':>6}"
                  f"{'dense ms':>10}{'pruned ms':>10}{'speedup':>9}{'spd/MAC':>9}{'p10 spd':>9}{'out diff':>10}")
        lines += [header, "-" * len(header)]
        for row in m["rows"]:
            lines.append(
                f"{row['sparsity']:>8.2f}{row['round_to']:>9}{row['params']:>11,}{row['macs'] / 1e6:>10.1f}"
                f"{row['mac_reduction']:>8.2f}x{row['widths_mult8'] * 100:>5.0f}%{row['dense_ms']:>10.2f}"
                f"{row['pruned_ms']:>10.2f}{row['speedup']:>8.2f}x{row['efficiency']:>9.2f}{row['speedup_p10']:>8.2f}x"
                f"{row['output_diff']:>10.1e}"
            )
        lines.append("")
    lines += [
        "w%8: share of Conv2D widths that are multiples of 8; spd/MAC: speedup / MAC reduction;",
        "p10 spd: speedup of the 10th-percentile latencies (less sensitive to other load);",
        "out diff: removed vs masked Keras outputs, max |diff| / max(1, max |out|).",
        "",
    ]
    lines.append(f"Goal: speedup >= {GOAL} x MAC reduction at every sparsity > 0 "
                 f"(Torch-Pruning ResNet-50: ~{TORCH_PRUNING_RESNET50}); speedup / MAC reduction per sparsity")
    for g in result["goals"]:
        verdicts = [f"{stat} {'PASS' if g[f'{stat}_pass'] else 'MISS'} "
                    + " / ".join(f"{e:.2f}" for e in g[stat]) for stat in ("median", "p10")]
        sparsities = " / ".join(str(v) for v in g["sparsities"])
        lines.append(f"  {g['model']:<22} round_to={g['round_to']:<3} {verdicts[0]}   {verdicts[1]}   (sparsity {sparsities})")
    control = [f"{m['model']} x{r['speedup']:.2f} (p10 x{r['speedup_p10']:.2f})"
               for m in result["models"] for r in m["rows"] if r["sparsity"] == 0]
    spread = [f"{m['model']} {min(r['dense_ms'] for r in m['rows']):.2f}-{max(r['dense_ms'] for r in m['rows']):.2f} ms"
              for m in result["models"] if m["rows"]]
    lines.append("")
    if control:
        lines.append(f"Noise check, sparsity 0 (empty plan, same architecture): speedup {'; '.join(control)}")
    lines.append(f"Noise: dense median over the pairs: {'; '.join(spread)}; load average "
                 f"{result['loadavg_start']} -> {result['loadavg_end']}")
    return "\n".join(lines + [f"ERROR {e}" for e in result["errors"]])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sparsity 0.3, round_to 1 and 8 (smoke run, < 1 minute)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON output path (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    cfg = dict(QUICK if args.quick else FULL)
    t_start = time.perf_counter()
    result = {
        "benchmark": "channels", "schema": 1, "quick": args.quick,
        "command": " ".join([os.path.relpath(sys.argv[0]) if sys.argv[0] else "bench_channels.py", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {**cfg, "goal": GOAL, "output_tol": OUTPUT_TOL, "importance": "l2", "threads": 1},
        "loadavg_start": [round(v, 2) for v in os.getloadavg()],
    }
    log(f"start ({'quick' if args.quick else 'full'} run)")
    models = build_models(cfg)
    with tempfile.TemporaryDirectory(prefix="bench_channels_") as workdir:
        result["models"] = [bench_model(model, cfg, workdir) for model in models]
    result["errors"] = [
        f"{m['model']} sparsity {row['sparsity']} round_to {row['round_to']}: removed model's outputs "
        f"differ from the masked model's by {row['output_diff']:.2e}"
        for m in result["models"] for row in m["rows"] if not row["outputs_match"]
    ]
    result["goals"] = goals(result["models"])
    result["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    result["environment"] = environment()
    result["elapsed_s"] = time.perf_counter() - t_start
    write_json(result, args.out)
    print(render(result), flush=True)
    log(f"done in {result['elapsed_s']:.0f}s; wrote {os.path.relpath(args.out)}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
