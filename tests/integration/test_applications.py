"""One `keras.applications` architecture per family through both pipelines.

(a) prune -> fit 2 steps -> strip -> summary -> export_tflite (verified);
(b) channel pruning at 0.3 -> removal equal to the masked model. The same
code as `benchmarks/bench_architectures.py`, which runs every constructor.
"""

import pathlib
import sys

import pytest

# The benchmark scripts import their shared module (`common`) from their folder.
sys.path.insert(0, str(pathlib.Path(__file__).parents[2] / "benchmarks"))
import bench_architectures as bench  # noqa: E402

# The default run (CI) takes these families, the cheapest that cover keras.ops
# nodes (MobileNetV3's hard-swish, squeeze-excite products) and depthwise
# convolutions; `pytest -m applications` runs one network of every family
# (about 20 minutes on 2 cores), `benchmarks/bench_architectures.py` all 40.
DEFAULT = ("MobileNetV3Small", "MobileNet")
CASES = [name if name in DEFAULT else pytest.param(name, marks=pytest.mark.applications)
         for name in sorted(bench.FAMILIES.values())]


@pytest.mark.parametrize("name", CASES)
def test_architecture_through_both_pipelines(name, tmp_path):
    result = bench.run_case(name, str(tmp_path))
    a, b = result["unstructured"], result["channels"]
    assert a["status"] == "ok", a
    assert 0.45 < a["sparsity"] < 0.55, a
    assert b["status"] == "ok", b
    if b["pruned_channels"]:
        assert b["params_after"] < result["params"]
