#!/usr/bin/env python
"""Every `keras.applications` architecture through kprune's two pipelines.

For each constructor in the installed Keras (`weights=None`, small inputs,
10 classes, logits):

(a) unstructured: `prune_low_magnitude` (50%, frequency 1) -> `fit` 2 steps of 4
    -> `strip_pruning` -> `summary` -> `export_tflite` (float32, verified in
    LiteRT, no latency);
(b) channels: `plan_channels(0.3)` -> `mask_channels` -> `remove_channels`,
    outputs of the removed model against the masked one (max |diff| <= 1e-4
    x max(1, max |output|)).

A `ValueError` that names a layer counts as a refusal, any other exception
as a failure. Each architecture runs in its own subprocess (a crash or a
memory blow-up stays with it), and results are appended to a JSON lines
state file, so an interrupted run resumes where it stopped.

Usage:
    python benchmarks/bench_architectures.py [--quick] [--families] [--only NAME ...]
        [--fresh] [--retry-crashed]

`--families` runs one (the smallest) architecture per family, as the test
suite does (tests/integration/test_applications.py); `--quick` runs one
architecture (MobileNetV3Small, about 1 minute), afresh. The full run (40
architectures) took 7,962 s (2.2 hours) of per-architecture time (2026-11-29, loaded
machine, over two sessions); the state file `<results>/architectures.state.jsonl`
(ignored by git) lets an interrupted run resume.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import common

QUICK = ("MobileNetV3Small",)

# Smallest input each family accepts with weights=None (NASNet and the
# Inception family need more than 32 pixels).
MIN_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71, "NASNetLarge": 32, "NASNetMobile": 32}
DEFAULT_SIZE = 32

# One representative (the smallest) per family.
FAMILIES = {
    "ConvNeXt": "ConvNeXtTiny", "DenseNet": "DenseNet121", "EfficientNet": "EfficientNetB0",
    "EfficientNetV2": "EfficientNetV2B0", "InceptionResNetV2": "InceptionResNetV2",
    "InceptionV3": "InceptionV3", "MobileNet": "MobileNet", "MobileNetV2": "MobileNetV2",
    "MobileNetV3": "MobileNetV3Small", "NASNet": "NASNetMobile", "ResNet": "ResNet50",
    "ResNetV2": "ResNet50V2", "VGG": "VGG16", "Xception": "Xception",
}


# Millions of parameters with the ImageNet head (Keras' documentation): the
# full run goes smallest first, so an interrupted run has covered the most.
_SIZE_M = {
    "MobileNetV3Small": 2.5, "MobileNetV2": 3.5, "MobileNet": 4.3, "NASNetMobile": 5.3,
    "EfficientNetB0": 5.3, "MobileNetV3Large": 5.4, "EfficientNetV2B0": 7.2, "EfficientNetB1": 7.9,
    "DenseNet121": 8.1, "EfficientNetV2B1": 8.2, "EfficientNetB2": 9.2, "EfficientNetV2B2": 10.2,
    "EfficientNetB3": 12.3, "DenseNet169": 14.3, "EfficientNetV2B3": 14.5, "EfficientNetB4": 19.5,
    "DenseNet201": 20.2, "EfficientNetV2S": 21.6, "Xception": 22.9, "InceptionV3": 23.9,
    "ResNet50": 25.6, "ResNet50V2": 25.6, "ConvNeXtTiny": 28.6, "EfficientNetB5": 30.6,
    "EfficientNetB6": 43.3, "ResNet101": 44.7, "ResNet101V2": 44.7, "ConvNeXtSmall": 50.2,
    "EfficientNetV2M": 54.4, "InceptionResNetV2": 55.9, "ResNet152": 60.4, "ResNet152V2": 60.4,
    "EfficientNetB7": 66.7, "ConvNeXtBase": 88.5, "NASNetLarge": 88.9, "EfficientNetV2L": 119.0,
    "VGG16": 138.4, "VGG19": 143.7, "ConvNeXtLarge": 197.7, "ConvNeXtXLarge": 350.1,
}


def architectures():
    """Every constructor in the installed `keras.applications`, smallest first."""
    import keras

    names = [n for n in dir(keras.applications) if n[:1].isupper()
             and callable(getattr(keras.applications, n))]
    return sorted(names, key=lambda n: (_SIZE_M.get(n, 1e9), n))


def build(name):
    """The architecture with random weights, a small input and logits."""
    import keras

    size = MIN_SIZE.get(name, DEFAULT_SIZE)
    kwargs = dict(weights=None, input_shape=(size, size, 3), classes=10)
    ctor = getattr(keras.applications, name)
    try:
        return ctor(classifier_activation=None, **kwargs)
    except TypeError:  # constructors without classifier_activation
        return ctor(**kwargs)


def _refusal(error):
    """A ValueError that names a layer ('...' (Class)) is a clear refusal."""
    return isinstance(error, ValueError) and "'" in str(error) and "(" in str(error)


def run_case(name, workdir):
    """Both pipelines on one architecture; a dict of figures (see the module doc)."""
    import keras
    import numpy as np

    import kprune

    keras.utils.set_random_seed(0)
    model = build(name)
    size = model.inputs[0].shape[1]
    x = np.random.default_rng(0).standard_normal((8, size, size, 3)).astype("float32") * 0.5
    y = np.arange(8) % 10
    result = {"name": name, "input": int(size), "params": kprune.count_params(model),
              "macs": kprune.count_macs(model)}

    start = time.perf_counter()
    try:
        pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.5, 0, frequency=1))
        # Batches of 4: with 2, BatchNormalization statistics of deep nets at
        # 1x1 spatial size (DenseNet, EfficientNet at 32x32) turn the random
        # network's outputs into NaN, pruned or not.
        pruned.compile(keras.optimizers.SGD(1e-3, clipnorm=1.0),
                       keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        pruned.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[kprune.UpdatePruningStep()])
        stripped = kprune.strip_pruning(pruned)
        summary = kprune.summary(stripped)
        report = kprune.export_tflite(stripped, os.path.join(workdir, f"{name}.tflite"),
                                      measure_latency=False)
        result["unstructured"] = {
            "status": "ok" if report.verified else "not verified",
            "sparsity": round(summary.sparsity, 4), "tflite_bytes": report.file_bytes,
            "relative_error": report.verification["relative_error"],
            "keras_outputs_finite": report.verification["keras_finite"],
        }
    except Exception as e:  # recorded, not raised: the table shows it
        status = "refused" if _refusal(e) else "FAILED"
        result["unstructured"] = {"status": status, "error": f"{type(e).__name__}: {str(e)[:400]}"}
    result["unstructured"]["seconds"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    try:
        plan = kprune.plan_channels(model, 0.3)
        masked = kprune.mask_channels(model, plan)
        small = kprune.remove_channels(masked)
        expected = keras.ops.convert_to_numpy(masked(x, training=False))
        diff = float(np.max(np.abs(keras.ops.convert_to_numpy(small(x, training=False)) - expected)))
        scale = max(1.0, float(np.max(np.abs(expected))))
        result["channels"] = {
            "status": "ok" if diff <= 1e-4 * scale else "NOT EQUAL",
            "pruned_channels": plan.num_pruned, "params_after": kprune.count_params(small),
            "macs_after": kprune.count_macs(small), "max_abs_diff": diff,
        }
    except Exception as e:
        status = "refused" if _refusal(e) else "FAILED"
        result["channels"] = {"status": status, "error": f"{type(e).__name__}: {str(e)[:400]}"}
    result["channels"]["seconds"] = round(time.perf_counter() - start, 1)
    return result


def markdown(results):
    rows = []
    for r in results:
        a, b = r.get("unstructured", {}), r.get("channels", {})
        diff = b.get("max_abs_diff")
        rows.append([r["name"], r.get("input", ""), f"{r.get('params', 0):,}", a.get("status", "-"),
                     b.get("status", "-"), f"{b.get('params_after', 0):,}", "-" if diff is None else f"{diff:.1e}",
                     f"{r.get('seconds', a.get('seconds', 0) + b.get('seconds', 0)):.0f}"])
    ok = sum(r.get("unstructured", {}).get("status") == "ok" and r.get("channels", {}).get("status") == "ok"
             for r in results)
    return "\n".join([
        "Every constructor in the installed `keras.applications` (`weights=None`, 32x32 inputs, 75x75 for the "
        "Inception family and 71x71 for Xception, 10 classes, logits) through (a) `prune_low_magnitude` (50%) -> "
        "`fit` 2 steps -> `strip_pruning` -> `summary` -> `export_tflite` (verified in LiteRT) and (b) "
        "`plan_channels(0.3)` -> `mask_channels` -> `remove_channels`, outputs compared with the masked model's "
        "(max |diff| <= 1e-4 x max(1, max |output|)). Each architecture runs in its own process.", "",
        f"{ok} of {len(results)} architectures ok in both pipelines.", "",
        common.md_table(["architecture", "input:", "params:", "(a) prune/fit/strip/export", "(b) channels 0.3",
                         "params after (b):", "max abs diff:", "time (s):"], rows)])


def _child(name, workdir):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print(json.dumps(run_case(name, workdir)))


def main(argv=None):
    parser = common.parser(__doc__, "one architecture (MobileNetV3Small), afresh")
    parser.add_argument("--families", action="store_true", help="one architecture per family")
    parser.add_argument("--only", nargs="+", help="these architectures (added to the table of earlier runs)")
    parser.add_argument("--fresh", action="store_true", help="ignore the state of an earlier run")
    parser.add_argument("--retry-crashed", action="store_true", help="run again the architectures that crashed")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.workdir)

    run = common.Run("architectures", args.quick)
    names = args.only or (QUICK if args.quick else sorted(FAMILIES.values()) if args.families else architectures())
    state = os.path.join(common.results_dir(args.quick), "architectures.state.jsonl")
    done = {}
    if os.path.exists(state) and not (args.fresh or args.quick):
        with open(state) as f:
            for line in f:
                row = json.loads(line)
                if not (args.retry_crashed and "CRASHED" in (row["unstructured"]["status"], row["channels"]["status"])):
                    done[row["name"]] = row
    elif os.path.exists(state):
        os.remove(state)
    with tempfile.TemporaryDirectory() as workdir:
        for k, name in enumerate(names, 1):
            if name in done:
                run.log(f"[{k}/{len(names)}] {name}: done earlier")
                continue
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", name, "--workdir", workdir],
                                  capture_output=True, text=True, env=common.child_env())
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode or not lines:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                row = {"name": name, "unstructured": {"status": "CRASHED", "error": tail},
                       "channels": {"status": "CRASHED"}}
            else:
                row = json.loads(lines[-1])
            done[name] = row
            os.makedirs(os.path.dirname(state), exist_ok=True)
            with open(state, "a") as f:
                f.write(json.dumps(row) + "\n")
            run.log(f"[{k}/{len(names)}] {name}: {row['unstructured']['status']} / "
                    f"{row['channels']['status']} ({time.perf_counter() - start:.0f} s)")
    # Every architecture measured so far (an `--only` run adds to the table);
    # the state file stays: it is the record that `--fresh` discards.
    order = {n: i for i, n in enumerate(architectures())}
    results = sorted(done.values(), key=lambda r: order.get(r["name"], len(order)))
    run.write({"results": results}, markdown(results), "Every `keras.applications` architecture")
    failed = [r["name"] for r in results if "ok" != r["unstructured"]["status"] or "ok" != r["channels"]["status"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
