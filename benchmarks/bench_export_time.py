#!/usr/bin/env python
"""Time of `kprune.export_tflite` against `tf.lite.TFLiteConverter` alone.

ResNet50 (`weights=None`, 224x224, float32) is wrapped with
`prune_low_magnitude`, pruned to 50% with `update_masks`, and exported:

- converter: `TFLiteConverter.from_keras_model(m).convert()` on the model
  freshly stripped (strip time not counted): the issue's baseline;
- converter_sparse: the same with `optimizations=[EXPERIMENTAL_SPARSITY]`, the
  conversion that writes the sparse-encoded file `export_tflite` writes;
- export: `kprune.export_tflite(pruned, path, measure_latency=False)` --
  strip, channel removal check, conversion with `sparse_encoding="auto"`,
  verification in LiteRT against Keras on 4 samples, atomic write, gzip figure;
- export + latency: the same with the default `measure_latency=True`
  (50 timed LiteRT runs on one thread).

The variants alternate (2 rounds after one warm-up round), so load changes
affect them alike; the ratio of medians is the figure of issue 16 (goal:
export at most 1.5x the converter alone). The export report's per-phase
timings of the last round are recorded too.

Usage:
    python benchmarks/bench_export_time.py [--quick]

The full run took about 4 minutes (2026-11-30, idle machine). `--quick`
times MobileNetV2 at 96x96 in one round, without warm-up (about 40 s).
"""

import os
import statistics
import sys
import tempfile
import time

import common

GOAL = 1.5
FULL = {"model": "ResNet50", "size": 224, "repeats": 2, "warmup": 1}
QUICK = {"model": "MobileNetV2", "size": 96, "repeats": 1, "warmup": 0}


def markdown(r):
    num = common.num
    median, sizes = r["median_s"], r["bytes"]
    labels = {"converter": "converter (dense file)", "converter_sparse": "converter, sparse encoding",
              "export": "`export_tflite(..., measure_latency=False)`",
              "export_latency": "`export_tflite(...)` (50 timed LiteRT runs)"}
    rows = [[labels[k], num(median[k], ".1f"), num(median[k] / median["converter"], ".2f"), num(sizes[k], ",")]
            for k in labels]
    met = r["export_vs_converter"] <= r["goal"]
    return "\n".join([
        f"{r['model']}, weight sparsity {num(r['weight_sparsity'], '.1%')}, median of {r['repeats']} round(s) after "
        f"{r.get('warmup_rounds', 1)} warm-up round(s) (load average {num(r.get('load_average'), '.1f')}).", "",
        common.md_table(["variant", "median s:", "x converter:", "file bytes:"], rows), "",
        f"Goal (export at most {r['goal']}x the converter alone): {'met' if met else '**missed**'}, "
        f"{r['export_vs_converter']:.2f}x ({r['export_vs_converter_sparse']:.2f}x against the converter call "
        "that writes the same sparse file). Export's phases: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in (r.get("export_phases_s") or {}).items()) + ".",
    ] + [f"- note: {n}" for n in r.get("export_notes") or []])


def main(argv=None):
    args = common.parser(__doc__).parse_args(argv)
    cfg = QUICK if args.quick else FULL
    run = common.Run("export_time", args.quick)
    import keras
    import tensorflow as tf

    import kprune

    size = cfg["size"]
    model = getattr(keras.applications, cfg["model"])(weights=None, input_shape=(size, size, 3))
    pruned = kprune.prune_low_magnitude(model)
    kprune.update_masks(pruned, sparsity=0.5)
    stripped = kprune.strip_pruning(pruned)
    sparsity = 1 - kprune.count_params(stripped, nonzero=True) / kprune.count_params(stripped)

    def convert(sparse):
        # A freshly stripped model each time, as export_tflite converts one;
        # only the conversion is timed.
        model = kprune.strip_pruning(pruned)
        with common.quiet():
            start = time.perf_counter()
            conv = tf.lite.TFLiteConverter.from_keras_model(model)
            if sparse:
                conv.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
            size = len(conv.convert())
            return size, time.perf_counter() - start

    workdir = tempfile.mkdtemp()
    reports = {}

    def export(latency):
        path = os.path.join(workdir, f"model_{int(latency)}.tflite")
        if os.path.exists(path):
            os.remove(path)
        start = time.perf_counter()
        reports[latency] = kprune.export_tflite(pruned, path, measure_latency=latency)
        return reports[latency].file_bytes, time.perf_counter() - start

    variants = {"converter": lambda: convert(False), "converter_sparse": lambda: convert(True),
                "export": lambda: export(False), "export_latency": lambda: export(True)}
    times = {k: [] for k in variants}
    sizes = {}
    for round_ in range(cfg["warmup"] + cfg["repeats"]):
        warm = round_ < cfg["warmup"]
        for name, fn in variants.items():
            sizes[name], elapsed = fn()
            run.log(f"round {round_ + 1}{' (warm-up)' if warm else ''} {name}: {elapsed:.1f} s")
            if not warm:
                times[name].append(elapsed)
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "model": f"{cfg['model']} weights=None {size}x{size} float32",
        "weight_sparsity": round(sparsity, 4),
        "repeats": cfg["repeats"],
        "warmup_rounds": cfg["warmup"],
        "load_average": os.getloadavg()[0],
        "seconds": times,
        "median_s": median,
        "bytes": sizes,
        "export_vs_converter": median["export"] / median["converter"],
        "export_latency_vs_converter": median["export_latency"] / median["converter"],
        "export_vs_converter_sparse": median["export"] / median["converter_sparse"],
        "goal": GOAL,
        "export_phases_s": reports[False].timings,
        "export_notes": list(reports[False].notes),
        "sparse_encoding": reports[False].sparse_encoding,
    }
    run.write(result, markdown(result), "Export time vs the converter alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
