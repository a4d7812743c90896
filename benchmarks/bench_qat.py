#!/usr/bin/env python
"""Quantization-aware training: kprune.quantization against post-training int8, and against tfmot.

Two models, trained here on scikit-learn digits (`common.digits`, seed 0:
1437 training and 360 test images):

* the PQAT guide's CNN (tfmot's `combine/pqat_example`: Reshape, Conv2D 12@3x3
  ReLU, MaxPool, Dense 10) on 28x28 digits;
* a MobileNetV2-style network on 32x32 digits: a stride-2 stem, inverted
  residual blocks (1x1 expand + BN + ReLU6, 3x3 depthwise + BN + ReLU6, 1x1
  linear projection + BN, Add where shapes match), 1x1 head, global average
  pooling, Dense 10 (BN momentum 0.9).

Per model and seed, each file exported with `kprune.export_tflite` (verified
in LiteRT) and its accuracy measured in LiteRT on the whole test set:

1. float: trained `float_epochs` (Adam 1e-3, batch 32), float32 file;
2. PTQ int8: full integer, calibrated on 256 training images;
3. QAT int8: `kprune.quantization.quantize_model`, fine-tuned `qat_epochs`
   (Adam 1e-4), exported with its learned ranges (no calibration);
4. pruned 50% / 80% + PTQ: `kprune.prune_low_magnitude` with
   `PolynomialDecay(0 -> s)` over the first two thirds of `prune_epochs`
   (Adam 3e-4, frequency 10), `strip_pruning`, PTQ int8;
5. PQAT 50% / 80%: the pruned model through `quantize_apply` with
   `Default8BitPrunePreserveQuantizeScheme`, fine-tuned `qat_epochs`
   (Adam 1e-4), exported; "zeros kept" checks that every weight that was 0
   after pruning is 0 in the Keras model after PQAT, and that the file's int8
   kernels hold at least as many zeros (symmetric quantization keeps 0
   exact; weights smaller than half a step become 0 too).

For the QAT and PQAT files, top-1 agreement with the Keras QAT model on the
test set and the largest logit difference in output quantization steps.

tfmot: the same pipeline with tfmot 0.8.1 on tf_keras in a subprocess
(`TF_USE_LEGACY_KERAS=1`) -- on the PQAT guide's CNN all of it, on the
MobileNetV2-style network float, PTQ and QAT: `quantize_model`,
`prune_low_magnitude`, `strip_pruning`, `quantize_apply` with
`tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()`, and
`tf.lite.TFLiteConverter` (`Optimize.DEFAULT`, the same calibration images for
PTQ), the same data, epochs and optimizers; accuracies in LiteRT.

Outlier channel: a setting where PTQ loses accuracy and QAT does not. The
guide CNN (seed 0) with one conv filter and its bias multiplied by S and the
Dense weights reading that channel divided by S: the same function (ReLU and
max pooling are positively homogeneous), but one channel's activations S
times the others' -- the range disparity that BN folding and unbalanced
layers produce (Nagel et al., "Data-free quantization", 2019). TFLite's
per-tensor activation scale then spends the int8 grid on that channel; PTQ
cannot adapt, QAT fine-tunes the weights to the grid (3 epochs, Adam 1e-4).

Goals (issue 27): QAT int8 accuracy >= PTQ int8 on every model and within
0.5 point of float (means over seeds); PQAT keeps every zero; kprune's PQAT
within 0.5 point of tfmot's on the guide CNN. A check before them: every
seed's float model reaches 80% (a baseline that did not train would make the
comparisons meaningless; `--quick` trains the MobileNetV2-style model 3 epochs
because after one its BatchNorm moving statistics still lag the weights).

Usage:
    python benchmarks/bench_qat.py [--quick]

A full run took 1,563 s (26 min, tfmot's side included) on 2 cores shared with
other work (load average about 10), 2026-12-07; a quick run about 150 s
without tfmot.

tfmot's side needs tensorflow-model-optimization and tf-keras (`pip install -e
".[bench]"`, or `KPRUNE_TFMOT_PYTHON=<python with them>`); a quick run without
them skips it, a full run records the error and exits 1.
"""

import gzip
import json
import os
import statistics
import sys
import tempfile

import common

log = common.logger("bench_qat")

FULL = {"seeds": [0, 1, 2], "guide_epochs": 10, "mbv2_epochs": 15, "qat_epochs": 3, "prune_epochs": 4,
        "sparsities": [0.5, 0.8], "outlier_scales": [300, 1000], "mbv2_width": 16}
# mbv2_epochs >= 3: after one epoch the MobileNetV2-style model is right in training mode (batch
# statistics, ~80%) but near chance in inference mode (~16%): its 17 BatchNorms' moving statistics lag
# behind weights that change fast in the first epoch (in tf_keras too). From the second epoch on they agree.
QUICK = {"seeds": [0], "guide_epochs": 2, "mbv2_epochs": 3, "qat_epochs": 1, "prune_epochs": 1,
         "sparsities": [0.5], "outlier_scales": [1000], "mbv2_width": 8}
CALIBRATION = 256
SANE_FLOAT = 0.8  # a float model below this on digits is a broken baseline, not a result
MODELS = ("guide_cnn", "mobilenet_v2_style")
COMPUTE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


# ------------------------------------------------------------------ models
def guide_cnn(keras):
    """tfmot's PQAT guide model (Keras 3 or tf_keras)."""
    L = keras.layers
    return keras.Sequential([keras.Input((28, 28)), L.Reshape((28, 28, 1)), L.Conv2D(12, 3, activation="relu"),
                             L.MaxPooling2D(2), L.Flatten(), L.Dense(10)])


def mobilenet_v2_style(keras, width=16, size=32):
    """A small MobileNetV2: inverted residuals with depthwise convolutions (Keras 3 or tf_keras)."""
    L = keras.layers

    def conv_bn(x, filters, kernel=1, strides=1, relu6=True, depthwise=False):
        if depthwise:
            x = L.DepthwiseConv2D(kernel, strides, padding="same", use_bias=False)(x)
        else:
            x = L.Conv2D(filters, kernel, strides, padding="same", use_bias=False)(x)
        x = L.BatchNormalization(momentum=0.9)(x)
        return L.ReLU(6.0)(x) if relu6 else x

    inputs = keras.Input((size, size, 1))
    x = conv_bn(inputs, width, 3, 2)
    x = conv_bn(x, None, 3, depthwise=True)
    x = conv_bn(x, width, relu6=False)
    for expand, out, strides in ((4, 24, 2), (4, 24, 1), (4, 32, 2), (4, 32, 1), (4, 48, 1)):
        h = conv_bn(x, x.shape[-1] * expand)
        h = conv_bn(h, None, 3, strides, depthwise=True)
        h = conv_bn(h, out, relu6=False)
        x = L.Add()([x, h]) if strides == 1 and x.shape[-1] == out else h
    x = conv_bn(x, 8 * width)
    return keras.Model(inputs, L.Dense(10)(L.GlobalAveragePooling2D()(x)), name="mobilenet_v2_style")


def data(model_name):
    x_train, y_train, x_test, y_test = common.digits(28 if model_name == "guide_cnn" else 32)
    if model_name == "guide_cnn":
        x_train, x_test = x_train[..., 0], x_test[..., 0]
    return x_train, y_train, x_test, y_test


# ------------------------------------------------------- files, both sides
def litert_outputs(path, x):
    """The file's (dequantized) outputs on `x`, one example per invoke."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for sample in x:
        interpreter.set_tensor(inp["index"], sample[None].astype(np.float32))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.array(outputs)


def file_kernel_zeros(path):
    """Zeros of the weight tensors of the file's convolutions and matmuls, and whether all are int8."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    zeros, int8 = 0, True
    for op in interpreter._get_ops_details():
        if op["op_name"] in COMPUTE_OPS:
            weight = interpreter.get_tensor(op["inputs"][1])
            int8 &= weight.dtype == np.int8
            zeros += int(np.sum(weight == 0))
    return zeros, bool(int8)


def file_row(path, x_test, y_test, keras_outputs=None, output_step=None):
    """Accuracy, sizes and (for QAT files) agreement with the Keras model."""
    import numpy as np

    outputs = litert_outputs(path, x_test)
    with open(path, "rb") as f:
        content = f.read()
    row = {"accuracy": float(np.mean(np.argmax(outputs, -1) == y_test)), "file_bytes": len(content),
           "gzip_bytes": len(gzip.compress(content, compresslevel=9))}
    row["kernel_zeros"], row["int8"] = file_kernel_zeros(path)
    if keras_outputs is not None:
        row["keras_accuracy"] = float(np.mean(np.argmax(keras_outputs, -1) == y_test))
        row["top1_agreement"] = float(np.mean(np.argmax(outputs, -1) == np.argmax(keras_outputs, -1)))
        if output_step:
            steps = np.abs(outputs - keras_outputs) / output_step
            row["max_diff_steps"] = float(np.max(steps))
            row["mean_diff_steps"] = float(np.mean(steps))
            row["within_2_steps"] = float(np.mean(steps <= 2 + 1e-3))
    return row


def kernel_zero_masks(model):
    """`{layer name: kernel == 0}` of every kernel (inside wrappers too), in layer order (Keras 3 or tf_keras)."""
    import numpy as np

    masks = {}
    for layer in model.layers:
        for weight in layer.trainable_weights:
            if "kernel" in weight.name.split("/")[-1]:
                masks[getattr(layer, "layer", layer).name] = np.asarray(weight.numpy()) == 0
    return masks


def pqat_row(qat_row, name, pqat, before):
    """The PQAT model's file row (`qat_row`) with whether training kept the pruned model's zeros
    (`before`: `kernel_zero_masks` of the stripped model) in Keras and in the file."""
    import numpy as np

    after = kernel_zero_masks(pqat)
    row = qat_row(name, pqat)
    row["keras_zeros"] = int(sum(m.sum() for m in before.values()))
    row["zeros_kept"] = all(bool(np.all(after[layer][mask])) for layer, mask in before.items())
    row["file_keeps_zeros"] = row["kernel_zeros"] >= row["keras_zeros"]
    return row


def mean(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.fmean(values) if values else None


# ------------------------------------------------------------ kprune side
def compile_model(keras, model, lr):
    return common.compile_classifier(keras, model, lr)


def kprune_pipeline(model_name, seed, cfg, workdir):
    import keras
    import numpy as np

    import kprune
    from kprune.quantization import (
        Default8BitPrunePreserveQuantizeScheme,
        quantize_annotate_model,
        quantize_apply,
        quantize_model,
    )

    x_train, y_train, x_test, y_test = data(model_name)
    keras.utils.set_random_seed(seed)
    build = guide_cnn if model_name == "guide_cnn" else lambda k: mobilenet_v2_style(k, cfg["mbv2_width"])
    model = compile_model(keras, build(keras), 1e-3)
    model.fit(x_train, y_train, epochs=cfg[f"{'guide' if model_name == 'guide_cnn' else 'mbv2'}_epochs"],
              batch_size=32, verbose=0)
    rows = {}

    def export(name, m, **kwargs):
        path = os.path.join(workdir, f"{model_name}_{seed}_{name}.tflite")
        report = kprune.export_tflite(m, path, measure_latency=False, sample_inputs=x_test[:64], **kwargs)
        return path, report

    def qat_row(name, qat):
        path, report = export(name, qat)
        last = qat.layers[-1]
        low, high = (float(keras.ops.convert_to_numpy(v)) for v in last.non_trainable_weights
                     if v.name.endswith(("_min", "_max")))
        row = file_row(path, x_test, y_test, qat.predict(x_test, verbose=0), (high - low) / 255)
        row.update(quantization=report.quantization, verified=report.verified)
        return row

    path, report = export("float", model)
    rows["float"] = {**file_row(path, x_test, y_test), "keras_accuracy": common.accuracy(model, x_test, y_test)}
    path, report = export("ptq", model, quantize="int8", representative_data=x_train[:CALIBRATION])
    rows["ptq_int8"] = {**file_row(path, x_test, y_test), "verified": report.verified}
    log(f"{model_name} seed {seed}: float {rows['float']['accuracy']:.4f}, PTQ {rows['ptq_int8']['accuracy']:.4f}")
    qat = compile_model(keras, quantize_model(model), 1e-4)
    qat.fit(x_train, y_train, epochs=cfg["qat_epochs"], batch_size=32, verbose=0)
    rows["qat_int8"] = qat_row("qat", qat)
    log(f"{model_name} seed {seed}: QAT {rows['qat_int8']['accuracy']:.4f}")
    steps = cfg["prune_epochs"] * int(np.ceil(len(x_train) / 32))
    for sparsity in cfg["sparsities"]:
        label = f"{int(sparsity * 100)}"
        schedule = kprune.PolynomialDecay(0.0, sparsity, 0, max(10, (2 * steps // 3) // 10 * 10), frequency=10)
        pruned = compile_model(keras, kprune.prune_low_magnitude(model, pruning_schedule=schedule), 3e-4)
        pruned.fit(x_train, y_train, epochs=cfg["prune_epochs"], batch_size=32, verbose=0,
                   callbacks=[kprune.UpdatePruningStep()])
        stripped = kprune.strip_pruning(pruned)
        before = kernel_zero_masks(stripped)
        path, report = export(f"pruned{label}_ptq", stripped, quantize="int8",
                              representative_data=x_train[:CALIBRATION])
        rows[f"pruned{label}_ptq_int8"] = {**file_row(path, x_test, y_test),
                                           "keras_zeros": int(sum(m.sum() for m in before.values())),
                                           "keras_accuracy": common.accuracy(stripped, x_test, y_test)}
        pqat = compile_model(keras, quantize_apply(quantize_annotate_model(stripped),
                                                   Default8BitPrunePreserveQuantizeScheme()), 1e-4)
        pqat.fit(x_train, y_train, epochs=cfg["qat_epochs"], batch_size=32, verbose=0)
        row = rows[f"pqat{label}_int8"] = pqat_row(qat_row, f"pqat{label}", pqat, before)
        log(f"{model_name} seed {seed}: {label}% pruned + PTQ {rows[f'pruned{label}_ptq_int8']['accuracy']:.4f}, "
            f"PQAT {row['accuracy']:.4f}, zeros kept {row['zeros_kept']}")
    return rows


def outlier_channel(cfg, workdir):
    """PTQ vs QAT on the guide CNN with one channel S times the others (see the module)."""
    import keras

    import kprune
    from kprune.quantization import quantize_model

    x_train, y_train, x_test, y_test = data("guide_cnn")
    keras.utils.set_random_seed(0)
    base = compile_model(keras, guide_cnn(keras), 1e-3)
    base.fit(x_train, y_train, epochs=cfg["guide_epochs"], batch_size=32, verbose=0)
    rows = []
    for scale in cfg["outlier_scales"]:
        model = keras.models.clone_model(base)
        model.set_weights(base.get_weights())
        conv, dense = model.layers[1], model.layers[4]
        kernel, bias = conv.get_weights()
        kernel[..., 0] *= scale
        bias[0] *= scale
        conv.set_weights([kernel, bias])
        weights, dense_bias = dense.get_weights()
        weights = weights.reshape(13, 13, 12, 10)
        weights[:, :, 0, :] /= scale
        dense.set_weights([weights.reshape(-1, 10), dense_bias])
        row = {"scale": scale, "float": common.accuracy(model, x_test, y_test)}
        path = os.path.join(workdir, f"outlier{scale}_ptq.tflite")
        kprune.export_tflite(model, path, quantize="int8", representative_data=x_train[:CALIBRATION],
                             measure_latency=False, verify=False)
        row["ptq_int8"] = file_row(path, x_test, y_test)["accuracy"]
        qat = compile_model(keras, quantize_model(model), 1e-4)
        qat.fit(x_train, y_train, epochs=cfg["qat_epochs"], batch_size=32, verbose=0)
        path = os.path.join(workdir, f"outlier{scale}_qat.tflite")
        kprune.export_tflite(qat, path, measure_latency=False)
        row["qat_int8"] = file_row(path, x_test, y_test)["accuracy"]
        log(f"outlier x{scale}: float {row['float']:.4f}, PTQ {row['ptq_int8']:.4f}, QAT {row['qat_int8']:.4f}")
        rows.append(row)
    return rows


# ------------------------------------------------------------- tfmot side
def tfmot_pipeline(model_name, seed, cfg, workdir):
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    x_train, y_train, x_test, y_test = data(model_name)
    keras.utils.set_random_seed(seed)
    guide = model_name == "guide_cnn"
    model = compile_model(keras, guide_cnn(keras) if guide else mobilenet_v2_style(keras, cfg["mbv2_width"]), 1e-3)
    model.fit(x_train, y_train, epochs=cfg["guide_epochs" if guide else "mbv2_epochs"], batch_size=32, verbose=0)

    def convert(name, m, calibration=False):
        converter = tf.lite.TFLiteConverter.from_keras_model(m)
        if name != "float":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if calibration:
            converter.representative_dataset = lambda: ([x[None]] for x in x_train[:CALIBRATION])
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        path = os.path.join(workdir, f"tfmot_{model_name}_{seed}_{name}.tflite")
        with common.quiet():
            content = converter.convert()
        with open(path, "wb") as f:
            f.write(content)
        return path

    def qat_row(name, qat):
        last = qat.layers[-1]
        low, high = (float(v.numpy()) for v in last.non_trainable_weights if "post_activation_m" in v.name)
        return file_row(convert(name, qat), x_test, y_test, qat.predict(x_test, verbose=0), (high - low) / 255)

    rows = {"float": {**file_row(convert("float", model), x_test, y_test),
                      "keras_accuracy": common.accuracy(model, x_test, y_test)},
            "ptq_int8": file_row(convert("ptq", model, calibration=True), x_test, y_test)}
    qat = compile_model(keras, tfmot.quantization.keras.quantize_model(model), 1e-4)
    qat.fit(x_train, y_train, epochs=cfg["qat_epochs"], batch_size=32, verbose=0)
    rows["qat_int8"] = qat_row("qat", qat)
    log(f"tfmot {model_name} seed {seed}: float {rows['float']['accuracy']:.4f}, "
        f"PTQ {rows['ptq_int8']['accuracy']:.4f}, QAT {rows['qat_int8']['accuracy']:.4f}")
    steps = cfg["prune_epochs"] * int(np.ceil(len(x_train) / 32))
    for sparsity in cfg["sparsities"] if guide else ():
        label = f"{int(sparsity * 100)}"
        schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, sparsity, 0, max(10, (2 * steps // 3) // 10 * 10),
                                                        frequency=10)
        pruned = compile_model(keras, tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule), 3e-4)
        pruned.fit(x_train, y_train, epochs=cfg["prune_epochs"], batch_size=32, verbose=0,
                   callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
        stripped = tfmot.sparsity.keras.strip_pruning(pruned)
        before = kernel_zero_masks(stripped)
        rows[f"pruned{label}_ptq_int8"] = {**file_row(convert(f"pruned{label}_ptq", stripped, True), x_test, y_test),
                                           "keras_zeros": int(sum(m.sum() for m in before.values())),
                                           "keras_accuracy": common.accuracy(stripped, x_test, y_test)}
        pqat = tfmot.quantization.keras.quantize_apply(
            tfmot.quantization.keras.quantize_annotate_model(stripped),
            tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
        pqat = compile_model(keras, pqat, 1e-4)
        pqat.fit(x_train, y_train, epochs=cfg["qat_epochs"], batch_size=32, verbose=0)
        row = rows[f"pqat{label}_int8"] = pqat_row(qat_row, f"pqat{label}", pqat, before)
        log(f"tfmot {model_name} seed {seed}: {label}% pruned + PTQ {rows[f'pruned{label}_ptq_int8']['accuracy']:.4f}, "
            f"PQAT {row['accuracy']:.4f}, zeros kept {row['zeros_kept']}")
    return rows


def tfmot_worker(config):
    import tensorflow_model_optimization as tfmot

    cfg = config["cfg"]
    with tempfile.TemporaryDirectory(prefix="bench_qat_tfmot_") as workdir:
        runs = {model: [tfmot_pipeline(model, seed, cfg, workdir) for seed in cfg["seeds"]] for model in MODELS}
    return {"runs": runs, "versions": {"tfmot": tfmot.__version__}}


# ---------------------------------------------------------------- summary
ROW_LABELS = {"float": "float32", "ptq_int8": "PTQ int8", "qat_int8": "QAT int8",
              "pruned50_ptq_int8": "pruned 50% + PTQ int8", "pqat50_int8": "PQAT 50% int8",
              "pruned80_ptq_int8": "pruned 80% + PTQ int8", "pqat80_int8": "PQAT 80% int8"}


def summarize(runs):
    """Means over seeds, per row."""
    out = {}
    for key in ROW_LABELS:
        rows = [r[key] for r in runs if key in r]
        if not rows:
            continue
        out[key] = {k: mean(rows, k) for k in ("accuracy", "keras_accuracy", "file_bytes", "gzip_bytes",
                                                "top1_agreement", "mean_diff_steps", "within_2_steps",
                                                "kernel_zeros", "keras_zeros")}
        out[key]["max_diff_steps"] = max((r["max_diff_steps"] for r in rows if "max_diff_steps" in r), default=None)
        out[key]["accuracies"] = [r["accuracy"] for r in rows]
        if any("zeros_kept" in r for r in rows):
            out[key]["zeros_kept"] = all(r["zeros_kept"] and r["file_keeps_zeros"] for r in rows)
    return out


def goals(result):
    found = []
    for model, summary in result["kprune"].items():
        if "qat_int8" not in summary:
            continue
        qat, ptq, flt = (summary[k]["accuracy"] for k in ("qat_int8", "ptq_int8", "float"))
        # Without it the comparisons below would pass against a baseline that never trained.
        found.append({"goal": f"{model}: the float baseline trained (every seed >= {SANE_FLOAT:.0%})",
                      "pass": min(summary["float"]["accuracies"]) >= SANE_FLOAT,
                      "display": " ".join(f"{a:.2%}" for a in summary["float"]["accuracies"])})
        found.append({"goal": f"{model}: QAT int8 >= PTQ int8", "pass": qat >= ptq - 1e-9,
                      "display": f"{qat:.2%} vs {ptq:.2%}"})
        found.append({"goal": f"{model}: QAT int8 within 0.5 point of float", "pass": qat >= flt - 0.005,
                      "display": f"{qat:.2%} vs {flt:.2%}"})
        agree = summary["qat_int8"]
        found.append({"goal": f"{model}: the QAT file agrees with its Keras model (top-1 >= 99%, 99% of logits "
                              "within 2 output steps)",
                      "pass": agree["top1_agreement"] >= 0.99 and agree["within_2_steps"] >= 0.99,
                      "display": f"top-1 {agree['top1_agreement']:.2%}, {agree['within_2_steps']:.2%} within 2 "
                                 f"steps, max {agree['max_diff_steps']:.0f}"})
        kept = [summary[k].get("zeros_kept") for k in summary if k.startswith("pqat")]
        found.append({"goal": f"{model}: PQAT keeps every zero (Keras and file)", "pass": all(kept) and bool(kept)})
    tfmot = (result.get("tfmot_summary") or {}).get("guide_cnn", {})
    for key in (k for k in ROW_LABELS if k.startswith("pqat")):
        ours = result["kprune"].get("guide_cnn", {}).get(key)
        if ours and key in tfmot:
            found.append({"goal": f"guide_cnn: {ROW_LABELS[key]} within 0.5 point of tfmot's",
                          "pass": ours["accuracy"] >= tfmot[key]["accuracy"] - 0.005,
                          "display": f"{ours['accuracy']:.2%} vs {tfmot[key]['accuracy']:.2%}"})
    for row in result.get("outlier_channel", []):
        found.append({"goal": f"outlier channel x{row['scale']}: QAT int8 > PTQ int8",
                      "pass": row["qat_int8"] > row["ptq_int8"],
                      "display": f"{row['qat_int8']:.2%} vs {row['ptq_int8']:.2%}"})
    return found


def markdown(result):
    num, pct = common.num, lambda v: common.num(v, ".2%")
    lines = [f"Test accuracy in LiteRT (360 digits), mean of seeds {result['config']['seeds']}; sizes of the "
             ".tflite file (gzip level 9). Agreement: top-1 agreement of the QAT/PQAT file with its Keras model "
             "(mean over seeds); within 2 steps: share of logits within 2 output quantization steps of Keras'; "
             "max diff: the largest logit difference, in steps (over seeds).", ""]
    for model, summary in result["kprune"].items():
        tfmot = (result.get("tfmot_summary") or {}).get(model)
        headers = ["", "accuracy:", "per seed", "file bytes:", "gzip bytes:", "agreement:", "within 2 steps:",
                   "max diff:", "zeros kept"]
        if tfmot:
            headers += ["tfmot accuracy:", "tfmot gzip:", "tfmot agreement:", "tfmot within 2:", "tfmot max diff:",
                        "tfmot zeros kept"]
        rows = []
        for key, label in ROW_LABELS.items():
            if key not in summary:
                continue
            s = summary[key]
            row = [label, pct(s["accuracy"]), " ".join(f"{a:.3f}" for a in s["accuracies"]),
                   num(s["file_bytes"], ",.0f"), num(s["gzip_bytes"], ",.0f"), pct(s["top1_agreement"]),
                   pct(s["within_2_steps"]), num(s["max_diff_steps"], ".0f"),
                   {True: "yes", False: "**no**"}.get(s.get("zeros_kept"), "")]
            if tfmot:
                t = tfmot.get(key, {})
                row += [pct(t.get("accuracy")), num(t.get("gzip_bytes"), ",.0f"), pct(t.get("top1_agreement")),
                        pct(t.get("within_2_steps")), num(t.get("max_diff_steps"), ".0f"),
                        {True: "yes", False: "**no**"}.get(t.get("zeros_kept"), "")]
            rows.append(row)
        lines += [f"## {model}", "", common.md_table(headers, rows), ""]
    if result.get("tfmot_error"):
        lines += [f"tfmot's side: {result['tfmot_error']}", ""]
    if result.get("outlier_channel"):
        lines += ["## Outlier channel (guide CNN, seed 0)", "",
                  common.md_table(["channel 0 scaled by", "float:", "PTQ int8:", "QAT int8:"],
                                  [[f"x{r['scale']}", pct(r["float"]), pct(r["ptq_int8"]), pct(r["qat_int8"])]
                                   for r in result["outlier_channel"]]), ""]
    lines += ["## Goals", "", common.goal_lines(result["goals"])]
    return "\n".join(lines)


def main(argv=None):
    args = common.add_worker_arguments(common.parser(__doc__)).parse_args(argv)
    if args._worker:
        common.write_worker_result(args._result, tfmot_worker(json.loads(args._config)))
        return 0
    cfg = dict(QUICK if args.quick else FULL)
    run = common.Run("qat", args.quick)
    result = {"config": {**cfg, "calibration_images": CALIBRATION}, "kprune": {}}
    missing = common.tfmot_missing()
    if missing and args.quick:
        result["tfmot_error"] = f"skipped: {missing}"
    else:
        log("tfmot: both models in tf_keras (subprocess, TF_USE_LEGACY_KERAS=1)")
        try:
            if missing:
                raise common.WorkerError(missing)
            tfmot = common.run_worker("bench_qat.py", "tfmot", {"cfg": cfg}, timeout=3600, echo="[bench_qat",
                                      python=common.tfmot_python(), env=common.child_env(TF_USE_LEGACY_KERAS="1"))
            result["tfmot_runs"], result["tfmot_versions"] = tfmot["runs"], tfmot["versions"]
            result["tfmot_summary"] = {model: summarize(runs) for model, runs in tfmot["runs"].items()}
        except common.WorkerError as e:
            result["tfmot_error"] = str(e)
            log(f"ERROR {e}")
    with tempfile.TemporaryDirectory(prefix="bench_qat_") as workdir:
        runs = {}
        for model_name in MODELS:
            runs[model_name] = [kprune_pipeline(model_name, seed, cfg, workdir) for seed in cfg["seeds"]]
            result["kprune"][model_name] = summarize(runs[model_name])
            run.write({**result, "runs": runs}, "(running)", "Quantization-aware training", final=False)
        result["runs"] = runs
        result["outlier_channel"] = outlier_channel(cfg, workdir)
    result["goals"] = goals(result)
    run.write(result, markdown(result), "Quantization-aware training: kprune.quantization vs PTQ and tfmot")
    # As every benchmark with a tfmot side: a full run without it is a failed run (run.py says so).
    return 1 if result.get("tfmot_error") and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
