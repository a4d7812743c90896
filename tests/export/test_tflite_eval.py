"""kprune.evaluate_tflite: accuracy of a .tflite file and agreement with Keras,
checked against the file run directly in LiteRT."""

import json

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import kprune


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A small CNN trained on sklearn's 8x8 digits, exported float32, int8
    (float I/O) and int8 with int8 inputs and outputs."""
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(0)
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int64")
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(10),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:1200], y[:1200], epochs=3, batch_size=64, verbose=0)
    folder = tmp_path_factory.mktemp("eval")
    files = {}
    for name, kwargs in [("float32", {}), ("int8", dict(quantize="int8")),
                         ("int8_io", dict(quantize="int8", int8_io=True))]:
        files[name] = str(folder / f"{name}.tflite")
        kprune.export_tflite(model, files[name], representative_data=x[:100], measure_latency=False,
                             **kwargs)
    return dict(model=model, files=files, x=x[1200:1400], y=y[1200:1400])


def run_litert(path, x):
    """The file's outputs on all of x in one invoke (int8 inputs quantized,
    outputs dequantized), without kprune."""
    interp = Interpreter(model_path=path)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], x.shape)
    interp.allocate_tensors()
    if inp["dtype"] == np.int8:
        scale, zero = inp["quantization"]
        x = np.clip(np.round(x / scale + zero), -128, 127)
    interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interp.invoke()
    y = interp.get_tensor(out["index"]).astype(np.float64)
    if out["dtype"] == np.int8:
        scale, zero = out["quantization"]
        y = (y - zero) * scale
    return y


@pytest.mark.parametrize("name", ["float32", "int8", "int8_io"])
def test_accuracy_and_agreement_match_litert_and_numpy(digits, name):
    path, x, y, model = digits["files"][name], digits["x"], digits["y"], digits["model"]
    outputs = run_litert(path, x)
    expected = float(np.mean(np.argmax(outputs, -1) == y))
    keras_out = model.predict(x, verbose=0)
    result = kprune.evaluate_tflite(path, x, y, model=model, batch_size=len(x))
    assert result.samples == len(x)
    assert result.accuracy == expected > 0.8
    assert result.keras_accuracy == float(np.mean(np.argmax(keras_out, -1) == y))
    assert result.top1_agreement == float(np.mean(np.argmax(outputs, -1) == np.argmax(keras_out, -1)))
    assert result.max_abs_diff == pytest.approx(np.abs(outputs - keras_out).max(), rel=1e-6)
    assert result.mean_abs_diff == pytest.approx(np.abs(outputs - keras_out).mean(), rel=1e-6)
    assert result.quantized_inputs == result.dequantized_outputs == (name == "int8_io")
    if name == "float32":
        assert result.top1_agreement == 1.0 and result.max_abs_diff < 1e-4
    else:
        assert result.top1_agreement > 0.9
    # Batches that do not divide the data, labels in other forms, no model.
    for labels in (y, y[:, None], np.eye(10)[y]):
        again = kprune.evaluate_tflite(path, x, labels, batch_size=7)
        assert again.accuracy == expected
        assert again.top1_agreement is None and again.keras_accuracy is None
    data = json.loads(json.dumps(result.to_dict()))
    assert data["accuracy"] == expected and data["path"] == path
    lines = str(result).splitlines()
    assert lines[0].startswith(f"LiteRT evaluation of '{path}' on 200 examples")
    assert ("int8 inputs quantized, outputs dequantized" in lines[0]) == (name == "int8_io")
    assert lines[1].split()[:2] == ["accuracy", f"{expected:.4f}"]
    assert lines[2].split()[:3] == ["top-1", "agreement", f"{result.top1_agreement:.1%}"]


def test_agreement_without_labels(digits):
    result = kprune.evaluate_tflite(digits["files"]["float32"], digits["x"][:10], model=digits["model"])
    assert result.accuracy is None and result.top1_agreement == 1.0
    assert "accuracy" not in str(result) and "max |diff|" in str(result)


def _two_inputs():
    zeta, alpha = keras.Input((5,), name="zeta"), keras.Input((3,), name="alpha")
    h = keras.layers.Dense(6, activation="tanh")(keras.layers.Concatenate()([zeta, alpha]))
    return keras.Model([zeta, alpha], [keras.layers.Dense(4, name="logits")(h)])


def test_multi_input_file(tmp_path):
    model = _two_inputs()
    path = str(tmp_path / "two.tflite")
    kprune.export_tflite(model, path, measure_latency=False)
    rng = np.random.default_rng(0)
    zeta, alpha = rng.normal(size=(9, 5)).astype("float32"), rng.normal(size=(9, 3)).astype("float32")
    y = np.argmax(model.predict([zeta, alpha], verbose=0), -1)
    for x in ([zeta, alpha], {"alpha": alpha, "zeta": zeta}):
        result = kprune.evaluate_tflite(path, x, y, model=model, batch_size=4)
        assert result.accuracy == 1.0 and result.top1_agreement == 1.0 and result.max_abs_diff < 1e-5
    # Without the model: the file's input names and order.
    assert kprune.evaluate_tflite(path, {"zeta": zeta, "alpha": alpha}, y).accuracy == 1.0
    assert kprune.evaluate_tflite(path, [zeta, alpha], y).accuracy == 1.0
    with pytest.raises(ValueError, match=r"input 'zeta' must have shape \(None, 5\) \(with a batch axis\). "
                                         r"Received shape: \(9, 3\)"):
        kprune.evaluate_tflite(path, [alpha, zeta], y, model=model)


@pytest.mark.parametrize("call, error, match", [
    (lambda d: kprune.evaluate_tflite(d["files"]["int8"], d["x"][:, :6], d["y"]), ValueError,
     r"Argument `x`: input '.*' must have shape \(None, 8, 8, 1\) \(with a batch axis\). "
     r"Received shape: \(200, 6, 8, 1\)"),
    (lambda d: kprune.evaluate_tflite(d["files"]["int8"], d["x"], d["y"][:5]), ValueError,
     r"Argument `y` must have one label per example of `x` \(200\). Received shape: \(5,\)"),
    (lambda d: kprune.evaluate_tflite(d["files"]["int8"], d["x"], d["y"][:, None, None]), ValueError,
     r"Argument `y` must hold one integer label per example, of shape \(200,\), or one-hot rows of shape \(200, 10\)"),
    (lambda d: kprune.evaluate_tflite(d["files"]["float32"], d["x"], model=_two_inputs()), ValueError,
     r"Argument `model` has 2 inputs \['zeta', 'alpha'\]; the file has 1"),
    (lambda d: kprune.evaluate_tflite(d["files"]["float32"], d["x"], model=keras.Sequential(
        [keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])), ValueError,
     r"Argument `model`: input '.*' has shape \(None, 6, 6, 1\), the file '.*float32.tflite' takes \(None, 8, 8, 1\)"),
    (lambda d: kprune.evaluate_tflite(d["files"]["float32"], d["x"], batch_size=0), ValueError,
     r"Argument `batch_size` must be an integer >= 1. Received: batch_size=0"),
    (lambda d: kprune.evaluate_tflite("missing.tflite", d["x"]), FileNotFoundError,
     r"No such file: 'missing.tflite' \(argument `path`\)"),
])
def test_errors_name_the_argument(digits, call, error, match):
    with pytest.raises(error, match=match):
        call(digits)


def test_accuracy_needs_classes_and_one_output(tmp_path):
    x = keras.Input((4,))
    h = keras.layers.Dense(3)(x)
    two = keras.Model(x, [h, keras.layers.Dense(1)(h)])
    path = str(tmp_path / "two_out.tflite")
    kprune.export_tflite(two, path, measure_latency=False)
    data = np.zeros((2, 4), "float32")
    with pytest.raises(ValueError, match="accuracy is computed for a file with one output; '.*' has 2"):
        kprune.evaluate_tflite(path, data, np.zeros(2))
    result = kprune.evaluate_tflite(path, data, model=two)
    assert result.top1_agreement == 1.0  # the 1-wide output has no top-1
    one = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    kprune.export_tflite(one, path, measure_latency=False)
    with pytest.raises(ValueError, match=r"top-1 over the output's last axis, which has 1 entry"):
        kprune.evaluate_tflite(path, data, np.zeros(2))
