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

Goal (issue 14): pruned/plain step time <= 1.05 at frequency 100.

Usage:
    python benchmarks/bench_backends.py [--quick]

The full run took 23 minutes (2026-11-29, loaded machine); `--quick` (4
timed chunks of 23 steps after one warm-up chunk, so that frequency 100
updates the masks once) about 2 minutes.
"""

import importlib.util
import json
import sys

import common

BACKENDS = (("tensorflow", "tensorflow"), ("jax", "jax"), ("torch", "torch"))
SPARSITY = 0.9
FREQUENCIES = (100, 10)
GOAL_RATIO = 1.05  # pruned / plain step time at frequency 100 (median and mean)
FULL = {"batch_size": 32, "chunk_steps": 23, "warmup_chunks": 2, "timed_chunks": 24, "sync": True}
# Quick: 115 steps, so that frequency 100 updates the masks once.
QUICK = {"batch_size": 32, "chunk_steps": 23, "warmup_chunks": 1, "timed_chunks": 4, "sync": True}
log = common.logger("bench_backends")


def worker(cfg):
    """Time plain vs pruned on this process' backend."""
    import keras
    import numpy as np

    import kprune

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n = cfg["chunk_steps"] * cfg["batch_size"]
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, size=(n,)).astype(np.int32)

    def prune(model, f):
        schedule = kprune.ConstantSparsity(SPARSITY, begin_step=0, frequency=f)
        return kprune.prune_low_magnitude(model, pruning_schedule=schedule)

    variants = common.pruning_variants(keras, lambda: common.mnist_cnn(keras), prune, kprune.UpdatePruningStep,
                                       FREQUENCIES, lambda m: common.compile_classifier(keras, m))

    def fit(model, callbacks):
        model.fit(x, y, batch_size=cfg["batch_size"], epochs=1, shuffle=False, verbose=0, callbacks=callbacks)

    timed = common.time_fit_chunks(variants, fit, cfg, log, keras.backend.backend())
    for v in variants[1:]:
        wrapper = next(layer for layer in v["model"].layers if isinstance(layer, kprune.PruneLowMagnitude))
        pruned = 1.0 - keras.ops.convert_to_numpy(wrapper.masks[0]).mean()
        if abs(pruned - SPARSITY) > 1e-3:
            raise RuntimeError(f"{v['name']}: mask sparsity {pruned}, expected {SPARSITY}: pruning did not happen")
    return {"backend": keras.backend.backend(), "params": int(variants[0]["model"].count_params()),
            "steps_per_variant": len(timed["plain"]),
            "variants": {name: common.step_stats(t) for name, t in timed.items()}}


def ratios(result):
    plain = result["variants"]["plain"]
    return {f"f{f}_{stat}": result["variants"][f"pruned_f{f}"][f"{stat}_ms"] / plain[f"{stat}_ms"]
            for f in FREQUENCIES for stat in ("median", "mean")}


def measure(cfg, timeout):
    """Every installed backend in its own subprocess: `(results, goals, errors)`."""
    results, goals, errors = {}, [], []
    for backend, module in BACKENDS:
        if importlib.util.find_spec(module) is None:
            log(f"{backend}: not installed, skipped")
            continue
        log(f"{backend}: running")
        try:
            r = common.run_worker("bench_backends.py", "backend", cfg, timeout=timeout, echo="[bench_backends",
                                  env=common.child_env(KERAS_BACKEND=backend))
        except common.WorkerError as e:
            errors.append(f"{backend}: {e}")
            log(f"ERROR {backend}: {e}")
            continue
        r["ratios"] = ratios(r)
        results[backend] = r
        for stat in ("median", "mean"):
            value = r["ratios"][f"f100_{stat}"]
            goals.append({"goal": f"{backend}: pruned/plain step time at frequency 100 ({stat}) <= {GOAL_RATIO}",
                          "value": value, "pass": value <= GOAL_RATIO, "display": f"{value:.3f}"})
    return results, goals, errors


def markdown(data):
    cfg = data["config"]
    lines = [f"The tfmot tutorial MNIST CNN, batch {cfg['batch_size']}, synthetic NumPy input, Adam; plain vs "
             f"`prune_low_magnitude(ConstantSparsity({data['sparsity']}, frequency=f))`, one subprocess per "
             f"installed backend; variants interleaved in fit chunks of {cfg['chunk_steps']} steps, "
             f"{cfg['timed_chunks']} timed chunks each. A step is timed from the first callback's "
             "`on_train_batch_begin` to the last one's `on_train_batch_end` (which reads the loss), so it includes "
             "`UpdatePruningStep` and its mask updates. A ratio below 1 is noise: pruning adds work.", ""]
    rows = [[backend, common.num(b["variants"]["plain"]["median_ms"], ".1f", " ms"),
             *(common.num(b["ratios"][k], ".3f") for k in ("f100_median", "f100_mean", "f10_median", "f10_mean")),
             b["steps_per_variant"]] for backend, b in data["backends"].items()]
    lines += [common.md_table(["backend", "plain step (median):", "f100 median:", "f100 mean:", "f10 median:",
                               "f10 mean:", "steps:"], rows), ""]
    lines += [f"Goal (issue 14): pruned/plain <= {GOAL_RATIO} at frequency 100.", "", common.goal_lines(data["goals"])]
    lines += [f"- ERROR {e}" for e in data["errors"]]
    return "\n".join(lines)


def main(argv=None):
    args = common.add_worker_arguments(common.parser(__doc__)).parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args._worker:
        common.write_worker_result(args._result, worker(json.loads(args._config)))
        return 0
    run = common.Run("backends", args.quick)
    results, goals, errors = measure(cfg, timeout=900 if args.quick else 3600)
    data = {"config": cfg, "sparsity": SPARSITY, "frequencies": list(FREQUENCIES), "backends": results,
            "goals": goals, "errors": errors}
    run.write(data, markdown(data), "Training overhead on each Keras backend")
    return 1 if errors or not results else 0


if __name__ == "__main__":
    sys.exit(main())
