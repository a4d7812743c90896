#!/usr/bin/env python
"""Training-time cost of pruning: kprune (Keras 3) vs tfmot (tf_keras).

Measures, in one run:

1. Training step time of the tfmot tutorial MNIST CNN (3.27M parameters) on
   synthetic data: Keras 3 plain vs kprune-pruned (ConstantSparsity 0.9,
   frequency 100 and 10), all in this process, interleaved in short `fit`
   chunks (23 steps of a cached tf.data dataset) so machine load affects every
   variant alike; then tf_keras plain vs tfmot-pruned (same architecture,
   batch and schedules) in a subprocess run with `TF_USE_LEGACY_KERAS=1`. Each
   step is timed by callbacks (first in the callback list at
   `on_train_batch_begin`, last at `on_train_batch_end`), so a step's time
   includes the pruning callback and any mask update it does. Median and mean
   are reported: mask updates happen on one step in `frequency`, so the median
   shows the steady per-step overhead and the mean the amortized cost.
2. The same for gradual channel pruning: MobileNetV2 (`alpha=0.5`, 64x64,
   10 classes, `weights=None`), plain vs `kprune.prune_channels` with
   `PolynomialDecay(0 -> 0.5)` over the run at frequency 100 and 10
   (tfmot has no channel pruning).
3. Mask-update time for one Dense kernel of 1M, 4M and 16M weights at 90%
   sparsity, against one `np.abs(w).sum()` pass over the same array (the cost
   of reading the weights once): kprune's `PruneLowMagnitude.update_masks`
   (read weights, compute mask, assign mask and masked weights), kprune's
   internal mask function `kprune.sparsity.mask_math.magnitude_mask` alone
   (measured here: it is what `update_masks` spends its time in), and tfmot's
   `pruning_obj.conditional_mask_update()` + `pruning_obj.weight_mask_op()`
   (the same work), timed eagerly and inside a `tf.function`. "fresh" times
   an update of freshly initialized weights; "re-prune" one of weights that
   are already 90% zeros (every update after the first at constant sparsity).
4. Memory: resident memory that `kprune.prune_low_magnitude` adds to a
   process holding a 96Mi-parameter MLP (6 Dense 4096x4096, 384 MiB of
   float32 weights), beyond the clone's own weights (a fresh subprocess, so
   nothing else is resident).

The same CNN on every Keras backend: `bench_backends.py`.

Usage:
    python benchmarks/bench_training.py [--quick]

The full run took 25 minutes (2026-11-29, loaded machine); `--quick` (few
steps, a 1M kernel, a small MLP) about 2 minutes. tfmot's side needs
tensorflow-model-optimization and tf-keras (`pip install -e ".[bench]"`, or
`KPRUNE_TFMOT_PYTHON=<python with them>`); a quick run without them skips it.
"""

import json
import os
import statistics
import sys
import time

import common

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SPARSITY = 0.9
FREQUENCIES = (100, 10)
# Goals (issue 16): pruned / plain step time, per frequency and statistic.
GOAL_STEP_RATIO = {(100, "median"): 1.05, (100, "mean"): 1.05, (10, "mean"): 1.08}
# A 90% mask update at most this many times one np.abs(w).sum() pass.
GOAL_MASK_VS_READ = 3.0
# Resident memory added by prune_low_magnitude beyond the clone, in weight bytes.
GOAL_MEMORY = 0.3
CHANNEL_SPARSITY = 0.5

FULL = {"batch_size": 32, "chunk_steps": 23, "warmup_chunks": 2, "timed_chunks": 40,
        "mask_sizes": [1 << 20, 1 << 22, 1 << 24], "mask_repeats": 7,
        "channel_image": 64, "channel_timed_chunks": 12, "memory_mlp": [4096, 6]}
QUICK = {"batch_size": 32, "chunk_steps": 23, "warmup_chunks": 1, "timed_chunks": 4,
         "mask_sizes": [1 << 20], "mask_repeats": 3,
         "channel_image": 32, "channel_timed_chunks": 2, "memory_mlp": [1024, 3]}
log = common.logger("bench_training")


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


def fit_on(ds):
    return lambda model, callbacks: model.fit(ds, epochs=1, verbose=0, callbacks=callbacks)


def count_updates(first_step, n_steps, frequency):
    """Mask updates (at steps s >= 0 with s % frequency == 0) in a step range."""
    return sum(1 for s in range(first_step, first_step + n_steps) if s % frequency == 0)


def time_variants(cfg, keras, api, label):
    """Plain vs pruned (each frequency) runs of the same CNN, interleaved.

    `api` is `kprune` or `tfmot.sparsity.keras`: the calls are the same, which
    is the migration kprune promises (change the import).
    """
    keras.utils.set_random_seed(0)
    ds = synthetic_dataset(cfg)

    def prune(model, f):
        schedule = api.ConstantSparsity(SPARSITY, begin_step=0, frequency=f)
        return api.prune_low_magnitude(model, pruning_schedule=schedule)

    def compile_model(model):
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    variants = common.pruning_variants(keras, lambda: common.mnist_cnn(keras), prune, api.UpdatePruningStep,
                                       FREQUENCIES, compile_model)
    timed = common.time_fit_chunks(variants, fit_on(ds), cfg, log, label)
    return variants, timed, int(variants[0]["model"].count_params())


def pruned_variant_stats(cfg, variants, timed, final):
    """Step statistics per variant; for pruned ones the frequency, mask updates
    and `final(model)` (its final step and sparsities)."""
    warm_steps = cfg["warmup_chunks"] * cfg["chunk_steps"]
    results = {}
    for v in variants:
        r = common.step_stats(timed[v["name"]])
        if v["name"] != "plain":
            f = int(v["name"].split("_f")[1])
            # kprune counts steps as tfmot does: step s (1-based) updates when s % f == 0.
            r.update(frequency=f, mask_updates=count_updates(warm_steps + 1, r["steps"], f), **final(v["model"]))
        results[v["name"]] = r
    return results


# ------------------------------------------------------------ keras 3 / kprune
def keras3_training(cfg):
    import keras
    import numpy as np

    import kprune

    variants, timed, n_params = time_variants(cfg, keras, kprune, "keras3/kprune")

    def final(model):
        wrappers = [layer for layer in model.layers if isinstance(layer, kprune.PruneLowMagnitude)]
        return {"final_step": int(keras.ops.convert_to_numpy(wrappers[0].pruning_step)),
                "final_sparsity": {w.name: float(1.0 - np.mean(keras.ops.convert_to_numpy(w.masks[0])))
                                   for w in wrappers}}

    return {"library": "kprune", "keras_version": keras.__version__, "params": n_params,
            **pruned_variant_stats(cfg, variants, timed, final)}


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

    def prune(model, f):
        return kprune.prune_channels(model, kprune.PolynomialDecay(0.0, CHANNEL_SPARSITY, begin_step=0,
                                                                   end_step=total, frequency=f))

    variants = common.pruning_variants(
        keras, lambda: keras.applications.MobileNetV2(input_shape=(side, side, 3), alpha=0.5, weights=None, classes=10),
        prune, kprune.UpdatePruningStep, FREQUENCIES,
        lambda m: m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy"))
    timed = common.time_fit_chunks(variants, fit_on(ds), ccfg, log, "MobileNetV2/prune_channels")
    warm_steps = ccfg["warmup_chunks"] * ccfg["chunk_steps"]
    results = {"model": f"MobileNetV2(alpha=0.5, {side}x{side}, classes=10)",
               "params": int(variants[0]["model"].count_params()),
               "schedule": f"PolynomialDecay(0 -> {CHANNEL_SPARSITY}) over {total} steps"}
    for v in variants:
        r = common.step_stats(timed[v["name"]])
        if v["name"] != "plain":
            f = int(v["name"].split("_f")[1])
            counts = kprune.channel_sparsity(v["model"])
            total_channels = sum(n for _, n in counts.values())
            r.update(frequency=f, mask_updates=count_updates(warm_steps, r["steps"], f),
                     final_channel_sparsity=sum(p for p, _ in counts.values()) / total_channels
                     if total_channels else None)
        results[v["name"]] = r
    return results


def memory_worker(cfg):
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
    mask_bytes = sum(int(np.prod(m.shape)) * np.dtype(m.dtype).itemsize for layer in pruned.layers
                     if isinstance(layer, kprune.PruneLowMagnitude) for m in layer.masks)
    result = {
        "mlp": f"{depth} x Dense({width}) on {width} inputs", "params": int(model.count_params()),
        "weight_bytes": weight_bytes, "mask_bytes": mask_bytes,
        "rss_before": rss0, "rss_after_prune": rss1, "peak_after_prune": peak1,
        "rss_after_update": rss2, "peak_after_update": peak2,
        "prune_s": prune_s, "update_masks_s": update_s,
        "added_over_clone": (rss1 - rss0 - weight_bytes) / weight_bytes,
        "added_over_clone_after_update": (rss2 - rss0 - weight_bytes) / weight_bytes,
    }
    return result



def pruned_dense(api, keras, side):
    """A built Dense(side) on `side` inputs, wrapped by `api.prune_low_magnitude` (kprune or
    tfmot) at constant sparsity SPARSITY, pruning at every step."""
    layer = api.prune_low_magnitude(keras.layers.Dense(side),
                                    pruning_schedule=api.ConstantSparsity(SPARSITY, begin_step=0, frequency=1))
    layer.build((None, side))
    return layer


def kprune_mask_update(cfg):
    import keras
    import numpy as np

    import kprune
    from kprune.sparsity import mask_math as masks

    results = []
    for size in cfg["mask_sizes"]:
        side = int(round(size**0.5))
        rng = np.random.default_rng(1)
        layer = pruned_dense(kprune, keras, side)
        kernel = layer.layer.kernel
        mask = layer.masks[0]
        ones = np.ones((side, side), bool)

        # This iteration's variables bound as defaults (the closures run in this iteration only).
        def fresh(kernel=kernel, mask=mask, rng=rng, side=side, ones=ones):
            kernel.assign(rng.standard_normal((side, side), dtype=np.float32) * 0.05)
            mask.assign(ones)

        def check(kernel=kernel, mask=mask, side=side, size=size):
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
            if int(keep.size - np.count_nonzero(keep)) != int(round(size * SPARSITY)):
                raise RuntimeError(f"magnitude_mask did not prune {side}x{side} to {SPARSITY}")
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
        del layer, kernel, mask, fresh, check
    return results



# -------------------------------------------------------- tf_keras / tfmot worker
def _legacy_imports():
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    return tf, tfmot, keras


def tfmot_training(cfg):
    import numpy as np
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    tf, tfmot, keras = _legacy_imports()
    variants, timed, n_params = time_variants(cfg, keras, tfmot.sparsity.keras, "tf_keras/tfmot")

    def final(model):
        # tfmot increments its step before the mask update in the same train
        # step, so step s (1-based) updates when s % f == 0, as kprune.
        wrappers = [layer for layer in model.layers
                    if isinstance(layer, pruning_wrapper.PruneLowMagnitude) and layer.pruning_vars]
        return {"final_step": int(wrappers[0].pruning_step.numpy()),
                "final_sparsity": {w.name: float(1.0 - np.mean(w.pruning_vars[0][1].numpy())) for w in wrappers}}

    return {"library": "tfmot", "tfmot_version": getattr(tfmot, "__version__", None),
            "tf_keras_version": keras.__version__, "params": n_params,
            **pruned_variant_stats(cfg, variants, timed, final)}


def tfmot_mask_update(cfg):
    import numpy as np

    tf, tfmot, keras = _legacy_imports()
    sparsity = tfmot.sparsity.keras
    results = []
    for size in cfg["mask_sizes"]:
        side = int(round(size**0.5))
        rng = np.random.default_rng(1)
        layer = pruned_dense(sparsity, keras, side)
        weight, mask, threshold = layer.pruning_vars[0]
        # Any step >= begin_step prunes at frequency 1; 1 is what the first
        # training step sees.
        layer.pruning_step.assign(1)
        obj = layer.pruning_obj

        # The closures run in this iteration only. `update` stays argument-free for tf.function; the others get
        # this iteration's variables as defaults.
        def update():
            obj.conditional_mask_update()  # noqa: B023, F821
            obj.weight_mask_op()  # noqa: B023, F821

        update_fn = tf.function(update)
        ones = np.ones((side, side), np.float32)

        def fresh(weight=weight, mask=mask, rng=rng, side=side, ones=ones):
            weight.assign(rng.standard_normal((side, side), dtype=np.float32) * 0.05)
            mask.assign(ones)

        def sync(threshold=threshold):
            return float(threshold.numpy())

        def check(weight=weight, mask=mask, side=side, size=size):
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
        del layer, weight, mask, threshold, obj, update_fn, fresh, sync, check
    return results


def tfmot_worker(cfg):
    """The tfmot side of the benchmark (run with TF_USE_LEGACY_KERAS=1)."""
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1" or "tensorflow" in sys.modules:
        raise RuntimeError("the tfmot worker needs TF_USE_LEGACY_KERAS=1 set before TensorFlow is imported")
    result = {"training": tfmot_training(cfg)}
    log("mask update: tfmot")
    result["mask"] = tfmot_mask_update(cfg)
    return result


# ------------------------------------------------------------------- reporting
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
            f"{v:.2f}x (tfmot {common.num(tfmot, '.1f')}x)", v <= GOAL_MASK_VS_READ)
    memory = result.get("memory")
    if memory:
        v = memory["added_over_clone"]
        add(f"prune_low_magnitude adds <= {GOAL_MEMORY}x weight bytes beyond the clone ({memory['mlp']})",
            v, f"{v:.3f}x", v <= GOAL_MEMORY)
    return out


def variant_rows(t, pruned_name, freqs):
    num = common.num
    rows = []
    for key in ["plain"] + [f"pruned_f{f}" for f in freqs]:
        v = t.get(key) or {}
        plain = key == "plain"
        rows.append(["plain" if plain else f"{pruned_name} f={v.get('frequency', key.split('_f')[-1])}",
                     num(v.get("median_ms")), num(v.get("mean_ms")),
                     num(v.get("median_ratio", 1.0 if plain else None), ".3f"),
                     num(v.get("mean_ratio", 1.0 if plain else None), ".3f"), v.get("mask_updates", 0)])
    return rows


def markdown(r):
    """The tables: step time (kprune and tfmot), channel pruning, mask update, memory; goals."""
    num, ratio, table = common.num, common.ratio, common.md_table
    cfg = r.get("config", {})
    train = r.get("training", {}) or {}
    k3, tm = train.get("keras3") or {}, train.get("tfmot") or {}
    freqs = cfg.get("frequencies", [100, 10])
    steps = (cfg.get("timed_chunks") or 0) * (cfg.get("chunk_steps") or 0)
    lines = [
        f"The tfmot tutorial's MNIST CNN ({num(k3.get('params') or tm.get('params'), ',')} params), batch "
        f"{cfg.get('batch_size')}, ConstantSparsity({cfg.get('sparsity')}) with mask updates every "
        f"{' or '.join(str(f) for f in freqs)} steps (included in the step times), synthetic data; {steps} timed "
        "steps per variant, interleaved. Keras 3 + kprune in one process, tf_keras + tfmot in a subprocess "
        "(`TF_USE_LEGACY_KERAS=1`).",
        "",
    ]
    headers = ["variant", "median ms:", "mean ms:", "median / plain:", "mean / plain:", "mask updates:"]
    rows = []
    for lib, t, pruned, part in (("Keras 3", k3, "kprune", "keras3"), ("tf_keras", tm, "tfmot", "tfmot")):
        if t:
            rows += [[lib, *row] for row in variant_rows(t, pruned, freqs)]
        else:
            reason = (r.get("errors") or {}).get(part) or (r.get("skipped") or {}).get(part) or "no data"
            rows.append([lib, f"(not run: {reason})", "", "", "", "", ""])
    lines.append(table(["library", *headers], rows))
    if k3 and tm:
        lines += ["", "Pruned step time, kprune vs tfmot (absolute, same architecture and schedule):", ""]
        rows = []
        for f in freqs:
            a, b = k3.get(f"pruned_f{f}") or {}, tm.get(f"pruned_f{f}") or {}
            rows.append([f"f={f}", num(ratio(a.get("median_ms"), b.get("median_ms")), ".3f"),
                         num(ratio(a.get("mean_ms"), b.get("mean_ms")), ".3f")])
        lines.append(table(["mask updates every", "median kprune / tfmot:", "mean kprune / tfmot:"], rows))
    ch = r.get("channels") or {}
    if ch:
        lines += ["", "## Gradual channel pruning", "",
                  f"`kprune.prune_channels` (tfmot has none): {ch.get('model')} ({num(ch.get('params'), ',')} "
                  f"params), {ch.get('schedule')}, batch {cfg.get('batch_size')}, "
                  f"{(cfg.get('channel_timed_chunks') or 0) * (cfg.get('chunk_steps') or 0)} timed steps per "
                  "variant, interleaved.", "", table(headers, variant_rows(ch, "prune_channels", freqs))]
    masks = r.get("mask_update") or []
    if masks:
        lines += ["", "## Mask-update cost", "",
                  f"One Dense kernel pruned to {cfg.get('sparsity')}: kprune `update_masks` (compute and assign mask "
                  "and masked weights) vs tfmot's mask update (its faster of eager and `tf.function`); median of "
                  f"{masks[0].get('repeats')} repeats. \"x read\": the time over one `np.abs(w).sum()` pass on the "
                  "same array (tfmot's against that pass timed in its own process). \"re-prune\": weights already at "
                  "the target sparsity. \"mask_math\": kprune's `magnitude_mask` alone, on fresh weights.", ""]
        rows = []
        for m in masks:
            shape = "x".join(str(d) for d in m.get("shape", [])) or str(m.get("size"))
            rows.append([shape, num(m.get("abs_sum_ms"), ".1f"), num(m.get("kprune_update_masks_ms"), ".1f"),
                         num(m.get("kprune_vs_read"), ".2f", "x"), num(m.get("kprune_magnitude_mask_ms"), ".1f"),
                         num(m.get("tfmot_best_ms"), ".1f"), num(m.get("tfmot_vs_read"), ".1f", "x"),
                         num(m.get("kprune_update_masks_reprune_ms"), ".1f"),
                         num(m.get("kprune_reprune_vs_read"), ".2f", "x"), num(m.get("tfmot_best_reprune_ms"), ".1f"),
                         num(m.get("tfmot_reprune_vs_read"), ".1f", "x")])
        lines.append(table(["kernel", "abs.sum ms:", "kprune ms:", "kprune x read:", "mask_math ms:", "tfmot ms:",
                            "tfmot x read:", "re-prune kprune ms:", "x read:", "re-prune tfmot ms:", "x read:"], rows))
    memory = r.get("memory") or {}
    if memory:
        mib = 1 << 20
        lines += ["", "## Memory", "",
                  f"`prune_low_magnitude` on {memory.get('mlp')} ({num(memory.get('params'), ',')} params, "
                  f"{memory['weight_bytes'] / mib:.0f} MiB of float32 weights; boolean masks "
                  f"{memory['mask_bytes'] / mib:.0f} MiB), in a fresh process: resident memory "
                  f"+{(memory['rss_after_prune'] - memory['rss_before']) / mib:.0f} MiB, i.e. the clone plus "
                  f"{memory['added_over_clone']:.3f}x the weights' bytes; peak "
                  f"+{(memory['peak_after_prune'] - memory['rss_before']) / mib:.0f} MiB. "
                  f"`update_masks({cfg.get('sparsity')})` of all {num(memory.get('params'), ',')} weights: "
                  f"{memory['update_masks_s']:.2f} s, resident "
                  f"+{(memory['rss_after_update'] - memory['rss_before']) / mib:.0f} MiB in all."]
    lines += ["", "## Goals", "", common.goal_lines(r.get("goals") or [])]
    lines += [f"- ERROR {k}: {v}" for k, v in (r.get("errors") or {}).items()]
    lines += [f"- skipped {k}: {v}" for k, v in (r.get("skipped") or {}).items()]
    return "\n".join(lines)


def main(argv=None):
    args = common.add_worker_arguments(common.parser(__doc__)).parse_args(argv)
    if args._worker:
        work = {"tfmot": tfmot_worker, "memory": memory_worker}[args._worker]
        common.write_worker_result(args._result, work(json.loads(args._config)))
        return 0
    cfg = dict(QUICK if args.quick else FULL)
    timeout = 600 if args.quick else 1800
    run = common.Run("training", args.quick)
    result = {"config": {**cfg, "sparsity": SPARSITY, "frequencies": list(FREQUENCIES),
                         "channel_sparsity": CHANNEL_SPARSITY},
              "training": {}, "mask_update": [], "errors": {}, "skipped": {}}

    log("training: Keras 3 plain vs kprune (this process)")
    result["training"]["keras3"] = keras3_training(cfg)
    tm = {}
    missing = common.tfmot_missing()
    if missing and args.quick:
        result["skipped"]["tfmot"] = missing
        log(f"tfmot: skipped: {missing}")
    else:
        log("training + mask update: tf_keras/tfmot (subprocess, TF_USE_LEGACY_KERAS=1)")
        try:
            if missing:
                raise common.WorkerError(missing)
            tm = common.run_worker("bench_training.py", "tfmot", cfg, timeout=timeout, echo="[bench_training",
                                   python=common.tfmot_python(), env=common.child_env(TF_USE_LEGACY_KERAS="1"))
        except common.WorkerError as e:
            log(f"ERROR: {e}")
            result["errors"]["tfmot"] = str(e)
    result["training"]["tfmot"] = tm.get("training")
    for t in result["training"].values():
        add_ratios(t)

    log("training: MobileNetV2 plain vs kprune.prune_channels (this process)")
    result["channels"] = channel_training(cfg)
    add_ratios(result["channels"])

    log("mask update: kprune (this process)")
    result["mask_update"] = combine_mask(kprune_mask_update(cfg), tm.get("mask"))

    log(f"memory: prune_low_magnitude on an MLP {cfg['memory_mlp']} (fresh subprocess)")
    try:
        result["memory"] = common.run_worker("bench_training.py", "memory", cfg, timeout=timeout)
    except common.WorkerError as e:
        log(f"ERROR: {e}")
        result["errors"]["memory"] = str(e)
        result["memory"] = None
    result["goals"] = goals(result)
    run.write(result, markdown(result), "Training overhead, mask updates and memory vs tfmot")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
