import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from kprune.cli import main as cli


def test_demo_runs_the_whole_pipeline(capsys, tmp_path):
    out_file = tmp_path / "demo.tflite"
    argv = ["demo", "--epochs", "2", "--prune-epochs", "2", "--finetune-epochs", "1",
            "--sparsity", "0.5", "--output", str(out_file)]
    assert cli.main(argv) == 0
    out = capsys.readouterr()
    rows = [line.split() for line in out.out.splitlines() if " kernel " in line]
    assert len(rows) == 4
    for row in rows:
        assert float(row[-1].rstrip("%")) == pytest.approx(50.0, abs=0.5)
    for text in ("pruned accuracy", "final accuracy", "TFLite accuracy", "TFLite export:", "quantization    int8"):
        assert text in out.out
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in out.err  # progress goes to stderr
    # The README shows the same lines (its figures come from the default run).
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")) as f:
        readme = f.read()
    block = readme[readme.index("```\nlayer        weight"):].split("```")[1]

    def labels(text):
        return [line.split()[0] for line in text.splitlines()
                if line.strip() and " kernel " not in line and not line.startswith("  note:")]

    assert labels(out.out) == labels(block)
    assert "TFLite export: " in block and "  latency " in block
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(out_file))
    interpreter.allocate_tensors()
    interpreter.invoke()


def _saved_model(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((6, 6, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(4),
    ])
    path = tmp_path / "model.keras"
    model.save(path)
    return model, path


def test_inspect_keras_and_tflite(capsys, tmp_path):
    model, path = _saved_model(tmp_path)
    assert cli.main(["inspect", str(path)]) == 0
    keras_out = capsys.readouterr().out
    assert "Conv2D" in keras_out and f"{model.count_params()}" in keras_out
    tflite = tmp_path / "model.tflite"
    assert cli.main(["export", str(path), str(tflite)]) == 0
    capsys.readouterr()
    assert cli.main(["inspect", str(tflite)]) == 0
    tflite_out = capsys.readouterr().out
    assert "CONV_2D" in tflite_out and "FULLY_CONNECTED" in tflite_out


def test_inspect_reads_a_file_whose_optimizer_this_backend_cannot_import(capsys, tmp_path):
    # What a file saved on PyTorch holds: its optimizer's module is keras.src.backend.torch.
    model, path = _saved_model(tmp_path)
    model.compile(optimizer="sgd", loss="mse")
    model.save(path)
    with zipfile.ZipFile(path) as z:
        files = {name: z.read(name) for name in z.namelist()}
    config = json.loads(files["config.json"])
    config["compile_config"]["optimizer"]["module"] = "keras.src.backend.not_installed.optimizers"
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    with pytest.raises(TypeError, match="Could not deserialize class"):
        keras.models.load_model(path)
    assert cli.main(["inspect", str(path)]) == 0
    assert f"{model.count_params()}" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["export_tflite", "export_tflite_int8", "TFLiteConverter"])
def test_inspect_names_ops_after_keras_layers(capsys, tmp_path, how):
    import tensorflow as tf

    import kprune

    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, name="conv"),
        keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(name="relu"),
        keras.layers.Flatten(name="flatten"), keras.layers.Dense(16, name="dense_1"),
        keras.layers.Dense(10, name="head"),
    ], name="digits")
    path = tmp_path / "model.tflite"
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")
    if how == "TFLiteConverter":
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    else:
        int8 = how.endswith("int8")
        kprune.export_tflite(model, path, quantize="int8" if int8 else None, representative_data=x,
                             int8_io=int8, measure_latency=False)
    capsys.readouterr()  # the converter's own lines
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[2:] if line.split()[0] != "total"]
    # BatchNormalization is folded into the convolution; the Dense layers
    # were named `StatefulPartitionedCall_1:0` and `digits_1/dense_1_1/MatMul1`.
    assert [(r[0], r[1]) for r in rows] == [
        ("conv", "CONV_2D"), ("dense_1", "FULLY_CONNECTED"), ("head", "FULLY_CONNECTED")]
    assert "StatefulPartitionedCall" not in out


def test_export_int8_with_calibration(capsys, tmp_path):
    model, path = _saved_model(tmp_path)
    data = np.random.default_rng(0).random((64, 6, 6, 1)).astype("float32")
    np.save(tmp_path / "calib.npy", data)
    out = tmp_path / "model_int8.tflite"
    code = cli.main(["export", str(path), str(out), "--quantize", "int8",
                     "--calibration", str(tmp_path / "calib.npy")])
    assert code == 0
    report = capsys.readouterr().out
    assert "quantization    int8" in report and "passed" in report
    assert out.stat().st_size > 0
    assert not any(line.split()[:2] == ["layer", "type"] for line in report.splitlines())  # --layers adds it
    assert cli.main(["export", str(path), str(out), "--layers", "--no-verify"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.split()[:2] == ["layer", "type"]):]
    assert [line.split()[:2] for line in table] == [
        ["layer", "type"], [model.layers[0].name, "Conv2D"], [model.layers[2].name, "Dense"],
        ["total", str(model.count_params())]]


@pytest.mark.parametrize(
    "make_argv, message",
    [
        (lambda d: ["inspect", str(d / "missing.keras")], "No such file"),
        (lambda d: ["inspect", str(d / "notes.txt")], "must be a Keras model or a path"),
        (lambda d: ["inspect", str(d / "corrupt.keras")], "Could not load the Keras model"),
        (lambda d: ["inspect", str(d / "corrupt.tflite")], "LiteRT cannot read"),
        (lambda d: ["export", str(d / "model.keras"), str(d / "o.tflite"), "--quantize", "int8"],
         "needs --calibration"),
        (lambda d: ["export", str(d / "model.keras"), str(d / "o.tflite"), "--quantize", "int8",
                    "--calibration", str(d / "missing.npy")], "No such file"),
        (lambda d: ["export", str(d / "model.keras"), str(d / "o.txt")], "must be a file path ending in '.tflite'"),
    ],
)
def test_bad_files_get_one_line_errors(tmp_path, capsys, make_argv, message):
    _saved_model(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "corrupt.keras").write_bytes(b"not a zip file")
    (tmp_path / "corrupt.tflite").write_bytes(b"not a flatbuffer at all" * 4)
    assert cli.main(make_argv(tmp_path)) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("kprune: error:")]
    assert len(errors) == 1 and message in errors[0], err
    assert not (tmp_path / "o.tflite").exists()


def test_a_missing_file_in_a_real_process_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "kprune", "inspect", str(tmp_path / "missing.tflite")],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("kprune: error: No such file")
    assert "Traceback" not in result.stderr


def test_export_prints_no_native_logs_unless_verbose(tmp_path):
    """TensorFlow's, the converter's and LiteRT's C++ log lines stay off the
    terminal by default; --verbose lets them through."""
    _, path = _saved_model(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    runs = {}
    for flag in ([], ["--verbose"]):
        result = subprocess.run(
            [sys.executable, "-m", "kprune", "export", str(path), str(tmp_path / "o.tflite"), *flag],
            capture_output=True, text=True, timeout=300, env=env,
        )
        assert result.returncode == 0, result.stderr
        runs[bool(flag)] = result.stderr
    native = ("I0000", "W0000", "loader.cc", "XNNPACK delegate", "oneDNN")
    assert not [line for line in runs[False].splitlines() if any(n in line for n in native)], runs[False]
    assert any(n in runs[True] for n in native), runs[True]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--sparsity", "1.5"], "must be in [0, 1), got 1.5"),
        (["demo", "--epochs", "0"], "must be >= 1, got 0"),
        (["export", "m.keras", "o.tflite", "--quantize", "int4"], "invalid choice: 'int4'"),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
