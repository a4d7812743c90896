"""kprune under tf.distribute: MirroredStrategy with `fit`, and a two-worker
MultiWorkerMirroredStrategy custom training loop.

Both scenarios need TensorFlow set up before it initializes (two logical CPU
devices; `TF_CONFIG`), so they run in subprocesses (`tests/integration/_dist_worker.py`)
and report back through files the tests check here. Every subprocess is
bounded by a timeout and killed if it overruns or its peer fails.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from kprune.sparsity.mask_math import target_zeros

pytest.importorskip("tensorflow")

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_dist_worker.py")
FINAL_SPARSITY = 0.75  # must match _dist_worker.FINAL_SPARSITY
END_STEP = 6  # must match _dist_worker.END_STEP
TIMEOUT = 240  # seconds per scenario; the machine may be loaded


def _env(**extra):
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["KERAS_BACKEND"] = "tensorflow"
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _tail(text, n=3000):
    text = text or ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text[-n:]


def _free_ports(n):
    """`n` distinct free TCP ports on 127.0.0.1 (all held open until chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------------------
# MirroredStrategy, two logical CPU devices, model.fit
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["mirrored", "mirrored_in_place"])
def mirrored_report(request, tmp_path_factory):
    """The wrapped CNN, and the same CNN as a subclassed model pruned in place."""
    out = tmp_path_factory.mktemp(request.param) / "report.json"
    try:
        proc = subprocess.run(
            [sys.executable, WORKER, request.param, str(out)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as e:  # subprocess.run kills the child
        pytest.fail(f"MirroredStrategy scenario timed out after {TIMEOUT}s:\n{_tail(e.stderr)}")
    assert proc.returncode == 0, (
        f"MirroredStrategy scenario failed (rc={proc.returncode}):\n{_tail(proc.stderr)}"
    )
    with open(out) as f:
        return dict(json.load(f), mode=request.param)


def test_mirrored_runs_on_two_replicas(mirrored_report):
    r = mirrored_report
    assert r["num_replicas"] == 2
    assert len(r["devices"]) == 2 and r["devices"][0] != r["devices"][1]
    assert all("CPU" in d for d in r["devices"])
    assert len(r["loss"]) == 3 and all(np.isfinite(r["loss"]))
    names = [layer["name"] for layer in r["layers"]]
    if r["mode"] == "mirrored":
        assert names == ["prune_low_magnitude_conv", "prune_low_magnitude_dense"]
    else:
        assert names == ["conv", "dense"]
    for layer in r["layers"]:
        for w in layer["weights"]:
            # The pruned variable and its mask really are mirrored (2 components).
            assert w["variable_type"] == "MirroredVariable"
            assert len(w["masks"]) == 2 and len(w["kernels"]) == 2


def test_mirrored_masks_identical_on_both_replicas(mirrored_report):
    for layer in mirrored_report["layers"]:
        for w in layer["weights"]:
            m0, m1 = (np.asarray(m) for m in w["masks"])
            assert m0.shape == m1.shape and m0.size == w["size"]
            np.testing.assert_array_equal(m0, m1, err_msg=f"{layer['name']}/{w['name']}")
            assert set(np.unique(m0)) <= {0.0, 1.0}


def test_mirrored_kernels_identical_and_masked(mirrored_report):
    for layer in mirrored_report["layers"]:
        for w in layer["weights"]:
            k0, k1 = (np.asarray(k) for k in w["kernels"])
            np.testing.assert_array_equal(k0, k1, err_msg=f"{layer['name']}/{w['name']}")
            for mask, kernel in zip(w["masks"], w["kernels"]):
                mask, kernel = np.asarray(mask), np.asarray(kernel)
                # Pruned entries are exactly 0 on every replica; kept ones trained.
                assert np.all(kernel[mask == 0] == 0.0)
                assert np.count_nonzero(kernel[mask == 1]) == np.count_nonzero(mask)


def test_mirrored_final_sparsity_exact(mirrored_report):
    for layer in mirrored_report["layers"]:
        # 3 epochs x 4 steps; the stored step is the same on both replicas.
        assert layer["pruning_step"] == [12, 12]
        for w in layer["weights"]:
            expected = target_zeros(w["size"], FINAL_SPARSITY)
            for mask in w["masks"]:
                assert int(np.sum(np.asarray(mask) == 0)) == expected


# ---------------------------------------------------------------------------
# MultiWorkerMirroredStrategy, two workers on 127.0.0.1, custom training loop
# ---------------------------------------------------------------------------


def _run_workers(tmp_path, n_workers=2, timeout=TIMEOUT):
    """Start `n_workers` MWMS workers; return their `.npz` paths when all succeed.

    Any worker failing or the deadline passing kills every worker still running.
    """
    for attempt in range(2):  # a port taken between picking and binding: retry once
        ports = _free_ports(n_workers)
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        procs, outs, logs = [], [], []
        try:
            for i in range(n_workers):
                out = tmp_path / f"worker{attempt}_{i}.npz"
                log = open(tmp_path / f"worker{attempt}_{i}.log", "w+")
                tf_config = {"cluster": cluster, "task": {"type": "worker", "index": i}}
                procs.append(
                    subprocess.Popen(
                        [sys.executable, WORKER, "mwms", str(out)],
                        env=_env(TF_CONFIG=json.dumps(tf_config)),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
                outs.append(out)
                logs.append(log)
            deadline = time.monotonic() + timeout
            failed = None
            while time.monotonic() < deadline:
                codes = [p.poll() for p in procs]
                bad = [i for i, c in enumerate(codes) if c not in (None, 0)]
                if bad:
                    failed = f"worker {bad[0]} exited with rc={codes[bad[0]]}"
                    break
                if all(c == 0 for c in codes):
                    return outs
                time.sleep(0.2)
            else:
                failed = f"workers did not finish within {timeout}s"
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=30)
        text = []
        for i, log in enumerate(logs):
            log.seek(0)
            text.append(f"--- worker {i} ---\n{_tail(log.read())}")
            log.close()
        output = "\n".join(text)
        if attempt == 0 and "address already in use" in output.lower():
            continue
        pytest.fail(f"MultiWorkerMirroredStrategy scenario failed: {failed}\n{output}")
    pytest.fail("MultiWorkerMirroredStrategy scenario could not get free ports")


@pytest.fixture(scope="module")
def mwms_results(tmp_path_factory):
    outs = _run_workers(tmp_path_factory.mktemp("mwms"))
    results = []
    for out in outs:
        with np.load(out) as data:
            results.append({k: data[k] for k in data.files})
    return results


def _keys(result, prefix):
    return sorted(k for k in result if k.startswith(prefix))


def test_mwms_workers_ran_in_one_cluster(mwms_results):
    w0, w1 = mwms_results
    assert [int(w0["task"]), int(w1["task"])] == [0, 1]
    # One CPU replica per worker, two replicas in sync across the cluster.
    assert int(w0["num_replicas"]) == int(w1["num_replicas"]) == 2
    assert int(w0["steps"]) == int(w1["steps"]) == 12
    # The reduced loss is a cluster-wide value: equal on both workers.
    np.testing.assert_array_equal(w0["losses"], w1["losses"])
    assert np.all(np.isfinite(w0["losses"]))
    # Each worker saw a different shard of the data, so equal weights below
    # come from the gradient all-reduce, not from identical local inputs.
    assert float(w0["local_xsum"]) != float(w1["local_xsum"])


def test_mwms_masks_identical_across_workers(mwms_results):
    w0, w1 = mwms_results
    keys = _keys(w0, "mask/")
    assert len(keys) == 2 and keys == _keys(w1, "mask/")
    for k in keys:
        np.testing.assert_array_equal(w0[k], w1[k], err_msg=k)


def test_mwms_weights_identical_across_workers(mwms_results):
    w0, w1 = mwms_results
    keys = _keys(w0, "weight/")
    assert keys and keys == _keys(w1, "weight/")
    for k in keys:
        np.testing.assert_array_equal(w0[k], w1[k], err_msg=k)


def test_mwms_final_sparsity_exact(mwms_results):
    for result in mwms_results:
        for k in _keys(result, "step/"):
            assert int(result[k]) == 12
        for k in _keys(result, "mask/"):
            mask = result[k]
            kernel = result["pruned/" + k[len("mask/"):]]
            assert int(np.sum(mask == 0)) == target_zeros(mask.size, FINAL_SPARSITY), k
            assert np.all(kernel[mask == 0] == 0.0), k
            assert np.count_nonzero(kernel[mask == 1]) == np.count_nonzero(mask), k
