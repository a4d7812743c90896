#!/usr/bin/env python
"""tfmot's four pruning guides, run under tfmot and under kprune: the reference figures.

The code of tfmot's pruning guides (`pruning_with_keras`, `comprehensive_guide`,
`pruning_for_on_device_inference`, `pruning_with_sparsity_2_by_4`), written
once in `benchmarks/tfmot_port.py`, runs twice on scikit-learn digits and the
same step counts: with tfmot 0.8.1 on tf_keras in a subprocess
(`TF_USE_LEGACY_KERAS=1` set before TensorFlow is imported), and with kprune
on Keras 3 in this process. Recorded for each: every pruned weight's final
sparsity (fraction of zeros in its mask), the `pruning_step` after training,
the wrappers' parameter counts `model.summary()` shows, the TensorBoard tags
of `PruningSummaries` and, for small schedules, the sparsity after every batch
(`tfmot_port.schedule_trace`). tfmot's figures are those that
`tests/integration/test_tfmot_guides.py` and `tests/sparsity/test_training.py`
compare kprune with.

Usage:
    python benchmarks/bench_tfmot_guides.py [--quick]

tfmot's side needs tensorflow-model-optimization and tf-keras (`pip install -e
".[bench]"`), or `KPRUNE_TFMOT_PYTHON=<python with them>` to run it in another
environment; a quick run without them records kprune's side only. `--quick`
leaves out the export cells of `pruning_with_keras`. The full run took 65 s (2026-12-07).
"""

import json
import os
import sys

import common

log = common.logger("bench_tfmot_guides")


def masks(port, model):
    rows, steps = port.masks(model)
    return {"sparsity": [list(r) for r in rows], "steps": sorted(steps)}


def tags(port, log_dir):
    import tfmot_port

    return sorted(f"{d}:{t}" for d, t in tfmot_port.event_tags(log_dir))


def record(port, quick):
    """Every guide under `port`: the figures the test compares."""
    import matplotlib

    matplotlib.use("Agg")
    import tensorflow as tf
    import tfmot_port

    keras = port.keras
    keras.utils.set_random_seed(0)
    out = {"versions": {"keras": keras.__version__, "tensorflow": tf.__version__}}
    log(f"{port.name}: schedule traces")
    out["schedule_trace"] = tfmot_port.schedule_trace(port)
    for key, batch_size in (("pruning_with_keras_aligned", 29), ("pruning_with_keras", 128)):
        log(f"{port.name}: {key}")
        run = tfmot_port.pruning_with_keras(port, batch_size, export=key.endswith("aligned") and not quick)
        out[key] = {"batch_size": batch_size, "end_step": run["end_step"], **masks(port, run["model"]),
                    "tags": tags(port, run["logdir"]), "gzipped_sizes": run.get("sizes")}
    log(f"{port.name}: comprehensive_guide")
    run = tfmot_port.comprehensive_guide(port)
    out["comprehensive_guide"] = {
        "params": {k: int(port.wrappers(m)[0].count_params()) for k, (m, _) in run["summaries"].items()},
        **{f"{part}_{k}": v for part in ("fit", "loop") for k, v in masks(port, run[part][0]).items()},
        "fit_tags": tags(port, run["fit"][1]), "loop_tags": tags(port, run["loop"][1]),
        "loaded_layers": run["loaded_layers"], "gzipped_sizes": list(run["gzipped_sizes"])}
    log(f"{port.name}: pruning_for_on_device_inference")
    run = tfmot_port.pruning_for_on_device_inference(port)
    out["pruning_for_on_device_inference"] = {
        "end_step": run["end_step"], **masks(port, run["model"]), "policy_error": run["policy_error"],
        "wrapped": [[type(layer).__name__, list(layer.kernel_size)] for layer in run["wrapped"]],
        "tags": tags(port, run["logdir"])}
    log(f"{port.name}: pruning_with_sparsity_2_by_4")
    run = tfmot_port.pruning_with_sparsity_2_by_4(port)
    os.remove(run["tflite_file"])
    out["pruning_with_sparsity_2_by_4"] = {
        **masks(port, run["pruned"]), "params": run["params"],
        "dense_2_of_4": bool((run["dense_pattern"].reshape(24, -1, 4).sum(-1) <= 2).all()),
        "conv_2_of_4": bool((run["conv_pattern"].reshape(24, -1, 4).sum(-1) == 2).all())}
    return out


def tfmot_worker(config):
    import tensorflow_model_optimization as tfmot
    import tfmot_port

    out = record(tfmot_port.Port.tfmot(), config.get("quick", False))
    out["versions"]["tfmot"] = tfmot.__version__
    return out


GUIDES = ("pruning_with_keras_aligned", "pruning_with_keras", "comprehensive_guide",
          "pruning_for_on_device_inference", "pruning_with_sparsity_2_by_4")


def weight_rows(data):
    """One row per guide and pruned weight: steps, sparsity and zero counts on each side."""
    kp, tm = data["kprune"], data.get("tfmot") or {}
    rows = []
    for guide in GUIDES:
        parts = ("fit", "loop") if guide == "comprehensive_guide" else ("",)
        for part in parts:
            key = f"{part}_" if part else ""
            ours, theirs = kp[guide], tm.get(guide) or {}
            for i, (t, n, s, size) in enumerate(ours[f"{key}sparsity"]):
                other = (theirs.get(f"{key}sparsity") or [])[i:i + 1]
                same = round(s * size) == round(other[0][2] * size) if other else None
                rows.append([guide + (f" ({part})" if part else ""), f"{t}/{n}",
                             "/".join(map(str, theirs.get(f"{key}steps") or [])) or "n/a",
                             "/".join(map(str, ours[f"{key}steps"])),
                             common.num(other[0][2] if other else None, ".4f"), f"{s:.4f}",
                             "n/a" if same is None else "yes" if same else "**no**"])
    return rows


def runs(values):
    """`[0, 0, 0.5]` as "0 x2, 0.5 x1"."""
    out = []
    for v in values:
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return ", ".join(f"{v:g} x{n}" for v, n in out)


def markdown(data):
    num = common.num
    lines = ["tfmot's four pruning guides, one code (`benchmarks/tfmot_port.py`), run with tfmot "
             f"{(data.get('tfmot_versions') or {}).get('tfmot', 'n/a')} on tf_keras and with kprune on Keras 3, on "
             "scikit-learn digits with the same step counts. Sparsity: fraction of zeros in each pruned weight's mask "
             "after training; \"same zeros\": equal zero counts.", ""]
    if data.get("tfmot_error"):
        lines += [f"tfmot's side: {data['tfmot_error']}", ""]
    lines += [common.md_table(["guide", "weight", "tfmot steps", "kprune steps", "tfmot sparsity:",
                               "kprune sparsity:", "same zeros"], weight_rows(data)), "",
              "`pruning_with_keras` with the guide's batch size 128 ends at step 24, which is not a turn of "
              "frequency 100: tfmot never prunes; kprune makes `end_step` a pruning turn (deliberately), so the "
              "guide's 0.8 is applied.", ""]
    kp = data["kprune"]["comprehensive_guide"]["params"]
    tm = ((data.get("tfmot") or {}).get("comprehensive_guide") or {}).get("params") or {}
    lines += ["Parameter counts of the wrapper in the comprehensive guide's models (`model.summary()`; tfmot's "
              "wrapper also holds one threshold per pruned weight):", "",
              common.md_table(["model", "tfmot:", "kprune:"], [[k, num(tm.get(k), ","), num(v, ",")]
                                                                for k, v in kp.items()]), ""]
    traces = (data.get("tfmot") or {}).get("schedule_trace") or {}
    if traces:
        lines += ["Sparsity after each of 30 batches (`schedule_trace`):", ""]
        for name, t in traces.items():
            ours = data["kprune"]["schedule_trace"][name]
            same = ours["sparsity_after_batch"] == t["sparsity_after_batch"]
            lines.append(f"- {name}: {'the same' if same else 'differs'}; tfmot "
                         f"{runs(t['sparsity_after_batch'])}; kprune {runs(ours['sparsity_after_batch'])}")
        lines += ["", "An `end_step` off the frequency's turns is where they differ: kprune applies the final "
                  "sparsity at `end_step` (deliberately, as in `pruning_with_keras` above)."]
    return "\n".join(lines)


def main(argv=None):
    args = common.add_worker_arguments(common.parser(__doc__)).parse_args(argv)
    if args._worker:
        common.write_worker_result(args._result, tfmot_worker(json.loads(args._config)))
        return 0
    run = common.Run("tfmot_guides", args.quick)
    data, errors = {}, []
    missing = common.tfmot_missing()
    if missing and args.quick:
        data["tfmot_error"] = f"skipped: {missing}"
        log(f"tfmot: skipped: {missing}")
    else:
        log("tfmot: the guides in tf_keras (subprocess, TF_USE_LEGACY_KERAS=1)")
        try:
            if missing:
                raise common.WorkerError(missing)
            data["tfmot"] = common.run_worker("bench_tfmot_guides.py", "tfmot", {"quick": args.quick},
                                              timeout=1800, echo="[bench_tfmot_guides", python=common.tfmot_python(),
                                              env=common.child_env(TF_USE_LEGACY_KERAS="1"))
            data["tfmot_versions"] = data["tfmot"]["versions"]
        except common.WorkerError as e:
            data["tfmot_error"] = str(e)
            errors.append(str(e))
            log(f"ERROR {e}")
    import tfmot_port

    data["kprune"] = record(tfmot_port.Port.kprune(), args.quick)
    run.write(data, markdown(data), "tfmot's pruning guides under tfmot and kprune")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
