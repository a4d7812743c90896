"""kprune.summary and kprune.stats: the same figures from a Keras model, a .keras file and a .tflite file."""

import contextlib
import doctest
import io
import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import kprune
from kprune.stats import LayerStats, ModelSummary, count_macs, count_params, layer_stats, summary
from kprune.stats import keras_stats as summary_lib


def _model():
    """Every op type the TFLite counter knows, with nonzero biases (the
    converter drops all-zero biases) and 70% of the weights pruned."""
    x = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(6, 3, name="conv")(x)
    b = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise")(a)
    c = keras.layers.Conv2DTranspose(4, 3, strides=2, name="transpose")(b)
    d = keras.layers.Dense(5, name="dense_3d")(c)  # Dense on a 4-D tensor
    y = keras.layers.Dense(3, name="head")(keras.layers.Flatten()(d))
    model = keras.Model(x, y)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    pruned = kprune.prune_low_magnitude(model)
    kprune.update_masks(pruned, sparsity=0.7)
    return pruned


def _tflite(model, path, quantize=None, sparse=False):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = ([tf.lite.Optimize.DEFAULT] if quantize else []) + (
        [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else [])
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        x = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype("float32")
        converter.representative_dataset = lambda: ([x[i : i + 1]] for i in range(8))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # int8: "Statistics for quantized inputs were expected"
        path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="module")
def pruned():
    keras.utils.set_random_seed(0)
    return _model()


def test_existing_api_counts(pruned):
    stripped = kprune.strip_pruning(pruned)
    rows = layer_stats(pruned)
    assert [r.name for r in rows] == ["conv", "depthwise", "transpose", "dense_3d", "head"]
    assert all(isinstance(r, LayerStats) for r in rows)
    assert count_params(pruned) == count_params(stripped) == stripped.count_params()
    nonzero = sum(int(np.count_nonzero(w)) for w in stripped.get_weights())
    assert count_params(pruned, nonzero=True) == nonzero
    conv = rows[0]
    assert conv.macs == 6 * 6 * (3 * 3 * 3) * 6  # output pixels x kernel x filters
    assert count_macs(pruned) == sum(r.macs for r in rows)


def test_keras_file_and_tflite_agree(pruned, tmp_path):
    stripped = kprune.strip_pruning(pruned)
    stripped.save(tmp_path / "m.keras")
    pruned.save(tmp_path / "wrapped.keras")
    sources = [pruned, stripped, tmp_path / "m.keras", str(tmp_path / "wrapped.keras"),
               _tflite(stripped, tmp_path / "m.tflite"),
               _tflite(stripped, tmp_path / "sparse.tflite", sparse=True)]
    summaries = [summary(s) for s in sources]
    expected = (count_params(pruned), count_params(pruned, nonzero=True), count_macs(pruned))
    for s in summaries:
        assert (s.params, s.nonzero, s.macs) == expected, s.source
    # Per layer too; the 4-D Dense's bias becomes a separate ADD (params, no MACs).
    compute = [r for r in summaries[4].rows if r.macs]
    assert [r.macs for r in compute] == [r.macs for r in summaries[0].rows]
    assert [r.type for r in compute] == [
        "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "FULLY_CONNECTED"]
    assert [(r.type, r.params) for r in summaries[4].rows if not r.macs] == [("ADD", 5)]
    assert 0.6 < summaries[5].sparsity < 0.75
    # Ops are named after the Keras layers they came from (the converter's
    # tensors are `<model>_1/<layer>_1/...` or `StatefulPartitionedCall_1:0`).
    for s in summaries[4:]:
        assert [r.name for r in s.rows if r.macs] == [r.name for r in summaries[0].rows]
        assert [r.name for r in s.rows if not r.macs] == ["dense_3d"]


@pytest.mark.parametrize("quantize", ["dynamic", "float16", "int8"])
def test_quantized_tflite_counts(pruned, tmp_path, quantize):
    stripped = kprune.strip_pruning(pruned)
    s = summary(_tflite(stripped, tmp_path / f"{quantize}.tflite", quantize=quantize))
    assert s.params == count_params(stripped) and s.macs == count_macs(stripped)
    assert [r.name for r in s.rows if r.macs] == [r.name for r in layer_stats(stripped)]
    # Rounding to 8 bits can only turn small weights into zeros.
    nonzero = count_params(stripped, nonzero=True)
    assert nonzero * 0.97 <= s.nonzero <= nonzero


def test_subclassed_model_counts_wrapped_layers_once():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = kprune.prune_low_magnitude(keras.layers.Dense(8))
            self.out = keras.layers.Dense(3)

        def call(self, x):
            return self.out(self.hidden(x))

    model = Net()
    model(np.zeros((1, 4), "float32"))
    kprune.update_masks(model, sparsity=0.5)
    rows = layer_stats(model)
    assert [(r.type, r.params, r.nonzero) for r in rows] == [("Dense", 40, 16), ("Dense", 27, 24)]


def test_summary_table_and_dict(pruned):
    s = summary(pruned)
    text = str(s)
    assert text.splitlines()[0] == f"Keras model '{pruned.name}'"
    total = ["total", str(s.params), str(s.nonzero), f"{s.sparsity:.1%}", str(s.macs)]
    assert text.splitlines()[-1].split() == total
    data = json.loads(json.dumps(s.to_dict()))
    assert data["total"] == {"params": s.params, "nonzero": s.nonzero,
                             "sparsity": s.sparsity, "macs": s.macs}
    assert [row["name"] for row in data["layers"]] == [r.name for r in s.rows]
    assert ModelSummary("empty", []).sparsity == 0.0


def test_summary_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        summary(str(tmp_path / "missing.tflite"))
    (tmp_path / "weights.h5").write_bytes(b"")
    wrong_type = r"Argument `model_or_path` must be .*Received: model_or_path='.*weights.h5'"
    with pytest.raises(ValueError, match=wrong_type):
        summary(tmp_path / "weights.h5")
    (tmp_path / "bad.tflite").write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="LiteRT cannot read '.*bad.tflite'"):
        summary(tmp_path / "bad.tflite")
    (tmp_path / "bad.keras").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="Could not load the Keras model '.*bad.keras'"):
        summary(tmp_path / "bad.keras")
    with pytest.raises(TypeError, match="Argument `model_or_path` must be a Keras model"):
        summary(3)


def test_docstring_examples_run():
    result = doctest.testmod(summary_lib, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
