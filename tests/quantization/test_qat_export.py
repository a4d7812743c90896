"""A quantization-aware model and its int8 file compute the same numbers."""

import os

import keras
import numpy as np
import pytest
from _qat_models import accuracy, compile_classifier, small_cnn
from ai_edge_litert.interpreter import Interpreter

import kprune
from kprune.quantization import quantize_model, quantize_scope


@pytest.fixture(scope="module")
def trained_qat(digits):
    keras.utils.set_random_seed(1)
    x, y, _, _ = digits
    model = compile_classifier(small_cnn())
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    qat = compile_classifier(quantize_model(model), 1e-3)
    qat.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return model, qat


def file_outputs(path, x):
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for sample in x:
        interpreter.set_tensor(inp["index"], sample[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"])[0])
    return np.array(outputs), interpreter


def test_int8_file_agrees_with_the_keras_model(trained_qat, digits, tmp_path):
    model, qat = trained_qat
    _, _, x_test, y_test = digits
    path = str(tmp_path / "qat.tflite")
    report = kprune.export_tflite(qat, path, latency_runs=2)  # no representative_data
    assert report.quantization == "int8 (QAT ranges)" and report.verified
    assert any("no calibration" in note for note in report.notes)
    x_all = np.concatenate([digits[0], x_test])
    ours = qat.predict(x_all, verbose=0)
    theirs, interpreter = file_outputs(path, x_all)
    # The same class: the differences left are TFLite's int32 biases (rounded
    # to 1/2 of the input scale times the weight scale), which move a value
    # across a rounding boundary now and then, and ties between logits on
    # the output's grid that such a step breaks the other way.
    agreement = np.mean(np.argmax(ours, -1) == np.argmax(theirs, -1))
    assert agreement >= 0.985, agreement
    # Logits within two steps of the output's quantization.
    logits = qat.get_layer("quant_logits")
    lo, hi = (float(keras.ops.convert_to_numpy(v)) for v in logits.non_trainable_weights[:2])
    step = (hi - lo) / 255
    assert np.max(np.abs(ours - theirs)) <= 2 * step + 1e-6
    # Fully int8: every weight and activation tensor between the input and output.
    ops = {o["op_name"] for o in interpreter._get_ops_details()}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= ops
    for o in interpreter._get_ops_details():
        if o["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            types = [interpreter._get_tensor_details(i, 0)["dtype"] for i in o["inputs"][:2]]
            assert types == [np.int8, np.int8], o
    # Per-channel weight scales (one per output channel).
    conv = [d for d in interpreter.get_tensor_details() if d["dtype"] == np.int8 and len(d["shape"]) == 4
            and d["shape"][0] == 24]
    assert conv and len(conv[0]["quantization_parameters"]["scales"]) == 24
    # QAT accuracy: within 2 points of the float model on the test set (digits, 1 epoch).
    assert accuracy(qat, x_test, y_test) >= accuracy(model, x_test, y_test) - 0.02


def test_saved_qat_model_exports_from_its_file(trained_qat, digits, tmp_path):
    _, qat = trained_qat
    source = str(tmp_path / "qat.keras")
    qat.save(source)
    loaded = keras.models.load_model(source)  # no custom_objects
    x = digits[2][:32]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    with quantize_scope():  # and inside tfmot's scope too
        again = keras.models.load_model(source)
    np.testing.assert_array_equal(again.predict(x, verbose=0), qat.predict(x, verbose=0))
    report = kprune.export_tflite(source, str(tmp_path / "qat.tflite"), int8_io=True, sample_inputs=x,
                                  measure_latency=False)
    assert report.verified and report.int8_io and report.quantization == "int8 (QAT ranges)"
    assert os.path.getsize(report.path) == report.file_bytes


def test_export_arguments_for_qat_models(trained_qat, tmp_path):
    _, qat = trained_qat
    with pytest.raises(ValueError, match="converts to int8 with the ranges it learned: pass quantize=None or "
                                         "'int8'. Received: quantize='float16'"):
        kprune.export_tflite(qat, str(tmp_path / "m.tflite"), quantize="float16")
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="Argument `representative_data` is required"):
        kprune.export_tflite(plain, str(tmp_path / "m.tflite"), quantize="int8")
