"""One `keras.applications` architecture per family through both pipelines.

(a) prune -> fit 2 steps -> strip -> summary -> export_tflite (verified);
(b) channel pruning at 0.3 -> removal equal to the masked model. The same
code as `benchmarks/bench_architectures.py`, which runs every constructor.
"""

import importlib.util
import pathlib

import pytest

_PATH = pathlib.Path(__file__).parent.parent / "benchmarks" / "bench_architectures.py"
_spec = importlib.util.spec_from_file_location("bench_architectures", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.applications
@pytest.mark.parametrize("name", sorted(bench.FAMILIES.values()))
def test_architecture_through_both_pipelines(name, tmp_path):
    result = bench.run_case(name, str(tmp_path))
    a, b = result["unstructured"], result["channels"]
    assert a["status"] == "ok", a
    assert 0.45 < a["sparsity"] < 0.55, a
    assert b["status"] == "ok", b
    assert b["max_abs_diff"] <= 1e-4 * max(1.0, 1.0), b
    if b["pruned_channels"]:
        assert b["params_after"] < result["params"]
