"""Quantization-aware training on JAX and PyTorch: it trains there, keeps zeros, and its .keras
files compute the same outputs on TensorFlow, which exports them.

One subprocess per installed backend other than TensorFlow runs
`_qat_backend_worker.py`; backends that are not installed are skipped.
"""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import kprune

HERE = os.path.dirname(os.path.abspath(__file__))
OTHERS = [b for b, module in (("jax", "jax"), ("torch", "torch")) if importlib.util.find_spec(module)]


@pytest.mark.cross_backend
@pytest.mark.skipif(not OTHERS, reason="no Keras backend besides TensorFlow installed")
@pytest.mark.parametrize("backend", OTHERS)
def test_qat_trains_on_the_backend_and_exports_from_tensorflow(backend, tmp_path):
    environment = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    root = os.path.dirname(os.path.dirname(HERE))
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (root, environment.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, os.path.join(HERE, "_qat_backend_worker.py"), str(tmp_path)],
                          env=environment, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    with np.load(tmp_path / "outputs.npz") as data:
        out = {k: data[k] for k in data.files}
    assert out["kernel_change"] > 0  # straight-through gradients reached the weights
    assert bool(out["zeros_kept"])
    assert not np.allclose(out["qat_first"], out["qat_trained"])
    for name in ("qat", "pqat"):
        model = keras.models.load_model(tmp_path / f"{name}.keras")
        # The same fake quantization on TensorFlow as on the other backend.
        np.testing.assert_allclose(keras.ops.convert_to_numpy(model(out["x"])), out[f"{name}_trained"],
                                   atol=1e-4)
    report = kprune.export_tflite(model, str(tmp_path / "pqat.tflite"), sample_inputs=out["x"],
                                  measure_latency=False)
    assert report.verified and report.quantization == "int8 (QAT ranges)"
