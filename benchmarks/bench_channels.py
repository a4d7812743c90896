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
    python benchmarks/bench_channels.py [--quick]

`--quick` (about 1 minute): sparsity 0.3 with round_to 1 and 8, MobileNetV2 at
96x96, ~0.6 s of timing per pair instead of ~4 s. The full run took 224 s
(2026-11-23).
"""

import os
import sys
import tempfile
import time

import common

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GOAL = 0.8  # latency speedup / MAC reduction
TORCH_PRUNING_RESNET50 = 0.57
OUTPUT_TOL = 1e-4

FULL = {"sparsities": [0.0, 0.3, 0.5, 0.7], "round_tos": [1, 8, 16], "mobilenet_size": 128,
        "warmup": 10, "min_invokes": 50, "budget_s": 2.0}
QUICK = {"sparsities": [0.3], "round_tos": [1, 8], "mobilenet_size": 96,
         "warmup": 5, "min_invokes": 30, "budget_s": 0.3}
log = common.logger("bench_channels")


# --------------------------------------------------------------------- models
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
    """The ResNet-like net (64x64x3, stem 64 /2, stages 64/128/256) and MobileNetV2, calibrated."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    models = [common.small_resnet(keras, (64, 64, 3), (64, 128, 256), name="resnet_like"),
              common.mobilenet_v2(keras, cfg["mobilenet_size"])]
    for model in models:
        calibrate(keras, model, rng)
    return models


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

    name = model.name
    x_check = np.random.default_rng(1).random((4, *model.input_shape[1:]), dtype="float32")
    x_time = x_check[:1]
    t = time.perf_counter()
    dense = common.Runner("dense", common.to_tflite(model, os.path.join(workdir, f"{name}.tflite")), x_time)
    dense_macs, dense_params = kprune.count_macs(model), kprune.count_params(model)
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
               "params": kprune.count_params(small), "macs": kprune.count_macs(small),
               "widths": conv_widths(keras, small), "output_diff": max_diff(ref, out)}
        row["outputs_match"] = row["output_diff"] <= OUTPUT_TOL
        pruned = common.Runner("pruned", common.to_tflite(small, os.path.join(workdir, f"{name}_{k}.tflite")), x_time)
        row["tflite_diff"] = max_diff(out[:1], pruned.output_for(x_time))
        stats, _ = common.interleave([dense, pruned], cfg["budget_s"], cfg["warmup"], cfg["min_invokes"])
        for side in ("dense", "pruned"):
            row.update({f"{side}_{key}": value for key, value in stats[side].items()})
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
            f"TFLite diff {row['tflite_diff']:.1e} ({time.perf_counter() - t:.1f}s)")
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
def markdown(result):
    num = common.num
    cfg = result.get("config") or {}
    lines = ["`plan_channels` (l2) + `mask_channels` + `remove_channels` at several channel sparsities and "
             "`round_to`, float32 TFLite, LiteRT 1 thread, dense and pruned interleaved; seeded random weights, "
             "BatchNormalization statistics calibrated on random images. Speedup: dense / pruned median ms; p10: "
             "the same for the 10th-percentile latencies (less sensitive to other load); sparsity 0 (an empty "
             "plan) is a noise check.", ""]
    for m in result.get("models") or []:
        shape = "x".join(str(d) for d in m.get("input_shape", []))
        lines += [f"**{m.get('model')}** ({shape} input, {num(m.get('params'), ',')} params, "
                  f"{num((m.get('macs') or 0) / 1e6, '.1f')}M MACs)", ""]
        rows = [[num(row.get("sparsity")), row.get("round_to"), num(row.get("mac_reduction"), ".2f", "x"),
                 num(row.get("dense_ms")), num(row.get("pruned_ms")), num(row.get("speedup"), ".2f", "x"),
                 num(row.get("efficiency")), num(row.get("speedup_p10"), ".2f", "x"),
                 "yes" if row.get("outputs_match", True) else "NO"] for row in m.get("rows") or []]
        lines += [common.md_table(["channel sparsity:", "round_to:", "MAC reduction:", "dense ms:", "pruned ms:",
                                   "speedup:", "speedup / MAC red.:", "p10 speedup:", "outputs match"], rows), ""]
    lines += [f"Goal: speedup >= {cfg.get('goal', GOAL)} x MAC reduction at every sparsity > 0 (Torch-Pruning's "
              f"ResNet-50: ~{TORCH_PRUNING_RESNET50}); speedup / MAC reduction per sparsity:", ""]
    for g in result.get("goals") or []:
        sparsities = "/".join(str(s) for s in g.get("sparsities", []))
        for stat in ("median", "p10"):
            lines.append(f"- {'met' if g.get(f'{stat}_pass') else '**missed**'}: {g.get('model')} round_to="
                         f"{g.get('round_to')}, {stat}: " + " / ".join(num(v) for v in g.get(stat) or [])
                         + f" (sparsity {sparsities})")
    lines += [f"- ERROR {e}" for e in result.get("errors") or []]
    return "\n".join(lines)


def main(argv=None):
    args = common.parser(__doc__).parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    run = common.Run("channels", args.quick)
    result = {"config": {**cfg, "goal": GOAL, "output_tol": OUTPUT_TOL, "importance": "l2", "threads": 1}}
    models = build_models(cfg)
    with tempfile.TemporaryDirectory(prefix="bench_channels_") as workdir:
        result["models"] = [bench_model(model, cfg, workdir) for model in models]
    result["errors"] = [
        f"{m['model']} sparsity {row['sparsity']} round_to {row['round_to']}: removed model's outputs "
        f"differ from the masked model's by {row['output_diff']:.2e}"
        for m in result["models"] for row in m["rows"] if not row["outputs_match"]
    ]
    result["goals"] = goals(result["models"])
    run.write(result, markdown(result), "Channel pruning: MACs vs latency")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
