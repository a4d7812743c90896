"""One-shot pruning gives the same masks on every Keras backend, and the same
masks on one device as on a model sharded with `keras.distribution.ModelParallel`
(JAX, 8 host devices), without moving a kernel between devices for Wanda.

Each scenario runs `tests/llm/_oneshot_worker.py` in a subprocess (a backend,
and JAX's device count, are chosen when the process starts); backends that
are not installed are skipped. The masks of the backend the tests run on are
computed in this process by the same worker code (one process start fewer:
importing TensorFlow and KerasHub is most of a worker's time).
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_oneshot_worker.py")
TIMEOUT = 600
INSTALLED = [b for b, module in (("tensorflow", "tensorflow"), ("jax", "jax"), ("torch", "torch"))
             if importlib.util.find_spec(module) is not None]


def _run(backend, scenario, path, **env):
    environment = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", **env)
    root = os.path.dirname(os.path.dirname(HERE))
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (root, environment.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, WORKER, scenario, str(path)], env=environment, capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 0, f"{backend} {scenario} failed:\n{done.stderr[-4000:]}"
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.cross_backend
def test_masks_are_identical_on_every_backend(tmp_path):
    if len(INSTALLED) < 2:
        pytest.skip(f"one backend installed: {INSTALLED}")
    import keras
    from _oneshot_worker import masks

    current = keras.backend.backend()
    results = {}
    for backend in INSTALLED:
        path = tmp_path / f"{backend}.npz"
        if backend == current:
            masks(path)  # the worker's code, in this process
            with np.load(path) as data:
                results[backend] = {k: data[k] for k in data.files}
        else:
            results[backend] = _run(backend, "masks", path)
    assert len(results) >= 2 and current in results
    reference = results[INSTALLED[0]]
    assert len(reference) == 7 * 14
    for backend, result in results.items():
        assert sorted(result) == sorted(reference), backend
        for name, kernel in reference.items():
            np.testing.assert_array_equal(result[name] == 0, kernel == 0, err_msg=f"{backend} {name}")
            # SparseGPT's updates agree to float32 rounding of the activations.
            np.testing.assert_allclose(result[name], kernel, rtol=1e-4, atol=1e-5, err_msg=f"{backend} {name}")
        for name, kernel in result.items():
            fraction = (kernel == 0).mean()
            assert fraction > 0.4 and (fraction == 0.5 or "owl" in name), name


# By default Wanda 50% and SparseGPT 2:4; `pytest -m full_matrix` runs the four (Wanda and SparseGPT,
# 50% and 2:4: ~80 s on 2 cores, 8 host devices, 8 prunings of a KerasHub model on JAX).
@pytest.mark.skipif("jax" not in INSTALLED, reason="keras.distribution.ModelParallel runs on JAX")
@pytest.mark.parametrize("scenario, runs", [("sharded-reduced", 2),
                                            pytest.param("sharded", 4, marks=pytest.mark.full_matrix)])
def test_model_parallel_masks_equal_single_device_masks(tmp_path, scenario, runs):
    result = _run("jax", scenario, tmp_path / "sharded.npz",
                  XLA_FLAGS="--xla_force_host_platform_device_count=8")
    assert int(result["devices"]) == 8
    single = [k for k in result if k.startswith("single/")]
    assert len(single) == runs * 14
    for name in single:
        sharded = result[name.replace("single/", "sharded/", 1)]
        np.testing.assert_array_equal(sharded == 0, result[name] == 0, err_msg=name)
        np.testing.assert_allclose(sharded, result[name], rtol=1e-4, atol=1e-5, err_msg=name)
        # The pruned kernel is still spread over the 8 devices, a quarter on each.
        key = name.replace("single/", "sharded/", 1)
        assert int(result[f"{key}/shards"]) == 8
        assert int(result[f"{key}/shard_size"]) * 4 == result[name].size
    # Wanda's selection on a kernel sharded along its outputs needs no
    # collective; along its inputs the unstructured one does (N:M groups
    # within a shard do not).
    assert not result["collectives/outputs/0.5"] and not result["collectives/outputs/2:4"]
    assert result["collectives/inputs/0.5"] and not result["collectives/inputs/2:4"]
