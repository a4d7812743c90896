"""Checking a TFLite file against the Keras model it came from.

`verification(expected, actual, ...)` compares LiteRT's outputs with Keras'
on the same samples: each output is judged against its own scale, the max
|diff| for float files and the mean for int8 (whose rounding errors are
spread), plus top-1 agreement for outputs with several classes.

Example:

>>> import numpy as np
>>> v = verification([np.array([[1.0, 2.0]])], [np.array([[1.0, 2.001]])], None, 1e-3, [0])
>>> v["passed"], v["top1_agreement"]
(True, 1.0)
"""

import keras
import numpy as np

# Default verification tolerance per quantization (see `kprune.export_tflite`).
TOLERANCES = {None: 1e-3, "dynamic": 5e-2, "float16": 1e-2, "int8": 5e-2, "qat": 1e-2}


def keras_outputs(model, samples, names=None):
    """The Keras model's outputs on `samples` (lists of arrays in input order;
    with `names`, passed as a dict by input name: a model that takes a dict)."""
    batch = [np.concatenate(xs) for xs in zip(*samples)]
    if names is not None:
        ys = model(dict(zip(names, batch)), training=False)
    else:
        ys = model(batch if len(batch) > 1 else batch[0], training=False)
    return [np.asarray(keras.ops.convert_to_numpy(y), np.float64) for y in keras.tree.flatten(ys)]


def verification(expected, actual, quantize, tolerance, samples):
    """Figures comparing LiteRT with Keras; each output is judged against its own scale."""
    finite = all(bool(np.all(np.isfinite(e))) for e in expected)
    diffs = [np.abs(e - a) for e, a in zip(expected, actual)]
    name, stat = ("mean", np.mean) if quantize in ("int8", "qat") else ("max", np.max)
    relative = max(
        float(stat(d)) / max(float(np.max(np.abs(e))), 1e-12) for d, e in zip(diffs, expected)
    )
    agree = [float(np.mean(np.argmax(e, -1) == np.argmax(a, -1)))
             for e, a in zip(expected, actual) if e.shape[-1] > 1]
    return {
        "samples": len(samples),
        "max_abs_error": max(float(d.max()) for d in diffs),
        "mean_abs_error": float(np.mean(np.concatenate([d.ravel() for d in diffs]))),
        "relative_error": relative,
        "top1_agreement": min(agree) if agree else None,
        "criterion": f"{name} |diff| / max |Keras output| <= {tolerance:g} for each output",
        "keras_finite": finite,
        "passed": finite and relative <= tolerance,
    }


def mismatch_message(verification):
    if not verification["keras_finite"]:
        return ("The Keras model's own outputs are not finite (NaN or inf) on the sample "
                "inputs, so the TFLite file cannot be checked against them.")
    return (f"The TFLite model's outputs differ from Keras': {verification['criterion']} does "
            f"not hold (relative error {verification['relative_error']:.3g}, max |diff| "
            f"{verification['max_abs_error']:.3g}).")
