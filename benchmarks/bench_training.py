#!/usr/bin/env python
"""Training-time cost of pruning: kprune (Keras 3) vs tfmot (tf_keras).

Measures, in one run:

1. Training step time of the tfmot tutorial MNIST CNN (3.27M parameters) on
   synthetic data: Keras 3 plain vs kprune-pruned (ConstantSparsity 0.9,
   frequency 100 and 10), all in this process, interleaved in short `fit`
   chunks (23 steps of a cached tf.data dataset) so machine load affects every
   variant alike; then tf_keras plain vs
   tfmot-pruned (same architecture, batch and schedules) in a subprocess run
   with `TF_USE_LEGACY_KERAS=1`. Each step is timed by callbacks (first in the
   callback list at `on_train_batch_begin`, last at `on_train_batch_end`), so a
   step's time includes the pruning callback and any mask update it does.
   Median and mean are reported: mask updates happen on one step in
   `frequency`, so the median shows the steady per-step overhead and the mean
   the amortized cost including the updates.
2. The same for gradual channel pruning: MobileNetV2 (`alpha=0.5`, 64x64,
   10 classes, `weights=None`), plain vs `kprune.prune_channels` with
   `PolynomialDecay(0 -> 0.5)` over the run at frequency 100 and 10
   (tfmot has no channel pruning).
3. Mask-update time for one Dense kernel of 1M, 4M and 16M weights at 90%
   sparsity, against one `np.abs(w).sum()` pass over the same array (the cost
   of reading the weights once): kprune's `PruneLowMagnitude.update_masks`
   (read weights, compute mask, assign mask and masked weights), kprune's pure
   `kprune.sparsity.mask_math.magnitude_mask`, and tfmot's
   `pruning_obj.conditional_mask_update()` + `pruning_obj.weight_mask_op()`
   (the same work: compute and assign mask and threshold, then weights *= mask),
   timed eagerly and inside a `tf.function`. "fresh" times an update of freshly
   initialized weights; "re-prune" one of weights that are already 90% zeros
   (every update after the first at constant sparsity).
4. Memory: resident memory that `kprune.prune_low_magnitude` adds to a
   process holding a 96Mi-parameter MLP (6 Dense 4096x4096, 384 MiB of
   float32 weights), beyond the clone's own weights (a fresh subprocess, so
   nothing else is resident).
5. Every Keras backend (issue 14): the MNIST CNN's pruned/plain step time on
   TensorFlow, JAX and PyTorch (each that is installed), one subprocess per
   backend with NumPy input (`bench_backends.measure`; `--no-backends` skips
   it, about 5 minutes).

Usage:
    python benchmarks/bench_training.py [--quick] [--no-backends] [--out PATH]

Prints progress to stderr, a table to stdout, and writes JSON to
`benchmarks/results/training.json` (or `--out`).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import bench_backends  # noqa: E402
from bench_backends import build_cnn  # noqa: E402,F401  (one definition of the CNN; bench_export imports it from here)
from bench_io import write_json  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "training.json")

SPARSITY = 0.9
FREQUENCIES = (100, 10)
# Goals (issue 16): pruned / plain step time, per frequency and statistic.
GOAL_STEP_RATIO = {(100, "median"): 1.05, (100, "mean"): 1.05, (10, "mean"): 1.08}
# A 90% mask update at most this many times one np.abs(w).sum() pass.
GOAL_MASK_VS_READ = 3.0
# Resident memory added by prune_low_magnitude beyond the clone, in weight bytes.
GOAL_MEMORY = 0.3
CHANNEL_SPARSITY = 0.5

FULL = {
    "batch_size": 32,
    # Steps per `fit` call: short chunks, so the variants alternate every
    # second or so and drifts in machine load hit them alike.
    "chunk_steps": 23,
    "warmup_chunks": 2,
    "timed_chunks": 40,
    "mask_sizes": [1 << 20, 1 << 22, 1 << 24],
    "mask_repeats": 7,
    "channel_image": 64,
    "channel_timed_chunks": 12,
    "memory_mlp": [4096, 6],
}
QUICK = {
    "batch_size": 32,
    "chunk_steps": 23,
    "warmup_chunks": 2,
    "timed_chunks": 3,
    "mask_sizes": [1 << 20],
    "mask_repeats": 3,
    "channel_image": 64,
    "channel_timed_chunks": 2,
    "memory_mlp": [1024, 3],
}


def log(msg):
    print(f"[bench_training {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def summarize(times_s):
    ms = [t * 1000.0 for t in times_s]
    ms_sorted = sorted(ms)
    return {
        "steps": len(ms),
        "median_ms": statistics.median(ms),
        "mean_ms": statistics.fmean(ms),
        "p90_ms": ms_sorted[min(len(ms) - 1, int(0.9 * len(ms)))],
        "max_ms": ms_sorted[-1],
    }


# --------------------------------------------------------------------- models
def synthetic_dataset(cfg, shape=(28, 28, 1)):
    """One `fit` chunk of synthetic batches (MNIST-shaped by default), as a
    cached tf.data dataset (fit on NumPy arrays slices them on a background
    thread during training, which competes with the step for the 2 cores)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    n = cfg["chunk_steps"] * cfg["batch_size"]
    x = rng.random((n, *shape), dtype=np.float32)
    y = rng.integers(0, 10, size=(n,)).astype(np.int64)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(cfg["batch_size"], drop_remainder=True).cache()
    for _ in ds:  # fill the cache
        pass
    return ds


def make_step_timer(callback_base):
    """Two callbacks sharing one list of per-step wall times.

    Put `first` first and `last` last in the callback list: a step is timed from
    `first.on_train_batch_begin` (before the pruning callback) to
    `last.on_train_batch_end` (after every other callback)."""
    state = {"t0": None, "times": []}

    class First(callback_base):
        def on_train_batch_begin(self, batch, logs=None):
            state["t0"] = time.perf_counter()

    class Last(callback_base):
        def on_train_batch_end(self, batch, logs=None):
            state["times"].append(time.perf_counter() - state["t0"])

    return First(), Last(), state["times"]


def run_interleaved(variants, ds, cfg, label):
    """`variants`: list of dicts with name, model, extra_callbacks, callback_base.

    Runs warm-up chunks, then timed chunks, rotating the order of the variants
    each round. Returns {name: [step seconds]} for the timed chunks only."""
    timed = {v["name"]: [] for v in variants}
    rounds = cfg["warmup_chunks"] + cfg["timed_chunks"]
    for r in range(rounds):
        k = r % len(variants)
        order = variants[k:] + variants[:k]
        warm = r < cfg["warmup_chunks"]
        t_round = time.perf_counter()
        for v in order:
            first, last, times = make_step_timer(v["callback_base"])
            v["model"].fit(
                ds,
                epochs=1,
                verbose=0,
                callbacks=[first, *v["extra_callbacks"](), last],
            )
            if len(times) != cfg["chunk_steps"]:
                raise RuntimeError(
                    f"{v['name']}: timed {len(times)} steps, expected {cfg['chunk_steps']}"
                )
            if not warm:
                timed[v["name"]].extend(times)
        if not (warm or r == rounds - 1 or (r + 1) % max(1, rounds // 6) == 0):
            continue
        log(
            f"{label}: round {r + 1}/{rounds}{' (warm-up)' if warm else ''} "
            f"{time.perf_counter() - t_round:.1f}s; "
            + ", ".join(
                f"{v['name']} median {statistics.median(timed[v['name']]) * 1e3:.1f}ms"
                for v in variants
                if timed[v["name"]]
            )
        )
    return timed


def count_updates(first_step, n_steps, frequency):
    """Mask updates (at steps s >= 0 with s % frequency == 0) in a step range."""
    return sum(1 for s in range(first_step, first_step + n_steps) if s % frequency == 0)


# ------------------------------------------------------------ keras 3 / kprune
def time_variants(cfg, keras, api, label):
    """Plain vs pruned (each frequency) runs of the same CNN, interleaved.

    `api` is `kprune` or `tfmot.sparsity.keras`: the calls are the same, which
    is the migration kprune promises (change the import).
    """
    keras.utils.set_random_seed(0)
    ds = synthetic_dataset(cfg)

    def compiled(model):
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return model

    plain = compiled(build_cnn(keras))
    variants = [
        {
            "name": "plain",
            "model": plain,
            "extra_callbacks": lambda: [],
            "callback_base": keras.callbacks.Callback,
        }
    ]
    for f in FREQUENCIES:
        schedule = api.ConstantSparsity(SPARSITY, begin_step=0, frequency=f)
        model = compiled(api.prune_low_magnitude(build_cnn(keras), pruning_schedule=schedule))
        variants.append(
            {
                "name": f"pruned_f{f}",
                "model": model,
                "extra_callbacks": lambda: [api.UpdatePruningStep()],
                "callback_base": keras.callbacks.Callback,
            }
        )
    return variants, run_interleaved(variants, ds, cfg, label), int(plain.count_params())


def keras3_training(cfg):
    import keras
    import numpy as np

    import kprune

    variants, timed, n_params = time_variants(cfg, keras, kprune, "keras3/kprune")

    warm_steps = cfg["warmup_chunks"] * cfg["chunk_steps"]
    results = {"library": "kprune", "keras_version": keras.__version__, "params": n_params}
    for v in variants:
        r = summarize(timed[v["name"]])
        if v["name"] != "plain":
            f = int(v["name"].split("_f")[1])
            r["frequency"] = f
            # kprune counts steps as tfmot does: step s (1-based) updates when s % f == 0.
            r["mask_updates"] = count_updates(warm_steps + 1, r["steps"], f)
            wrappers = [layer for layer in v["model"].layers if isinstance(layer, kprune.PruneLowMagnitude)]
            r["final_step"] = int(keras.ops.convert_to_numpy(wrappers[0].pruning_step))
            r["final_sparsity"] = {
                w.name: float(1.0 - np.mean(keras.ops.convert_to_numpy(w.masks[0]))) for w in wrappers
            }
        results[v["name"]] = r
    return results


def channel_training(cfg):
    """Plain vs gradual channel pruning (`prune_channels`) of MobileNetV2
    (alpha=0.5), interleaved like the CNN."""
    import keras

    import kprune

    side = cfg["channel_image"]
    keras.utils.set_random_seed(0)
    ds = synthetic_dataset(cfg, (side, side, 3))
    ccfg = dict(cfg, timed_chunks=cfg["channel_timed_chunks"])
    total = (ccfg["warmup_chunks"] + ccfg["timed_chunks"]) * ccfg["chunk_steps"]

    def build():
        model = keras.applications.MobileNetV2(
            input_shape=(side, side, 3), alpha=0.5, weights=None, classes=10
        )
        return model

    def compiled(model):
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        return model

    plain = compiled(build())
    variants = [{"name": "plain", "model": plain, "extra_callbacks": lambda: [],
                 "callback_base": keras.callbacks.Callback}]
    for f in FREQUENCIES:
        schedule = kprune.PolynomialDecay(0.0, CHANNEL_SPARSITY, begin_step=0, end_step=total, frequency=f)
        model = compiled(kprune.prune_channels(build(), schedule))
        variants.append({"name": f"pruned_f{f}", "model": model,
                         "extra_callbacks": lambda: [kprune.UpdatePruningStep()],
                         "callback_base": keras.callbacks.Callback})
    timed = run_interleaved(variants, ds, ccfg, "MobileNetV2/prune_channels")
    warm_steps = ccfg["warmup_chunks"] * ccfg["chunk_steps"]
    results = {"model": f"MobileNetV2(alpha=0.5, {side}x{side}, classes=10)", "params": int(plain.count_params()),
               "schedule": f"PolynomialDecay(0 -> {CHANNEL_SPARSITY}) over {total} steps"}
    for v in variants:
        r = summarize(timed[v["name"]])
        if v["name"] != "plain":
            f = int(v["name"].split("_f")[1])
            r["frequency"] = f
            r["mask_updates"] = count_updates(warm_steps, r["steps"], f)
            r["final_channel_sparsity"] = _mean_channel_sparsity(kprune, v["model"])
        results[v["name"]] = r
    return results


def _mean_channel_sparsity(kprune, model):
    counts = kprune.channels.gradual.channel_sparsity(model)
    pruned = sum(p for p, _ in counts.values())
    total = sum(n for _, n in counts.values())
    return pruned / total if total else None


def memory_worker(cfg, result_path):
    """Resident memory of `prune_low_magnitude` on an MLP (run in a fresh process)."""
    import gc

    import keras
    import numpy as np

    import kprune

    def status():
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024

    width, depth = cfg["memory_mlp"]
    model = keras.Sequential(
        [keras.Input((width,))] + [keras.layers.Dense(width, name=f"dense_{i}") for i in range(depth)]
    )
    weight_bytes = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
    gc.collect()
    rss0, _ = status()
    t = time.perf_counter()
    pruned = kprune.prune_low_magnitude(model)
    prune_s = time.perf_counter() - t
    gc.collect()
    rss1, peak1 = status()
    t = time.perf_counter()
    kprune.update_masks(pruned, SPARSITY)
    update_s = time.perf_counter() - t
    gc.collect()
    rss2, peak2 = status()
    mask_bytes = sum(int(np.prod(m.shape)) * np.dtype(m.dtype).itemsize
                     for w in kprune.sparsity.prune.collect_wrappers(pruned) for _, m in w.pruned_weights)
    result = {
        "mlp": f"{depth} x Dense({width}) on {width} inputs", "params": int(model.count_params()),
        "weight_bytes": weight_bytes, "mask_bytes": mask_bytes,
        "rss_before": rss0, "rss_after_prune": rss1, "peak_after_prune": peak1,
        "rss_after_update": rss2, "peak_after_update": peak2,
        "prune_s": prune_s, "update_masks_s": update_s,
        "added_over_clone": (rss1 - rss0 - weight_bytes) / weight_bytes,
        "added_over_clone_after_update": (rss2 - rss0 - weight_bytes) / weight_bytes,
    }
    with open(result_path, "w") as f:
        json.dump(result, f)


def kprune_mask_update(cfg):
    import keras
    import numpy as np

    import kprune
    from kprune.sparsity import mask_math as masks

    results = []
    for size in cfg["mask_sizes"]:
        side = int(round(size**0.5))
        rng = np.random.default_rng(1)
        layer = kprune.PruneLowMagnitude(
            keras.layers.Dense(side),
            pruning_schedule=kprune.ConstantSparsity(SPARSITY, begin_step=0, frequency=1),
        )
        layer.build((None, side))
        kernel = layer.layer.kernel
        mask = layer.masks[0]
        ones = np.ones((side, side), bool)

        def fresh():
            kernel.assign(rng.standard_normal((side, side), dtype=np.float32) * 0.05)
            mask.assign(ones)

        def check():
            m = keras.ops.convert_to_numpy(mask)
            k = keras.ops.convert_to_numpy(kernel)
            zeros = int(round(size * SPARSITY))
            if int(size - m.sum()) != zeros or int(np.count_nonzero(k == 0)) < zeros:
                raise RuntimeError(f"kprune update_masks did not prune {side}x{side} to {SPARSITY}")

        fresh_t, repeat_t, pure_t, read_t = [], [], [], []
        for i in range(cfg["mask_repeats"] + 1):  # first round is warm-up
            fresh()
            t = time.perf_counter()
            layer.update_masks(SPARSITY)
            t_fresh = time.perf_counter() - t
            check()
            t = time.perf_counter()
            layer.update_masks(SPARSITY)
            t_repeat = time.perf_counter() - t
            check()
            w = rng.standard_normal((side, side), dtype=np.float32)
            t = time.perf_counter()
            keep = masks.magnitude_mask(w, SPARSITY)
            t_pure = time.perf_counter() - t
            assert int(keep.size - np.count_nonzero(keep)) == int(round(size * SPARSITY))
            t = time.perf_counter()
            np.abs(w).sum()
            t_read = time.perf_counter() - t
            if i:
                fresh_t.append(t_fresh)
                repeat_t.append(t_repeat)
                pure_t.append(t_pure)
                read_t.append(t_read)
        r = {
            "size": size,
            "shape": [side, side],
            "update_masks_ms": statistics.median(fresh_t) * 1e3,
            "update_masks_reprune_ms": statistics.median(repeat_t) * 1e3,
            "magnitude_mask_ms": statistics.median(pure_t) * 1e3,
            "abs_sum_ms": statistics.median(read_t) * 1e3,
            "repeats": cfg["mask_repeats"],
        }
        log(
            f"kprune mask update {side}x{side}: np.abs(w).sum() {r['abs_sum_ms']:.1f}ms, "
            f"update_masks {r['update_masks_ms']:.1f}ms, "
            f"re-prune {r['update_masks_reprune_ms']:.1f}ms, "
            f"magnitude_mask {r['magnitude_mask_ms']:.1f}ms"
        )
        results.append(r)
        del layer, kernel, mask
    return results


# -------------------------------------------------------- tf_keras / tfmot worker
def _legacy_imports():
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    return tf, tfmot, keras


def tfmot_training(cfg):
    import numpy as np

    tf, tfmot, keras = _legacy_imports()
    variants, timed, n_params = time_variants(cfg, keras, tfmot.sparsity.keras, "tf_keras/tfmot")

    warm_steps = cfg["warmup_chunks"] * cfg["chunk_steps"]
    results = {
        "library": "tfmot",
        "tfmot_version": getattr(tfmot, "__version__", None),
        "tf_keras_version": keras.__version__,
        "params": n_params,
    }
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    for v in variants:
        r = summarize(timed[v["name"]])
        if v["name"] != "plain":
            f = int(v["name"].split("_f")[1])
            r["frequency"] = f
            # tfmot increments its step before the mask update in the same
            # train step, so step s (1-based) updates when s % f == 0.
            r["mask_updates"] = count_updates(warm_steps + 1, r["steps"], f)
            wrappers = [
                layer
                for layer in v["model"].layers
                if isinstance(layer, pruning_wrapper.PruneLowMagnitude) and layer.pruning_vars
            ]
            r["final_step"] = int(wrappers[0].pruning_step.numpy())
            r["final_sparsity"] = {
                w.name: float(1.0 - np.mean(w.pruning_vars[0][1].numpy())) for w in wrappers
            }
        results[v["name"]] = r
    return results


def tfmot_mask_update(cfg):
    import numpy as np

    tf, tfmot, keras = _legacy_imports()
    sparsity = tfmot.sparsity.keras
    results = []
    for size in cfg["mask_sizes"]:
        side = int(round(size**0.5))
        rng = np.random.default_rng(1)
        layer = sparsity.prune_low_magnitude(
            keras.layers.Dense(side),
            pruning_schedule=sparsity.ConstantSparsity(SPARSITY, begin_step=0, frequency=1),
        )
        layer.build((None, side))
        weight, mask, threshold = layer.pruning_vars[0]
        # Any step >= begin_step prunes at frequency 1; 1 is what the first
        # training step sees.
        layer.pruning_step.assign(1)
        obj = layer.pruning_obj

        def update():
            obj.conditional_mask_update()
            obj.weight_mask_op()

        update_fn = tf.function(update)
        ones = np.ones((side, side), np.float32)

        def fresh():
            weight.assign(rng.standard_normal((side, side), dtype=np.float32) * 0.05)
            mask.assign(ones)

        def sync():
            return float(threshold.numpy())

        def check():
            m = mask.numpy()
            w = weight.numpy()
            zeros = int(round(size * SPARSITY))
            # tfmot keeps round(n * (1 - s)) entries, plus ties at the threshold.
            if abs(int(size - m.sum()) - zeros) > size // 1000 or int(np.count_nonzero(w == 0)) < zeros - size // 1000:
                raise RuntimeError(f"tfmot mask update did not prune {side}x{side} to {SPARSITY}")

        times = {"eager": [], "eager_reprune": [], "function": [], "function_reprune": [], "abs_sum": []}
        for i in range(cfg["mask_repeats"] + 1):  # first round is warm-up (and traces)
            w = rng.standard_normal((side, side), dtype=np.float32)
            t = time.perf_counter()
            np.abs(w).sum()
            if i:
                times["abs_sum"].append(time.perf_counter() - t)
            for mode, fn in (("eager", update), ("function", update_fn)):
                fresh()
                sync()
                t = time.perf_counter()
                fn()
                sync()
                t_fresh = time.perf_counter() - t
                check()
                t = time.perf_counter()
                fn()
                sync()
                t_repeat = time.perf_counter() - t
                check()
                if i:
                    times[mode].append(t_fresh)
                    times[mode + "_reprune"].append(t_repeat)
        r = {"size": size, "shape": [side, side], "repeats": cfg["mask_repeats"]}
        for key, ts in times.items():
            r[f"{key}_ms"] = statistics.median(ts) * 1e3
        log(
            f"tfmot mask update {side}x{side}: eager {r['eager_ms']:.1f}ms, "
            f"tf.function {r['function_ms']:.1f}ms, re-prune eager {r['eager_reprune_ms']:.1f}ms / "
            f"tf.function {r['function_reprune_ms']:.1f}ms"
        )
        results.append(r)
        del layer, weight, mask, threshold, obj, update_fn
    return results


def worker_main(cfg, result_path):
    """The tfmot side of the benchmark (run with TF_USE_LEGACY_KERAS=1)."""
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1" or "tensorflow" in sys.modules:
        raise RuntimeError("the tfmot worker needs TF_USE_LEGACY_KERAS=1 set before TensorFlow is imported")
    result = {"training": tfmot_training(cfg)}
    log("mask update: tfmot")
    result["mask"] = tfmot_mask_update(cfg)
    with open(result_path, "w") as f:
        json.dump(result, f)


def run_worker(cfg, timeout, role="tfmot"):
    """Run the tfmot measurements in a subprocess with TF_USE_LEGACY_KERAS=1
    (`role="tfmot"`), or the memory measurement in a fresh one (`"memory"`)."""
    fd, path = tempfile.mkstemp(prefix=f"bench_{role}_", suffix=".json")
    os.close(fd)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1") if role == "tfmot" else dict(os.environ)
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--_worker",
        role,
        "--_config",
        json.dumps(cfg),
        "--_result",
        path,
    ]
    try:
        proc = subprocess.run(cmd, env=env, timeout=timeout, stdout=subprocess.DEVNULL)
        if proc.returncode != 0:
            return None, f"{role} worker exited with status {proc.returncode}"
        with open(path) as f:
            return json.load(f), None
    except subprocess.TimeoutExpired:
        return None, f"{role} worker timed out after {timeout}s"
    finally:
        if os.path.exists(path):
            os.remove(path)


# ------------------------------------------------------------------- reporting
def versions():
    out = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    from importlib import metadata

    for pkg in ("tensorflow", "keras", "tf_keras", "tensorflow-model-optimization", "numpy", "kprune"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        out["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    return out


def add_ratios(train):
    if not train:
        return
    plain = train["plain"]
    for f in FREQUENCIES:
        r = train[f"pruned_f{f}"]
        r["median_ratio"] = r["median_ms"] / plain["median_ms"]
        r["mean_ratio"] = r["mean_ms"] / plain["mean_ms"]


def combine_mask(kp, tm):
    rows = []
    tm_by_size = {r["size"]: r for r in (tm or [])}
    for k in kp:
        row = {"size": k["size"], "shape": k["shape"], "repeats": k["repeats"]}
        row["abs_sum_ms"] = k["abs_sum_ms"]
        row["kprune_update_masks_ms"] = k["update_masks_ms"]
        row["kprune_update_masks_reprune_ms"] = k["update_masks_reprune_ms"]
        row["kprune_magnitude_mask_ms"] = k["magnitude_mask_ms"]
        row["kprune_vs_read"] = k["update_masks_ms"] / k["abs_sum_ms"]
        row["kprune_reprune_vs_read"] = k["update_masks_reprune_ms"] / k["abs_sum_ms"]
        t = tm_by_size.get(k["size"])
        if t:
            for key in ("eager", "eager_reprune", "function", "function_reprune", "abs_sum"):
                row[f"tfmot_{key}_ms"] = t[f"{key}_ms"]
            # The reference is tfmot's faster mode (conservative for kprune).
            best = min(t["eager_ms"], t["function_ms"])
            best_re = min(t["eager_reprune_ms"], t["function_reprune_ms"])
            row["tfmot_best_ms"] = best
            row["tfmot_best_reprune_ms"] = best_re
            # tfmot's ratio against the read pass timed in its own process.
            row["tfmot_vs_read"] = best / t["abs_sum_ms"]
            row["tfmot_reprune_vs_read"] = best_re / t["abs_sum_ms"]
            row["speedup"] = best / k["update_masks_ms"]
            row["speedup_reprune"] = best_re / k["update_masks_reprune_ms"]
            row["speedup_magnitude_mask"] = best / k["magnitude_mask_ms"]
        rows.append(row)
    return rows


def goals(result):
    out = []

    def add(goal, value, display, ok):
        out.append({"goal": goal, "value": value, "display": display, "pass": bool(ok)})

    for key, label in (("keras3", "kprune MNIST CNN"), ("channels", "prune_channels MobileNetV2")):
        t = result["training"].get("keras3") if key == "keras3" else result.get("channels")
        if not t:
            continue
        for (f, stat), limit in GOAL_STEP_RATIO.items():
            v = t[f"pruned_f{f}"][f"{stat}_ratio"]
            add(f"{label} f={f} {stat} step <= {limit:.2f}x plain", v, f"{v:.3f}x", v <= limit)
    for row in result["mask_update"]:
        label = f"{row['shape'][0]}x{row['shape'][1]}"
        v = row["kprune_vs_read"]
        tfmot = row.get("tfmot_vs_read")
        add(f"kprune 90% update_masks {label} <= {GOAL_MASK_VS_READ:.0f}x one np.abs(w).sum()", v,
            f"{v:.2f}x (tfmot {fmt(tfmot, '.1f')}x)", v <= GOAL_MASK_VS_READ)
    for g in (result.get("backends") or {}).get("goals", []):
        add(g["goal"], g["value"], g["display"], g["pass"])
    memory = result.get("memory")
    if memory:
        v = memory["added_over_clone"]
        add(f"prune_low_magnitude adds <= {GOAL_MEMORY}x weight bytes beyond the clone ({memory['mlp']})",
            v, f"{v:.3f}x", v <= GOAL_MEMORY)
    return out


def fmt(v, spec=".2f"):
    return "n/a" if v is None else format(v, spec)


def render(result):
    cfg = result["config"]
    lines = []
    train = result["training"]
    params = (train.get("keras3") or train.get("tfmot") or {}).get("params")
    timed_steps = cfg["timed_chunks"] * cfg["chunk_steps"]
    lines.append(
        f"Training step time: MNIST CNN ({params:,} params), batch {cfg['batch_size']}, "
        f"ConstantSparsity({SPARSITY}), {timed_steps} timed steps per variant "
        f"({cfg['timed_chunks']} interleaved fit chunks of {cfg['chunk_steps']})"
    )
    header = f"{'library':<16}{'variant':<14}{'median ms':>10}{'mean ms':>10}{'p90 ms':>9}{'med/plain':>11}{'mean/plain':>12}{'updates':>9}"
    lines.append(header)
    lines.append("-" * len(header))
    for key, lib, pruned_name in (("keras3", "keras3", "kprune"), ("tfmot", "tf_keras", "tfmot")):
        t = train.get(key)
        if not t:
            lines.append(f"{lib:<16}{'(failed: ' + str(result['errors'].get(key)) + ')'}")
            continue
        for name in ("plain", *(f"pruned_f{f}" for f in FREQUENCIES)):
            r = t[name]
            variant = "plain" if name == "plain" else f"{pruned_name} f={r['frequency']}"
            lines.append(
                f"{lib:<16}{variant:<14}{r['median_ms']:>10.2f}{r['mean_ms']:>10.2f}{r['p90_ms']:>9.2f}"
                f"{fmt(r.get('median_ratio', 1.0 if name == 'plain' else None), '.3f'):>11}"
                f"{fmt(r.get('mean_ratio', 1.0 if name == 'plain' else None), '.3f'):>12}"
                f"{r.get('mask_updates', 0):>9}"
            )
    ch = result.get("channels")
    if ch:
        lines.append("")
        lines.append(
            f"Gradual channel pruning: {ch['model']} ({ch['params']:,} params), kprune.prune_channels with "
            f"{ch['schedule']}, {cfg['channel_timed_chunks'] * cfg['chunk_steps']} timed steps per variant"
        )
        header = f"{'variant':<18}{'median ms':>10}{'mean ms':>10}{'p90 ms':>9}{'med/plain':>11}{'mean/plain':>12}{'updates':>9}"
        lines.append(header)
        lines.append("-" * len(header))
        for name in ("plain", *(f"pruned_f{f}" for f in FREQUENCIES)):
            r = ch[name]
            variant = "plain" if name == "plain" else f"prune_channels f={r['frequency']}"
            lines.append(
                f"{variant:<18}{r['median_ms']:>10.2f}{r['mean_ms']:>10.2f}{r['p90_ms']:>9.2f}"
                f"{fmt(r.get('median_ratio', 1.0 if name == 'plain' else None), '.3f'):>11}"
                f"{fmt(r.get('mean_ratio', 1.0 if name == 'plain' else None), '.3f'):>12}"
                f"{r.get('mask_updates', 0):>9}"
            )
    lines.append("")
    lines.append(
        f"Mask update, one Dense kernel at sparsity {SPARSITY} (ms, median of {cfg['mask_repeats']}); "
        "x read = time / one np.abs(w).sum() over the same array (tfmot: timed in its own process); "
        "speedup = best tfmot / kprune update_masks"
    )
    header = (
        f"{'kernel':<12}{'case':<10}{'abs.sum':>8}{'kp update':>10}{'x read':>8}{'kp mask':>9}{'tfmot eager':>12}"
        f"{'tfmot tf.fn':>12}{'x read':>8}{'speedup':>9}"
    )
    lines.append(header)
    lines.append("-" * len(header))
    for row in result["mask_update"]:
        label = f"{row['shape'][0]}x{row['shape'][1]}"
        lines.append(
            f"{label:<12}{'fresh':<10}{row['abs_sum_ms']:>8.1f}{row['kprune_update_masks_ms']:>10.1f}"
            f"{row['kprune_vs_read']:>8.2f}{row['kprune_magnitude_mask_ms']:>9.1f}"
            f"{fmt(row.get('tfmot_eager_ms'), '.1f'):>12}{fmt(row.get('tfmot_function_ms'), '.1f'):>12}"
            f"{fmt(row.get('tfmot_vs_read'), '.1f'):>8}{fmt(row.get('speedup'), '.1f') + 'x':>9}"
        )
        lines.append(
            f"{'':<12}{'re-prune':<10}{'':>8}{row['kprune_update_masks_reprune_ms']:>10.1f}"
            f"{row['kprune_reprune_vs_read']:>8.2f}{'':>9}"
            f"{fmt(row.get('tfmot_eager_reprune_ms'), '.1f'):>12}{fmt(row.get('tfmot_function_reprune_ms'), '.1f'):>12}"
            f"{fmt(row.get('tfmot_reprune_vs_read'), '.1f'):>8}{fmt(row.get('speedup_reprune'), '.1f') + 'x':>9}"
        )
    lines.append("(kp mask = kprune.sparsity.mask_math.magnitude_mask alone, on fresh weights)")
    memory = result.get("memory")
    if memory:
        mib = 1 << 20
        lines.append("")
        lines.append(
            f"Memory: prune_low_magnitude on {memory['mlp']} ({memory['params']:,} params, "
            f"{memory['weight_bytes'] / mib:.0f} MiB of weights, masks {memory['mask_bytes'] / mib:.0f} MiB): "
            f"resident +{(memory['rss_after_prune'] - memory['rss_before']) / mib:.0f} MiB "
            f"(beyond the clone: {memory['added_over_clone']:.3f}x the weights' bytes), "
            f"peak +{(memory['peak_after_prune'] - memory['rss_before']) / mib:.0f} MiB; "
            f"after update_masks({SPARSITY}) resident +{(memory['rss_after_update'] - memory['rss_before']) / mib:.0f} MiB "
            f"({memory['update_masks_s']:.2f} s)"
        )
    per_backend = result.get("backends")
    if per_backend and per_backend.get("backends"):
        lines.append("")
        lines.append("Every Keras backend: the MNIST CNN, NumPy input, one subprocess per backend (bench_backends.py)")
        lines.append(bench_backends.format_table(per_backend))
    lines.append("")
    lines.append("Goals")
    for g in result["goals"]:
        lines.append(f"  {'PASS' if g['pass'] else 'MISS'}  {g['goal']}: {g['display']}")
    if result["errors"]:
        lines.append("")
        for k, v in result["errors"].items():
            lines.append(f"ERROR {k}: {v}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps, 1M kernel only (smoke run, ~1 minute)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON output path (default: {DEFAULT_OUT})")
    parser.add_argument("--no-backends", action="store_true",
                        help="skip the per-backend step times (JAX, PyTorch: about 5 minutes)")
    parser.add_argument("--_worker", choices=("tfmot", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--_config", help=argparse.SUPPRESS)
    parser.add_argument("--_result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._worker == "tfmot":
        worker_main(json.loads(args._config), args._result)
        return 0
    if args._worker == "memory":
        memory_worker(json.loads(args._config), args._result)
        return 0

    cfg = dict(QUICK if args.quick else FULL)
    timeout = 600 if args.quick else 1800
    started = time.time()
    t_start = time.perf_counter()
    result = {
        "benchmark": "training",
        "schema": 1,
        "quick": args.quick,
        "command": " ".join([os.path.relpath(sys.argv[0]) if sys.argv[0] else "bench_training.py", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "config": {**cfg, "sparsity": SPARSITY, "frequencies": list(FREQUENCIES),
                   "channel_sparsity": CHANNEL_SPARSITY},
        "training": {},
        "mask_update": [],
        "errors": {},
    }
    log(f"start ({'quick' if args.quick else 'full'} run)")

    log("training: Keras 3 plain vs kprune (this process)")
    result["training"]["keras3"] = keras3_training(cfg)
    log("training + mask update: tf_keras/tfmot (subprocess, TF_USE_LEGACY_KERAS=1)")
    tm, err = run_worker(cfg, timeout)
    if err:
        log(f"ERROR: {err}")
        result["errors"]["tfmot"] = err
    tm = tm or {}
    result["training"]["tfmot"] = tm.get("training")
    for t in result["training"].values():
        add_ratios(t)

    log("training: MobileNetV2 plain vs kprune.prune_channels (this process)")
    result["channels"] = channel_training(cfg)
    add_ratios(result["channels"])

    log("mask update: kprune (this process)")
    kp = kprune_mask_update(cfg)
    result["mask_update"] = combine_mask(kp, tm.get("mask"))

    log(f"memory: prune_low_magnitude on an MLP {cfg['memory_mlp']} (fresh subprocess)")
    memory, err = run_worker(cfg, timeout, role="memory")
    if err:
        log(f"ERROR: {err}")
        result["errors"]["memory"] = err
    result["memory"] = memory

    if not args.no_backends:
        log("training on every Keras backend (one subprocess each, bench_backends.py)")
        backends, backend_goals, backend_errors = bench_backends.measure(args.quick)
        result["backends"] = {"sparsity": SPARSITY, "frequencies": list(FREQUENCIES),
                              "config": bench_backends.QUICK if args.quick else bench_backends.FULL,
                              "backends": backends, "goals": backend_goals}
        for e in backend_errors:
            result["errors"][f"backend {e.split(':')[0]}"] = e

    result["goals"] = goals(result)
    result["environment"] = versions()
    result["elapsed_s"] = time.perf_counter() - t_start
    write_json(result, args.out)
    print(render(result))
    log(f"done in {result['elapsed_s']:.0f}s; wrote {os.path.relpath(args.out)}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
