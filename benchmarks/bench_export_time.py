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

The variants alternate (`--repeats` rounds after one warm-up round), so load
changes affect them alike; the ratio of medians is the figure of issue 16
(goal: export at most 1.5x the converter alone). The export report's
per-phase timings of the last round are printed too.

Usage:
    python benchmarks/bench_export_time.py [--repeats 2] [--size 224]
        [--out benchmarks/results/export_time.json]
"""

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
GOAL = 1.5


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds after a warm-up round")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "export_time.json"))
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf
    from bench_io import write_json

    import kprune
    from kprune.utils.native_logs import quiet_native_logs

    model = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3))
    pruned = kprune.prune_low_magnitude(model)
    kprune.update_masks(pruned, sparsity=0.5)
    stripped = kprune.strip_pruning(pruned)
    sparsity = 1 - kprune.count_params(stripped, nonzero=True) / kprune.count_params(stripped)

    def convert(sparse):
        # A freshly stripped model each time, as export_tflite converts one;
        # only the conversion is timed.
        model = kprune.strip_pruning(pruned)
        with quiet_native_logs(True), contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            conv = tf.lite.TFLiteConverter.from_keras_model(model)
            if sparse:
                conv.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
            size = len(conv.convert())
            return size, time.perf_counter() - start

    workdir = tempfile.mkdtemp()
    reports = {}

    def export(latency):
        path = os.path.join(workdir, f"resnet50_{int(latency)}.tflite")
        if os.path.exists(path):
            os.remove(path)
        start = time.perf_counter()
        reports[latency] = kprune.export_tflite(pruned, path, measure_latency=latency)
        return reports[latency].file_bytes, time.perf_counter() - start

    variants = {"converter": lambda: convert(False), "converter_sparse": lambda: convert(True),
                "export": lambda: export(False), "export_latency": lambda: export(True)}
    times = {k: [] for k in variants}
    sizes = {}
    for round_ in range(args.repeats + 1):
        for name, fn in variants.items():
            sizes[name], elapsed = fn()
            print(f"round {round_} {name}: {elapsed:.1f} s", file=sys.stderr, flush=True)
            if round_:
                times[name].append(elapsed)
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "model": f"ResNet50 weights=None {args.size}x{args.size} float32",
        "weight_sparsity": round(sparsity, 4),
        "repeats": args.repeats,
        "load_average": os.getloadavg()[0],
        "seconds": times,
        "median_s": median,
        "bytes": sizes,
        "export_vs_converter": median["export"] / median["converter"],
        "export_latency_vs_converter": median["export_latency"] / median["converter"],
        "export_vs_converter_sparse": median["export"] / median["converter_sparse"],
        "goal": GOAL,
        "export_phases_s": reports[False].timings,
        "export_notes": reports[False].notes,
        "sparse_encoding": reports[False].sparse_encoding,
    }
    write_json(result, args.out)
    print(f"ResNet50 {args.size}x{args.size}, weight sparsity {sparsity:.1%}, "
          f"median of {args.repeats} (load {result['load_average']:.1f})")
    print(f"{'variant':<16}{'seconds':>9}{'x converter':>13}{'bytes':>14}")
    for name in variants:
        print(f"{name:<16}{median[name]:>9.1f}{median[name] / median['converter']:>13.2f}{sizes[name]:>14,}")
    ok = result["export_vs_converter"] <= GOAL
    print(f"goal export <= {GOAL}x converter: {'met' if ok else 'MISSED'} "
          f"({result['export_vs_converter']:.2f}x)")
    print(f"export vs the sparse-encoding converter: {result['export_vs_converter_sparse']:.2f}x")
    print("export phases (s):", {k: round(v, 2) for k, v in reports[False].timings.items()})
    for note in reports[False].notes:
        print("note:", note)


if __name__ == "__main__":
    main()
