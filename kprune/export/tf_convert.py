"""TFLite export from a JAX or PyTorch session: the same steps, run on TensorFlow.

TFLite's converter needs a TensorFlow model, so `export_tflite` called on
another Keras backend saves the model to a temporary .keras file and runs
itself in a subprocess with `KERAS_BACKEND=tensorflow`
(`python -m kprune.export.worker`), which loads the file, exports, verifies in
LiteRT against the TensorFlow-backend Keras model (the same weights, so the
same outputs) and writes the report as JSON. The caller gets the
`ExportReport` and the exceptions it would have got in-process.

The model must load from its .keras file in a new process: built-in, kprune
and KerasHub layers do; the worker first imports the modules that define the
model's other classes (a subclassed model, custom layers), so those load if
they are registered with `keras.saving.register_keras_serializable` in an
importable module (not a script run as `__main__`).

Inputs (`representative_data`, `sample_inputs`) are read once in the caller,
in the forms `export_tflite` accepts, and passed as arrays.

Example:

>>> from kprune.export import tf_convert
>>> tf_convert.needs_subprocess() == (__import__("keras").backend.backend() != "tensorflow")
True
"""

import importlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from kprune._internal import functional
from kprune.litert import runtime as litert
from kprune.utils import backends

# The worker loads TensorFlow and converts: minutes on a loaded 2-core machine.
TIMEOUT = 1800
_ERRORS = {e.__name__: e for e in (ValueError, TypeError, RuntimeError, FileNotFoundError, OSError)}
_DATA_ARGS = ("representative_data", "sample_inputs")


def needs_subprocess():
    """Whether TFLite conversion must run in a TensorFlow-backend subprocess."""
    return backends.name() != "tensorflow"


def _save_inputs(model, options, folder):
    """Read the data arguments into arrays (one per model input) in an .npz."""
    specs = litert.input_specs(model)
    arrays = {}
    for key in _DATA_ARGS:
        data = options.pop(key, None)
        if data is None:
            continue
        samples = litert.to_samples(data, specs, key)
        for i in range(len(specs)):
            arrays[f"{key}/{i}"] = np.concatenate([s[i] for s in samples], axis=0)
    path = os.path.join(folder, "inputs.npz")
    np.savez(path, **arrays)
    return path


def load_inputs(path, options):
    """The worker's side of `_save_inputs`: arrays back into `options`."""
    with np.load(path, allow_pickle=False) as data:
        for key in _DATA_ARGS:
            names = sorted((n for n in data.files if n.startswith(key + "/")),
                           key=lambda n: int(n.split("/")[1]))
            if names:
                arrays = [data[n] for n in names]
                options[key] = arrays[0] if len(arrays) == 1 else arrays
    return options


def class_modules(model):
    """`[(module, directory)]`: the importable modules that define the
    classes of `model` and its layers, other than Keras', KerasHub's and
    kprune's (which load by themselves), with the `sys.path` entry each was
    found under."""
    found = {}
    for obj in [model, *functional.sublayers(model)]:
        name = type(obj).__module__
        if name == "__main__" or name.split(".")[0] in ("keras", "keras_hub", "kprune", "tensorflow"):
            continue
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path is None:
            continue
        depth = name.count(".") + (1 if os.path.basename(path) == "__init__.py" else 0)
        root = os.path.dirname(os.path.abspath(path))
        for _ in range(depth):
            root = os.path.dirname(root)
        found[name] = root
    return sorted(found.items())


def import_modules(modules):
    """The worker's side of `class_modules`: import each module (registering
    its classes with Keras)."""
    for name, root in modules:
        if root not in sys.path:
            sys.path.append(root)
        importlib.import_module(name)


def export_on_tensorflow(model, path, options):
    """Run `export_tflite(model, path, **options)` in a TensorFlow subprocess.

    Args:
        model: a Keras model (saved to a temporary .keras file).
        path: the .tflite file to write.
        options: the other `export_tflite` arguments.

    Returns:
        The report as a dict (`ExportReport.to_dict()`).
    """
    options = dict(options)
    with tempfile.TemporaryDirectory(prefix="kprune_export_") as folder:
        source = os.path.join(folder, "model.keras")
        model.save(source)
        request = {
            "model": source,
            "path": os.path.abspath(os.fspath(path)),
            "inputs": _save_inputs(model, options, folder),
            "options": options,
            "report": os.path.join(folder, "report.json"),
            "modules": class_modules(model),
        }
        with open(os.path.join(folder, "request.json"), "w") as f:
            json.dump(request, f)
        env = dict(os.environ, KERAS_BACKEND="tensorflow")
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "kprune.export.worker", os.path.join(folder, "request.json")],
                env=env, stdout=subprocess.DEVNULL, text=True, timeout=TIMEOUT,
                # verbose: the converter's and LiteRT's log lines reach the terminal.
                stderr=None if options.get("verbose") else subprocess.PIPE,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"TFLite export on the TensorFlow backend did not finish in {TIMEOUT} s."
            ) from None
        if not os.path.exists(request["report"]):
            tail = "\n".join((done.stderr or "").strip().splitlines()[-12:])
            raise RuntimeError(
                f"TFLite export on the TensorFlow backend failed (exit code {done.returncode}):\n{tail}"
            )
        with open(request["report"]) as f:
            result = json.load(f)
    if "error" in result:
        raise _ERRORS.get(result["error"], RuntimeError)(result["message"])
    report = result["report"]
    report["path"] = os.fspath(path)
    return report

