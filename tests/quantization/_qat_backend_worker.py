"""Subprocess side of tests/quantization/test_qat_backends.py: QAT and PQAT on one Keras backend.

`python _qat_backend_worker.py OUT_FOLDER` with KERAS_BACKEND set: a small
CNN with fixed weights, its outputs under `quantize_model` before and after a
few training steps (ranges, gradients), a PQAT run on a 50%-pruned copy, both
models saved as .keras with their outputs on fixed inputs, in OUT_FOLDER.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _qat_models import small_cnn  # noqa: E402

import kprune  # noqa: E402
from kprune.quantization import (  # noqa: E402
    Default8BitPrunePreserveQuantizeScheme,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
)


def fixed(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(scale=0.3, size=w.shape).astype("float32") if len(w.shape) > 1
                       else np.abs(rng.normal(scale=0.3, size=w.shape)).astype("float32") + 0.5
                       for w in model.weights])
    return model


def main(folder):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (32, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 10, 32)
    out = {}
    base = fixed(small_cnn())
    qat = quantize_model(base)
    qat(x, training=True)  # one pass sets the ranges from the data
    out["qat_first"] = keras.ops.convert_to_numpy(qat(x, training=False))
    qat.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = keras.ops.convert_to_numpy(qat.get_layer("quant_logits").layer.kernel)
    qat.fit(x, y, epochs=2, batch_size=8, verbose=0)
    out["kernel_change"] = np.abs(keras.ops.convert_to_numpy(qat.get_layer("quant_logits").layer.kernel) - before).max()
    out["qat_trained"] = keras.ops.convert_to_numpy(qat(x, training=False))
    qat.save(os.path.join(folder, "qat.keras"))

    pruned = kprune.prune_low_magnitude(fixed(small_cnn()))
    kprune.update_masks(pruned, sparsity=0.5)
    stripped = kprune.strip_pruning(pruned)
    zeros = {layer.name: keras.ops.convert_to_numpy(layer.kernel) == 0 for layer in stripped.layers
             if hasattr(layer, "kernel")}
    pqat = quantize_apply(quantize_annotate_model(stripped), Default8BitPrunePreserveQuantizeScheme())
    pqat.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pqat.fit(x, y, epochs=2, batch_size=8, verbose=0)
    kept = True
    for name, mask in zeros.items():
        kernel = keras.ops.convert_to_numpy(pqat.get_layer(f"quant_{name}").layer.kernel)
        kept &= bool(np.all(kernel[mask] == 0)) and bool(np.any(kernel[~mask] != 0))
    out["zeros_kept"] = np.array(kept)
    out["pqat_trained"] = keras.ops.convert_to_numpy(pqat(x, training=False))
    pqat.save(os.path.join(folder, "pqat.keras"))
    np.savez(os.path.join(folder, "outputs.npz"), x=x, **out)


if __name__ == "__main__":
    main(sys.argv[1])
