"""TFLite export: real conversions, run in LiteRT and compared with Keras."""

import doctest
import gzip
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import kprune
from kprune.export import convert as convert_lib
from kprune.export import exporter as export_lib
from kprune.export.exporter import export_tflite
from kprune.export.report import ExportReport
from kprune.stats import summary


@pytest.fixture(scope="module")
def digits():
    """A small convnet trained on sklearn's 8x8 digits, then pruned to 80%."""
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(0)
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10),
    ])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(0.01), loss)
    model.fit(x[:1500], y[:1500], epochs=4, batch_size=64, verbose=0)
    # 80% of each kernel pruned at the first step, then one epoch of fine-tuning.
    schedule = kprune.ConstantSparsity(0.8, begin_step=1, frequency=1000)
    pruned = kprune.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(keras.optimizers.Adam(0.005), loss)
    pruned.fit(x[:1500], y[:1500], epochs=1, batch_size=64, verbose=0,
               callbacks=[kprune.UpdatePruningStep()])
    accuracy = np.mean(np.argmax(predict(pruned, x[1500:]), -1) == y[1500:])
    assert accuracy > 0.75  # trained, so top-1 agreement below means something
    return dict(dense=model, pruned=pruned, train=x[:200], test=x[1500:1700])


def predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def litert(path, inputs):
    """Run a .tflite file independently of kprune, row by row: outputs by
    signature name (int8 inputs quantized, int8 outputs dequantized)."""
    runner = Interpreter(model_path=str(path), num_threads=1).get_signature_runner()
    ins, outs = runner.get_input_details(), runner.get_output_details()
    rows = []
    for i in range(len(next(iter(inputs.values())))):
        feed = {}
        for name, value in inputs.items():
            value = value[i : i + 1]
            if ins[name]["dtype"] == np.int8:
                scale, zero = ins[name]["quantization"]
                value = np.clip(np.round(value / scale + zero), -128, 127)
            feed[name] = value.astype(ins[name]["dtype"])
        rows.append(runner(**feed))
    result = {}
    for name, detail in outs.items():
        value = np.concatenate([row[name] for row in rows]).astype(np.float64)
        if detail["dtype"] == np.int8:
            scale, zero = detail["quantization"]
            value = (value - zero) * scale
        result[name] = value
    return result


def litert_batch(path, x):
    """Outputs of a single-input, single-output .tflite file for the rows of x."""
    (name,) = Interpreter(model_path=str(path)).get_signature_list()["serving_default"]["inputs"]
    return litert(path, {name: x})["output_0"]


def test_float_export_matches_keras_and_is_sparse(digits, tmp_path):
    path = tmp_path / "digits.tflite"
    report = export_tflite(digits["pruned"], path, sample_inputs=digits["test"][:32], latency_runs=5)
    stripped = kprune.strip_pruning(digits["pruned"])
    expected = predict(stripped, digits["test"][:64])
    np.testing.assert_allclose(litert_batch(path, digits["test"][:64]), expected, atol=1e-4)
    assert report.verified is True
    assert report.verification["max_abs_error"] < 1e-4
    assert report.verification["top1_agreement"] == 1.0
    assert report.sparse_encoding is True
    assert report.file_bytes == os.path.getsize(path)
    (tmp_path / "plain").write_bytes(b"")  # written as `open` would: same permissions
    assert os.stat(path).st_mode == os.stat(tmp_path / "plain").st_mode
    assert report.gzip_size is None  # the export did not wait for the gzip figure
    assert report.to_dict(gzip_bytes=False)["gzip_bytes"] is None
    assert report.gzip_bytes == len(gzip.compress(path.read_bytes(), compresslevel=6))
    assert report.gzip_size == report.gzip_bytes  # computed once, then kept
    assert set(report.timings) == {"strip", "remove_channels", "convert", "verify", "write", "latency"}
    assert all(t >= 0 for t in report.timings.values())
    assert report.to_dict()["timings"] == report.timings
    assert report.sparsity > 0.7
    assert report.latency_ms > 0
    assert report.macs <= report.macs_before and report.params <= report.params_before
    names = [layer.name for layer in digits["dense"].layers if layer.weights]
    assert [r.name for r in report.layers] == names


def test_sparse_file_is_smaller_than_dense(digits, tmp_path):
    common = dict(verify=False, measure_latency=False)
    dense = export_tflite(digits["dense"], tmp_path / "dense.tflite", **common)
    zeros = export_tflite(digits["pruned"], tmp_path / "zeros.tflite", sparse_encoding=False, **common)
    sparse = export_tflite(digits["pruned"], tmp_path / "sparse.tflite", sparse_encoding=True, **common)
    assert not dense.sparse_encoding and not zeros.sparse_encoding and sparse.sparse_encoding
    assert zeros.gzip_bytes < 0.7 * dense.gzip_bytes  # zeros compress
    assert sparse.file_bytes < 0.6 * zeros.file_bytes
    assert sparse.gzip_bytes < dense.gzip_bytes
    assert any("weight sparsity" in n for n in dense.notes)  # "auto" said why it stayed dense
    assert not dense.channels_removed and dense.params == dense.params_before


def test_auto_keeps_the_smaller_encoding(digits, tmp_path, monkeypatch):
    common = dict(quantize="float16", verify=False, measure_latency=False)
    auto = export_tflite(digits["pruned"], tmp_path / "auto.tflite", **common)
    dense = export_tflite(digits["pruned"], tmp_path / "dense.tflite", sparse_encoding=False, **common)
    assert auto.sparse_encoding and auto.file_bytes < dense.file_bytes  # 80% zeros
    # With the threshold at 0, "auto" also tries the unpruned model, whose
    # sparse-format file cannot be smaller: the dense one is kept, with a note.
    monkeypatch.setattr(convert_lib, "SPARSITY_FOR_ENCODING", 0.0)
    report = export_tflite(digits["dense"], tmp_path / "unpruned.tflite", **common)
    assert not report.sparse_encoding
    assert any("is not smaller than the dense one" in n for n in report.notes)


@pytest.mark.parametrize("quantize", [None, "float16"])
def test_auto_converts_once_when_sparse_beats_the_dense_floor(digits, tmp_path, quantize):
    common = dict(quantize=quantize, verify=False, measure_latency=False, remove_pruned_channels=False)
    auto = export_tflite(digits["pruned"], tmp_path / "auto.tflite", **common)
    dense = export_tflite(digits["pruned"], tmp_path / "dense.tflite", sparse_encoding=False, **common)
    # The floor bounds the dense file from below, and the sparse file is
    # under it: the dense conversion was skipped, with the same choice.
    floor = convert_lib.dense_floor_bytes(kprune.strip_pruning(digits["pruned"]), quantize)
    assert 0 < floor <= dense.file_bytes, auto.notes
    assert auto.sparse_encoding and auto.file_bytes < floor
    assert any("dense encoding not converted" in n for n in auto.notes)


@pytest.mark.parametrize("quantize, atol", [("dynamic", 0.15), ("float16", 0.02)])
def test_weight_quantized_exports_match_keras(digits, tmp_path, quantize, atol):
    path = tmp_path / f"{quantize}.tflite"
    report = export_tflite(digits["pruned"], path, quantize=quantize, sample_inputs=digits["test"][:32],
                           sparse_encoding=False, measure_latency=False)
    expected = predict(kprune.strip_pruning(digits["pruned"]), digits["test"][:64])
    actual = litert_batch(path, digits["test"][:64])
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() <= atol * scale
    assert np.mean(np.argmax(actual, -1) == np.argmax(expected, -1)) >= 0.95
    assert report.quantization == quantize and report.verified is True
    assert report.latency_ms is None  # measure_latency=False
    # Weights are stored in 8 or 16 bits: the file is well under float32 size.
    assert report.file_bytes < 0.75 * export_tflite(
        digits["pruned"], tmp_path / "f32.tflite", sparse_encoding=False, verify=False,
        measure_latency=False).file_bytes


def _rejects_sparse_int8(digits):
    """Whether this LiteRT build refuses a sparse-encoded int8 file."""
    stripped = kprune.strip_pruning(digits["pruned"])
    converter = tf.lite.TFLiteConverter.from_keras_model(stripped)
    converter.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    converter.representative_dataset = lambda: ([digits["train"][i : i + 1]] for i in range(20))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        with pytest.warns(UserWarning):  # "Statistics for quantized inputs were expected"
            content = converter.convert()
        interp = Interpreter(model_content=content)
        interp.allocate_tensors()
        interp.invoke()
    except (RuntimeError, ValueError):
        return True
    return False


def test_int8_export_agrees_and_skips_sparse(digits, tmp_path):
    path = tmp_path / "int8.tflite"
    report = export_tflite(digits["pruned"], path, quantize="int8", representative_data=digits["train"],
                           measure_latency=False)
    x = digits["test"]
    expected = predict(kprune.strip_pruning(digits["pruned"]), x)
    actual = litert_batch(path, x)
    assert np.mean(np.argmax(actual, -1) == np.argmax(expected, -1)) >= 0.95
    assert report.verified is True and report.verification["top1_agreement"] >= 0.95
    details = Interpreter(model_path=str(path)).get_tensor_details()
    assert any(d["dtype"] == np.int8 for d in details)
    # "auto" does not convert a second time for a sparse int8 file that
    # LiteRT's CPU kernels cannot run; the note says so.
    assert report.sparse_encoding is False
    assert any("sparse encoding not tried" in n for n in report.notes)
    assert "convert" in report.timings
    if _rejects_sparse_int8(digits):
        # sparse_encoding=True refuses instead, and writes nothing.
        with pytest.raises(RuntimeError, match="cannot run the sparse-encoded model"):
            export_tflite(digits["pruned"], tmp_path / "forced.tflite", quantize="int8",
                          representative_data=digits["train"][:20], sparse_encoding=True)
        assert not (tmp_path / "forced.tflite").exists()


def test_int8_io(digits, tmp_path):
    path = tmp_path / "int8io.tflite"
    dataset = tf.data.Dataset.from_tensor_slices(digits["train"][:100]).batch(40)
    report = export_tflite(digits["pruned"], path, quantize="int8", int8_io=True,
                           representative_data=dataset, measure_latency=False)
    assert report.verification["samples"] == 64  # the first 64 representative samples
    interp = Interpreter(model_path=str(path))
    assert interp.get_input_details()[0]["dtype"] == np.int8
    assert interp.get_output_details()[0]["dtype"] == np.int8
    expected = predict(kprune.strip_pruning(digits["pruned"]), digits["test"])
    agree = np.mean(np.argmax(litert_batch(path, digits["test"]), -1) == np.argmax(expected, -1))
    assert agree >= 0.95 and report.verified and report.int8_io


@pytest.mark.parametrize("how", ["mask_channels", "prune_channels"])
def test_channel_pruned_model_is_smaller(tmp_path, how):
    base = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4),
    ])
    # Nonzero biases: the converter drops all-zero ones, which would change the count.
    rng = np.random.default_rng(0)
    base.set_weights([rng.normal(size=w.shape).astype("float32") * 0.3 for w in base.get_weights()])
    if how == "mask_channels":
        masked = kprune.mask_channels(base, kprune.plan_channels(base, 0.5))
    else:  # PruneChannels wrappers, masks set one-shot
        masked = kprune.prune_channels(base, round_to=4)
        kprune.update_masks(masked, sparsity=0.5)
    path = tmp_path / "channels.tflite"
    report = export_tflite(masked, path, measure_latency=False)
    assert report.channels_removed
    assert report.params < 0.6 * report.params_before and report.macs < 0.5 * report.macs_before
    assert summary(path).params == report.params
    assert summary(path).macs == report.macs
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(litert_batch(path, x), predict(masked, x), atol=1e-4)
    # Without removal the zeros stay in the file: same outputs, more parameters.
    kept = export_tflite(masked, tmp_path / "kept.tflite", remove_pruned_channels=False,
                         sparse_encoding=False, measure_latency=False)
    assert not kept.channels_removed and kept.params == report.params_before
    assert kept.file_bytes > report.file_bytes


def _multi_io_model():
    # Inputs named against alphabetical order, outputs of distinct widths.
    b = keras.Input((5,), name="zeta")
    a = keras.Input((3,), name="alpha")
    h = keras.layers.Dense(6, activation="tanh")(keras.layers.Concatenate()([b, a]))
    return keras.Model([b, a], [keras.layers.Dense(k, name=f"out{k}")(h) for k in (7, 2, 1)])


@pytest.mark.parametrize("form", ["list", "dict", "callable"])
def test_multi_input_multi_output(tmp_path, form):
    model = _multi_io_model()
    rng = np.random.default_rng(2)
    zeta, alpha = rng.normal(size=(6, 5)).astype("float32"), rng.normal(size=(6, 3)).astype("float32")
    sample_inputs = {
        "list": [zeta, alpha],
        "dict": {"alpha": alpha, "zeta": zeta},
        "callable": lambda: ([zeta[i : i + 2], alpha[i : i + 2]] for i in range(0, 6, 2)),
    }[form]
    path = tmp_path / "multi.tflite"
    report = export_tflite(model, path, sample_inputs=sample_inputs, measure_latency=False)
    assert report.verified and report.verification["samples"] == 6
    expected = [keras.ops.convert_to_numpy(y) for y in model([zeta, alpha])]
    out = litert(path, {"zeta": zeta, "alpha": alpha})
    for k, y in enumerate(expected):
        np.testing.assert_allclose(out[f"output_{k}"], y, atol=1e-5)


def test_multi_output_mismatch_is_detected(tmp_path):
    # A sample given in the wrong input order must not pass silently.
    model = _multi_io_model()
    with pytest.raises(ValueError, match=r"input 'zeta' must have shape \(None, 5\)"):
        export_tflite(model, tmp_path / "m.tflite", sample_inputs=[np.zeros((2, 3)), np.zeros((2, 5))])


def test_report_to_dict_is_json_and_str_is_a_summary(digits, tmp_path):
    report = export_tflite(digits["pruned"], tmp_path / "r.tflite", latency_runs=3)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["params"] == report.params and data["path"] == str(tmp_path / "r.tflite")
    assert [row["name"] for row in data["layers"]] == [r.name for r in report.layers]
    assert data["verification"]["passed"] is True and data["sparse_encoding"] is True
    lines = str(report).splitlines()
    assert [line.split()[0] for line in lines] == [
        "TFLite", "size", "quantization", "sparse", "parameters", "MACs", "verification", "latency",
    ] + ["note:"] * len(report.notes)
    assert lines[1].split()[1:] == [f"{report.file_bytes:,}", "bytes", f"({report.gzip_bytes:,}", "gzipped)"]
    assert f"{report.params:,} ({report.nonzero_params:,} nonzero, {report.sparsity:.1%} sparse)" in lines[4]
    assert lines[5].split()[1] == f"{report.macs:,};" and "passed" in lines[6]
    # No per-layer rows (the list of first words above): they are layers_table()'s.
    assert report.layers_table().splitlines()[-1].split()[0] == "total"


def _conv_bn_model():
    L = keras.layers
    return keras.Sequential([
        keras.Input((8, 8, 3)), L.Conv2D(8, 3, name="c1"), L.BatchNormalization(name="bn1"), L.ReLU(),
        L.Conv2D(8, 3, name="c2"), L.BatchNormalization(name="bn2"), L.ReLU(),
        L.GlobalAveragePooling2D(), L.Dense(4, name="head"),
    ])


def test_layers_table_lists_layers_with_macs_and_folds_the_others(tmp_path):
    model = _conv_bn_model()
    report = export_tflite(model, tmp_path / "bn.tflite", measure_latency=False)
    rows = [line.split() for line in report.layers_table().splitlines()]
    assert rows[0] == ["layer", "type", "params", "nonzero", "sparsity", "MACs"]
    by_name = {r.name: r for r in kprune.summary(model).rows}
    for row, name in zip(rows[1:4], ["c1", "c2", "head"]):
        r = by_name[name]
        assert row == [name, r.type, str(r.params), str(r.nonzero), f"{r.sparsity:.1%}", str(r.macs)]
    bn = [by_name["bn1"], by_name["bn2"]]
    assert rows[4][:4] == ["(2", "layers)", "BatchNormalization", str(sum(r.params for r in bn))]
    assert rows[4][-1] == "0"
    assert rows[5] == ["total", str(report.params), str(report.nonzero_params),
                       f"{report.sparsity:.1%}", str(report.macs)]
    assert len(rows) == 6
    every = [line.split()[0] for line in report.layers_table(every_layer=True).splitlines()]
    assert every == ["layer", "c1", "bn1", "c2", "bn2", "head", "total"]


def test_failed_verification_is_reported(digits, tmp_path):
    with pytest.warns(RuntimeWarning, match="differ from Keras"):
        report = export_tflite(digits["pruned"], tmp_path / "f16.tflite", quantize="float16",
                               tolerance=0.0, measure_latency=False)
    assert report.verified is False and report.verification["max_abs_error"] > 0
    assert os.path.exists(tmp_path / "f16.tflite")


class _NumpyOp(keras.layers.Layer):
    """Runs in Keras, but TFLite has no kernel for it; with `known_shape=False`
    it cannot even be traced for a SavedModel."""

    def __init__(self, known_shape=True, **kwargs):
        super().__init__(**kwargs)
        self.known_shape = known_shape

    def call(self, x):
        y = tf.numpy_function(lambda v: v * 2, [x], tf.float32, stateful=False)
        if self.known_shape:
            y.set_shape(x.shape)
        return y

    def compute_output_shape(self, input_shape):
        return input_shape


def test_failures_leave_existing_file_and_no_temp_files(digits, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous export")
    unconvertible = keras.Sequential([keras.Input((4,)), _NumpyOp(), keras.layers.Dense(2)])
    no_kernel = "TFLite conversion of model '.*' failed: ops without a TFLite builtin kernel: tf.PyFunc"
    with pytest.raises(ValueError, match=no_kernel):
        export_tflite(unconvertible, path)
    untraceable = keras.Sequential(
        [keras.Input((4,)), _NumpyOp(known_shape=False), keras.layers.Dense(2)])
    no_saved_model = "failed: the model cannot be exported as a SavedModel: .*unknown TensorShape"
    with pytest.raises(ValueError, match=no_saved_model):
        export_tflite(untraceable, path)
    with pytest.raises(ValueError, match="representative_data"):
        export_tflite(digits["pruned"], path, quantize="int8", representative_data=np.zeros((4, 8, 8)))
    assert path.read_bytes() == b"previous export"
    # Writing fails after conversion (the target is a directory): the
    # temporary file is removed.
    target = tmp_path / "dir.tflite"
    target.mkdir()
    with pytest.raises(OSError):
        export_tflite(digits["dense"], target, verify=False, measure_latency=False)
    assert sorted(os.listdir(tmp_path)) == ["dir.tflite", "model.tflite"]
    assert os.listdir(target) == []


def test_from_keras_file(digits, tmp_path):
    source = tmp_path / "pruned.keras"
    digits["pruned"].save(source)
    report = export_tflite(str(source), tmp_path / "from_file.tflite", measure_latency=False)
    assert report.verified and report.params_before == kprune.count_params(digits["pruned"])
    os.link(source, tmp_path / "same.tflite")  # the same file under a .tflite name
    with pytest.raises(ValueError, match="source model file"):
        export_tflite(str(source), tmp_path / "same.tflite")


def test_subclassed_model_skips_channel_removal(tmp_path):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = kprune.prune_low_magnitude(keras.layers.Dense(8, activation="relu"))
            self.out = keras.layers.Dense(3)

        def call(self, x):
            return self.out(self.hidden(x))

    model = Net()
    model(np.zeros((1, 4), "float32"))
    kprune.update_masks(model, sparsity=0.75)
    path = tmp_path / "sub.tflite"
    report = export_tflite(model, path, measure_latency=False)
    assert report.verified and not report.channels_removed
    assert any("channels not removed" in n for n in report.notes)
    assert any("wrappers kept" in n for n in report.notes)
    assert report.params == (4 * 8 + 8) + (8 * 3 + 3)  # the wrapped layer counted once
    assert report.nonzero_params == 8 + 8 * 3  # its kernel 75% pruned; biases are 0
    assert summary(path).nonzero == report.nonzero_params


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(quantize="int4"), ValueError,
     r"Argument `quantize` must be one of \(None, 'dynamic', 'float16', 'int8'\). "
     r"Received: quantize='int4'"),
    (dict(quantize="int8"), ValueError, "Argument `representative_data` is required"),
    (dict(sparse_encoding="yes"), ValueError, "Argument `sparse_encoding` must be"),
    (dict(sparse_encoding=1), ValueError, "Received: sparse_encoding=1"),
    (dict(int8_io=True), ValueError, "Argument `int8_io` needs quantize='int8'"),
    (dict(latency_runs=0), ValueError, "Argument `latency_runs` must be an integer >= 1"),
    (dict(tolerance=-1), ValueError, "Argument `tolerance` must be"),
    (dict(path="model.tfl"), ValueError, "Argument `path` must be a file path ending in '.tflite'"),
    (dict(model="missing.keras"), FileNotFoundError, "missing.keras"),
    (dict(model="weights.h5"), ValueError, "weights.h5"),
    (dict(model=42), TypeError, "Argument `model` must be a Keras model"),
    (dict(sample_inputs={"x": np.zeros((1, 4))}), ValueError,
     "dict keys must be the model's input names"),
])
def test_argument_errors(tmp_path, kwargs, error, match):
    args = dict(model=keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]),
                path=str(tmp_path / "m.tflite"))
    args.update(kwargs)
    if isinstance(args["model"], str):
        args["model"] = str(tmp_path / args["model"])
        if args["model"].endswith(".h5"):
            open(args["model"], "wb").close()
    with pytest.raises(error, match=match):
        export_tflite(**args)
    assert not os.path.exists(tmp_path / "m.tflite")


def test_corrupt_keras_file(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="Could not load the Keras model '.*bad.keras'"):
        export_tflite(str(bad), tmp_path / "bad.tflite")


def test_report_is_plain_data():
    report = ExportReport(path="m.tflite", file_bytes=1, gzip_size=1, params=0, nonzero_params=0,
                          macs=0, params_before=0, macs_before=0)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["verified"] is None and data["gzip_bytes"] == 1
    assert ExportReport.from_dict(data) == report
    assert "not measured" in str(report) and "not run" in str(report)


def test_docstring_examples_run():
    result = doctest.testmod(export_lib, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


def test_non_finite_keras_outputs_are_reported_as_such(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    kernel = np.ones((4, 2), "float32")
    kernel[0, 0] = np.nan
    model.layers[0].kernel.assign(kernel)
    with pytest.warns(RuntimeWarning, match="own outputs are not finite"):
        report = export_tflite(model, tmp_path / "nan.tflite", measure_latency=False)
    assert report.verified is False
    assert report.verification["keras_finite"] is False


def test_random_verification_samples_scale_with_macs(tmp_path):
    # 256x256x16 -> 3x3 conv with 32 filters: 302M MACs per sample, so the
    # random verification set totals about 2G MACs: 6 samples instead of 16.
    big = keras.Sequential([keras.Input((256, 256, 16)), keras.layers.Conv2D(32, 3, padding="same")])
    small = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    macs = kprune.count_macs(big)
    assert macs == 256 * 256 * 9 * 16 * 32
    common = dict(measure_latency=False, remove_pruned_channels=False)
    report = export_tflite(big, tmp_path / "big.tflite", **common)
    assert report.verified and report.verification["samples"] == int(2e9 // macs) == 6
    assert export_tflite(small, tmp_path / "small.tflite", **common).verification["samples"] == 16
