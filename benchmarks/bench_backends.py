#!/usr/bin/env python
"""Training-time cost of pruning on every installed Keras backend, in one run.

For TensorFlow, JAX and PyTorch (each that is installed), a subprocess with
`KERAS_BACKEND` set trains the tfmot tutorial MNIST CNN (3.27M parameters, the
model of `bench_training.py`) on synthetic NumPy data: plain vs kprune-pruned
(`ConstantSparsity(0.9)`, frequency 100 and 10), interleaved in short `fit`
chunks so machine load affects every variant alike. A step is timed from the
first callback's `on_train_batch_begin` to the last one's `on_train_batch_end`,
which reads the loss (so JAX's asynchronous dispatch is waited for), and
includes the pruning callback and its mask updates. The median shows the
steady per-step overhead, the mean the cost amortized with the updates.

Usage:
    python benchmarks/bench_backends.py [--quick] [--out PATH]

Prints progress to stderr, a table to stdout, and writes JSON to
`benchmarks/results/backends.json` (or `--out`).
"""

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from bench_io import write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "backends.json")
BACKENDS = (("tensorflow", "tensorflow"), ("jax", "jax"), ("torch", "torch"))
SPARSITY = 0.9
FREQUENCIES = (100, 10)
GOAL_RATIO = 1.05  # pruned / plain step time at frequency 100 (median and mean)
FULL = {"batch_size": 32, "chunk_steps": 23, "warmup_chunks": 2, "timed_chunks": 24}
QUICK = {"batch_size": 32, "chunk_steps": 23, "warmup_chunks": 2, "timed_chunks": 3}


def log(msg):
    print(f"[bench_backends {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_cnn(keras):
    """The tfmot tutorial MNIST CNN (3,274,634 parameters)."""
    layers = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, 5, padding="same", activation="relu"),
        layers.MaxPooling2D(2, padding="same"),
        layers.Conv2D(64, 5, padding="same", activation="relu"),
        layers.MaxPooling2D(2, padding="same"),
        layers.Flatten(),
        layers.Dense(1024, activation="relu"),
        layers.Dense(10),
    ])


# ------------------------------------------------------------------ worker side
def worker(cfg, out):
    """Time plain vs pruned on this process' backend; write a JSON to `out`."""
    import keras
    import numpy as np

    import kprune

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n = cfg["chunk_steps"] * cfg["batch_size"]
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, size=(n,)).astype(np.int32)

    def compiled(model):
        model.compile(keras.optimizers.Adam(1e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    variants = [("plain", compiled(build_cnn(keras)), lambda: [])]
    for f in FREQUENCIES:
        schedule = kprune.ConstantSparsity(SPARSITY, begin_step=0, frequency=f)
        model = compiled(kprune.prune_low_magnitude(build_cnn(keras), pruning_schedule=schedule))
        variants.append((f"pruned_f{f}", model, lambda: [kprune.UpdatePruningStep()]))

    state = {}

    class First(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            state["t0"] = time.perf_counter()

    class Last(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # waits for the step (JAX dispatches asynchronously)
            state["times"].append(time.perf_counter() - state["t0"])

    timed = {name: [] for name, _, _ in variants}
    rounds = cfg["warmup_chunks"] + cfg["timed_chunks"]
    for r in range(rounds):
        k = r % len(variants)
        for name, model, extra in variants[k:] + variants[:k]:
            state["times"] = []
            model.fit(x, y, batch_size=cfg["batch_size"], epochs=1, shuffle=False, verbose=0,
                      callbacks=[First(), *extra(), Last()])
            if r >= cfg["warmup_chunks"]:
                timed[name].extend(state["times"])
        if r == rounds - 1 or r < cfg["warmup_chunks"] or (r + 1) % max(1, rounds // 4) == 0:
            log(f"{keras.backend.backend()}: round {r + 1}/{rounds}")
    for _, model, extra in variants[1:]:
        w = kprune.sparsity.prune.collect_wrappers(model)[0]
        mask = keras.ops.convert_to_numpy(w.masks[0].value)
        assert abs(1.0 - mask.mean() - SPARSITY) < 1e-3, "pruning did not happen"
    result = {
        "backend": keras.backend.backend(),
        "params": int(variants[0][1].count_params()),
        "steps_per_variant": len(timed["plain"]),
        "variants": {
            name: {"median_ms": statistics.median(t) * 1e3, "mean_ms": statistics.fmean(t) * 1e3}
            for name, t in timed.items()
        },
    }
    with open(out, "w") as f:
        json.dump(result, f)


# ------------------------------------------------------------------ driver side
def run_backend(backend, quick):
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "result.json")
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        root = os.path.dirname(HERE)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", out] + (["--quick"] if quick else [])
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=None, text=True)
        if done.returncode or not os.path.exists(out):
            return {"backend": backend, "error": f"exit status {done.returncode}"}
        with open(out) as f:
            result = json.load(f)
        result["elapsed_s"] = time.perf_counter() - start
        return result


def ratios(result):
    plain = result["variants"]["plain"]
    return {
        f"f{f}_{stat}": result["variants"][f"pruned_f{f}"][f"{stat}_ms"] / plain[f"{stat}_ms"]
        for f in FREQUENCIES for stat in ("median", "mean")
    }


def measure(quick):
    """Time every installed backend in its own subprocess.

    Returns `(results, goals, errors)`: per-backend results (with `ratios`),
    the issue-14 goals (pruned/plain at frequency 100, median and mean), and
    error texts. `bench_training.py` calls this too, so that its one run
    reports every backend."""
    results, goals, errors = {}, [], []
    for backend, module in BACKENDS:
        if importlib.util.find_spec(module) is None:
            log(f"{backend}: not installed, skipped")
            continue
        log(f"{backend}: running")
        r = run_backend(backend, quick)
        if "error" in r:
            errors.append(f"{backend}: {r['error']}")
            continue
        r["ratios"] = ratios(r)
        results[backend] = r
        for stat in ("median", "mean"):
            value = r["ratios"][f"f100_{stat}"]
            goals.append({
                "goal": f"{backend}: pruned/plain step time at frequency 100 ({stat}) <= {GOAL_RATIO}",
                "value": value, "pass": value <= GOAL_RATIO, "display": f"{value:.3f}",
            })
    return results, goals, errors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps: check the pipeline")
    parser.add_argument("--out", default=DEFAULT_OUT, help="JSON file to write")
    parser.add_argument("--worker", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.worker:
        worker(cfg, args.worker)
        return 0
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    start = time.perf_counter()
    results, goals, errors = measure(args.quick)
    report = {
        "started": started, "elapsed_s": time.perf_counter() - start, "quick": args.quick,
        "config": cfg, "sparsity": SPARSITY, "frequencies": list(FREQUENCIES),
        "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()), "backends": results, "goals": goals, "errors": errors,
    }
    write_json(report, args.out)
    print(format_table(report))
    return 1 if errors else 0


def format_table(report):
    lines = ["| backend | plain median ms | f100 median ratio | f100 mean ratio | f10 median ratio | f10 mean ratio | steps |",
             "|---|---|---|---|---|---|---|"]
    for backend, r in report["backends"].items():
        q = r["ratios"]
        lines.append(
            f"| {backend} | {r['variants']['plain']['median_ms']:.1f} | {q['f100_median']:.3f} | "
            f"{q['f100_mean']:.3f} | {q['f10_median']:.3f} | {q['f10_mean']:.3f} | {r['steps_per_variant']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
