"""Evaluating a .tflite file on data: accuracy, and agreement with a Keras model.

`evaluate_tflite(path, x, y=None, model=None)` runs the file in LiteRT (one
thread, batches of `batch_size`) on the inputs `x` -- given as the Keras
model takes them: int8 inputs are quantized with the file's scale and zero
point, int8/int16 outputs dequantized -- and returns a `TFLiteEvaluation`:

* with labels `y`, the top-1 accuracy: the fraction of predictions
  `argmax(output, axis=-1)` equal to `y` (integer labels of shape
  `output.shape[:-1]`, or one-hot rows of the output's shape);
* with a Keras `model`, how closely the file follows it on `x`: top-1
  agreement (the fraction of examples whose argmax the two share, the lowest
  over outputs with at least 2 classes) and the max and mean |difference| of
  the outputs, as `kprune.export_tflite` verifies a file.

Example:

>>> import os, tempfile, keras, numpy as np, kprune
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
>>> path = os.path.join(tempfile.mkdtemp(), "m.tflite")
>>> _ = kprune.export_tflite(model, path, measure_latency=False)
>>> x = np.random.default_rng(0).normal(size=(10, 4)).astype("float32")
>>> y = np.argmax(model.predict(x, verbose=0), -1)
>>> result = evaluate_tflite(path, x, y, model=model)
>>> result.accuracy, result.top1_agreement, result.max_abs_diff < 1e-5
(1.0, 1.0, True)
"""

import dataclasses
import os

import keras
import numpy as np

from kprune.export.verify import keras_outputs, verification
from kprune.litert import runtime as litert


@dataclasses.dataclass
class TFLiteEvaluation:
    """What `evaluate_tflite` measured.

    Attributes:
        path: the .tflite file.
        samples: the number of examples run.
        accuracy: top-1 accuracy of the file on `y` (see `evaluate_tflite`),
            or None without `y`.
        keras_accuracy: the same for the Keras model, or None.
        top1_agreement: fraction of examples on which the file's and the
            Keras model's argmax agree (the lowest over outputs with at least
            2 classes), or None.
        max_abs_diff / mean_abs_diff: of the file's (dequantized) outputs
            from the Keras model's, over all outputs, or None.
        quantized_inputs: whether inputs were quantized to the file's int8.
        dequantized_outputs: whether the file's outputs were dequantized.

    Example:

    >>> print(TFLiteEvaluation("m.tflite", 100, accuracy=0.97))
    LiteRT evaluation of 'm.tflite' on 100 examples
      accuracy         0.9700 (top-1)
    """

    path: str
    samples: int
    accuracy: float = None
    keras_accuracy: float = None
    top1_agreement: float = None
    max_abs_diff: float = None
    mean_abs_diff: float = None
    quantized_inputs: bool = False
    dequantized_outputs: bool = False

    def to_dict(self):
        """Plain Python data (`json.dumps` works on it)."""
        return dataclasses.asdict(self)

    def __str__(self):
        io = [("int8 inputs quantized" if self.quantized_inputs else ""),
              ("outputs dequantized" if self.dequantized_outputs else "")]
        io = ", ".join(part for part in io if part)
        lines = [f"LiteRT evaluation of '{self.path}' on {self.samples} examples" + (f" ({io})" if io else "")]
        if self.accuracy is not None:
            keras_part = "" if self.keras_accuracy is None else f"; Keras model {self.keras_accuracy:.4f}"
            lines.append(f"  accuracy         {self.accuracy:.4f} (top-1{keras_part})")
        if self.top1_agreement is not None:
            lines.append(f"  top-1 agreement  {self.top1_agreement:.1%} with the Keras model")
        if self.max_abs_diff is not None:
            lines.append(f"  max |diff|       {self.max_abs_diff:.3g} (mean {self.mean_abs_diff:.3g}) "
                         "from the Keras model's outputs")
        return "\n".join(lines)


def _quantized(detail):
    return detail["dtype"] in (np.int8, np.uint8, np.int16) and bool(detail["quantization"][0])


def _file_specs(interp, names):
    """`(name, shape, dtype)` of the file's inputs, in the order of `names`
    (the dtype x is given in: float32 for quantized inputs)."""
    ins, outs = litert.io_details(interp, *names)
    if len(ins) != len(names[0]):
        raise ValueError(
            f"Argument `model` has {len(names[0])} inputs {names[0]}; the file has {len(ins)}: "
            "it was not converted from this model."
        )
    specs = []
    for name, d in zip(names[0], ins):
        shape = tuple(None if s < 0 else int(s) for s in d.get("shape_signature", d["shape"]))
        specs.append((name, shape, "float32" if _quantized(d) else np.dtype(d["dtype"]).name))
    return specs, ins, outs


def _check_model(model, specs, outs, path):
    """Raise if the Keras model's inputs or outputs do not match the file's."""
    for (name, shape, _), (_, ours, _) in zip(litert.input_specs(model), specs):
        if len(shape) != len(ours) or any(a and b and a != b for a, b in zip(shape[1:], ours[1:])):
            raise ValueError(
                f"Argument `model`: input '{name}' has shape {shape}, the file '{path}' takes "
                f"{ours}: the file was not converted from this model."
            )
    count = len(litert.io_names(model)[1])  # 0 for a subclassed model: not known
    if count and count != len(outs):
        raise ValueError(
            f"Argument `model` has {count} outputs; the file '{path}' has {len(outs)}: it was not "
            "converted from this model."
        )


def _labels(y, output, argname="y"):
    """Integer labels of shape `output.shape[:-1]` from `y` (labels, labels
    with a trailing axis of 1, or one-hot rows)."""
    if output.shape[-1] < 2:
        raise ValueError(
            f"Argument `{argname}`: accuracy is top-1 over the output's last axis, which has "
            f"{output.shape[-1]} entry (output shape {output.shape}); it needs at least 2 classes."
        )
    if y.shape == output.shape:
        y = np.argmax(y, -1)
    elif y.shape == output.shape[:-1] + (1,):
        y = y[..., 0]
    if y.shape != output.shape[:-1]:
        raise ValueError(
            f"Argument `{argname}` must hold one integer label per example, of shape "
            f"{output.shape[:-1]}, or one-hot rows of shape {output.shape}. Received shape: {y.shape}"
        )
    return y


def _batches(samples, size):
    """Batch-1 samples grouped into batches of `size` (each a list of arrays)."""
    return [[np.concatenate(xs) for xs in zip(*samples[i : i + size])]
            for i in range(0, len(samples), size)]


def evaluate_tflite(path, x, y=None, model=None, batch_size=32, verbose=0):
    """Accuracy of a .tflite file on `(x, y)`, and its agreement with a Keras model.

    Args:
        path: the .tflite file.
        x: the inputs, as the Keras model takes them (floats, also for a file
            with int8 inputs: they are quantized with the file's scale and zero
            point): an array, or a list (in the model's input order) or dict
            (by input name) of arrays with a batch axis. Without `model`, the
            order and names are the file's.
        y: labels for the top-1 accuracy: integers of shape
            `output.shape[:-1]` (a trailing axis of 1 is allowed) or one-hot
            rows of the output's shape; for a file with one output. Defaults to
            None (no accuracy).
        model: the Keras model the file was converted from; its outputs on
            `x` give the top-1 agreement and the |differences| (and with `y`
            its accuracy). Defaults to None.
        batch_size: examples per LiteRT invoke (and Keras call). Defaults to
            32. A file converted with a fixed batch size runs with that one.
        verbose: 1 shows a progress bar over the batches. Defaults to 0.

    Returns:
        A `TFLiteEvaluation` (`print` it, or `to_dict()`).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `x` does not fit the file's inputs (the message names the
            input and its shape), `y` does not fit its output, or `model` is
            not the model the file came from.
        RuntimeError: LiteRT cannot run the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such file: '{path}' (argument `path`).")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Argument `batch_size` must be an integer >= 1. Received: batch_size={batch_size!r}")
    interp = litert.tflite_interpreter(path, "path")
    if model is not None:
        names = litert.io_names(model)
    else:
        signature = interp.get_signature_list()
        by_index = {}
        if len(signature) == 1:
            runner = interp.get_signature_runner(next(iter(signature)))
            by_index = {d["index"]: name for name, d in runner.get_input_details().items()}
        names = ([by_index.get(d["index"], d["name"]) for d in interp.get_input_details()], [])
    specs, ins, outs = _file_specs(interp, names)
    if model is not None:
        _check_model(model, specs, outs, path)
    if y is not None and len(outs) != 1:
        raise ValueError(
            f"Argument `y`: accuracy is computed for a file with one output; '{path}' has "
            f"{len(outs)}. Evaluate without `y` (agreement with `model`) or per output."
        )
    samples = litert.to_samples(x, specs, "x")
    if y is not None:
        y = np.asarray(keras.ops.convert_to_numpy(y))
        if y.ndim == 0 or len(y) != len(samples):
            raise ValueError(
                f"Argument `y` must have one label per example of `x` ({len(samples)}). "
                f"Received shape: {y.shape}"
            )
    fixed = int(ins[0].get("shape_signature", ins[0]["shape"])[0])
    size = fixed if fixed > 0 else batch_size
    if fixed > 0 and len(samples) % fixed:
        raise ValueError(
            f"The file '{path}' takes batches of exactly {fixed} examples; `x` has {len(samples)}."
        )
    batches = _batches(samples, size)
    bar = keras.utils.Progbar(len(batches)) if verbose else None
    actual = litert.run_samples(path, names, batches, progress=bar.update if bar else None)
    result = TFLiteEvaluation(
        path=path, samples=len(samples), quantized_inputs=any(_quantized(d) for d in ins),
        dequantized_outputs=any(_quantized(d) for d in outs),
    )
    if y is not None:
        result.accuracy = float(np.mean(np.argmax(actual[0], -1) == _labels(y, actual[0])))
    if model is not None:
        expected = [np.concatenate(ys) for ys in zip(*(keras_outputs(model, [b]) for b in batches))]
        figures = verification(expected, actual, None, np.inf, samples)
        result.top1_agreement = figures["top1_agreement"]
        result.max_abs_diff = figures["max_abs_error"]
        result.mean_abs_diff = figures["mean_abs_error"]
        if y is not None:
            result.keras_accuracy = float(np.mean(np.argmax(expected[0], -1) == _labels(y, expected[0])))
    return result
