"""Quantization-aware training on JAX and PyTorch: it trains there, keeps zeros, and its .keras
files compute the same outputs on TensorFlow, which exports them (that last step behind the
`full_matrix` marker: the conversion of a loaded QAT file runs by default in test_qat_export.py).

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


@pytest.fixture(scope="module", params=OTHERS)
def trained_on_backend(request, tmp_path_factory):
    """`(backend, folder, outputs)`: the worker's QAT and PQAT models, trained on `backend`."""
    backend, folder = request.param, tmp_path_factory.mktemp(f"qat_{request.param}")
    environment = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    root = os.path.dirname(os.path.dirname(HERE))
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (root, environment.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, os.path.join(HERE, "_qat_backend_worker.py"), str(folder)],
                          env=environment, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    with np.load(folder / "outputs.npz") as data:
        return backend, folder, {k: data[k] for k in data.files}


@pytest.mark.cross_backend
@pytest.mark.skipif(not OTHERS, reason="no Keras backend besides TensorFlow installed")
def test_qat_trains_on_the_backend_and_loads_on_tensorflow(trained_on_backend):
    _, folder, out = trained_on_backend
    assert out["kernel_change"] > 0  # straight-through gradients reached the weights
    assert bool(out["zeros_kept"])
    assert not np.allclose(out["qat_first"], out["qat_trained"])
    for name in ("qat", "pqat"):
        # compile=False: a file saved on PyTorch names PyTorch's optimizer class, which TensorFlow cannot load.
        model = keras.models.load_model(folder / f"{name}.keras", compile=False)
        # The same fake quantization on TensorFlow as on the other backend.
        np.testing.assert_allclose(keras.ops.convert_to_numpy(model(out["x"])), out[f"{name}_trained"],
                                   atol=1e-4)


# The conversion of a loaded .keras QAT file is tests/quantization/test_qat_export.py's; this runs it on
# a file trained on another backend (slow: the worker again, and a conversion).
@pytest.mark.cross_backend
@pytest.mark.full_matrix
@pytest.mark.skipif(not OTHERS, reason="no Keras backend besides TensorFlow installed")
def test_qat_trained_on_the_backend_exports_from_tensorflow(trained_on_backend):
    _, folder, out = trained_on_backend
    report = kprune.export_tflite(str(folder / "pqat.keras"), str(folder / "pqat.tflite"), sample_inputs=out["x"],
                                  measure_latency=False)
    assert report.verified and report.quantization == "int8 (QAT ranges)"
