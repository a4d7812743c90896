"""Running TFLite files in LiteRT: opening a file, its inputs and outputs, running samples.

`tflite_interpreter(path_or_bytes)` opens a .tflite file (or its bytes) in
LiteRT's `Interpreter`, turning "not a TFLite model" into a ValueError that
names the file; `decoded_interpreter` runs it once with every tensor kept
(what `kprune.stats.tflite_ops` reads).

The helpers `kprune.export` runs its file with live here too: sample inputs
(an array, a list or dict of arrays, or a callable/iterable of batches) become
batch-1 samples in the Keras model's input order; the file's inputs and outputs
are matched to the Keras model's by signature names; int8 inputs are
quantized and int8/int16 outputs dequantized. Timing is `kprune.litert.timing`.

Example:

>>> from kprune.litert.runtime import tflite_interpreter
>>> tflite_interpreter(b"not a TFLite model")
Traceback (most recent call last):
...
ValueError: LiteRT cannot read the converted model (argument `model`): ...
"""

import re

import keras
import numpy as np

from kprune._internal.functional import is_graph
from kprune._internal.litert_interpreter import ops_details, signature_list

RANDOM_SAMPLES = 16
WARMUP_RUNS = 5


def tflite_interpreter(path_or_bytes, argname="model", **kwargs):
    """A LiteRT `Interpreter` for a .tflite path or flatbuffer bytes.

    Args:
        path_or_bytes: a path, or the model's bytes.
        argname: the caller's argument name, for error messages.
        **kwargs: `Interpreter` arguments (`num_threads`, ...).

    Returns:
        The (unallocated) interpreter. A file that is not a TFLite model
        raises a ValueError naming it.
    """
    from ai_edge_litert.interpreter import Interpreter

    key = "model_content" if isinstance(path_or_bytes, bytes) else "model_path"
    try:
        return Interpreter(**{key: path_or_bytes}, **kwargs)
    except ValueError as e:
        name = "the converted model" if isinstance(path_or_bytes, bytes) else f"'{path_or_bytes}'"
        raise ValueError(f"LiteRT cannot read {name} (argument `{argname}`): {str(e).strip()}") from e


# ---------------------------------------------------------------- samples


def input_specs(model):
    """`(name, shape, dtype)` of each model input, in call order."""
    if is_graph(model):
        return [(t.name, tuple(t.shape), str(t.dtype)) for t in model.inputs]
    shape = (getattr(model, "_build_shapes_dict", None) or {}).get("input_shape")
    if isinstance(shape, list) and all(d is None or isinstance(d, int) for d in shape):
        shape = tuple(shape)  # a model loaded from .keras: its build config is JSON
    if not isinstance(shape, tuple):
        raise ValueError(
            f"Subclassed model '{model.name}' must be called once on a single input tensor "
            "before export (its input shape is unknown)."
        )
    return [("input", (None,) + tuple(shape[1:]), str(model.input_dtype))]


def _structure(item, specs, argname):
    """One input structure (an array, a list or a dict by input name) as a
    list of arrays in input order, each with a batch axis."""
    names = [name for name, _, _ in specs]
    if isinstance(item, dict):
        if set(item) != set(names):
            raise ValueError(
                f"Argument `{argname}`: dict keys must be the model's input names {names}. "
                f"Received keys: {sorted(item)}"
            )
        item = [item[n] for n in names]
    elif not isinstance(item, (list, tuple)):
        item = [item]
    if len(item) != len(names):
        raise ValueError(
            f"Argument `{argname}`: the model has {len(names)} inputs {names}; "
            f"received {len(item)} arrays."
        )
    arrays = []
    for (name, shape, dtype), value in zip(specs, item):
        value = np.asarray(keras.ops.convert_to_numpy(value)).astype(dtype)
        fixed = zip(shape[1:], value.shape[1:])
        if value.ndim != len(shape) or any(e is not None and e != v for e, v in fixed):
            raise ValueError(
                f"Argument `{argname}`: input '{name}' must have shape {shape} "
                f"(with a batch axis). Received shape: {value.shape}"
            )
        arrays.append(value)
    if len({a.shape[0] for a in arrays}) != 1:
        raise ValueError(
            f"Argument `{argname}`: the input arrays have different batch sizes "
            f"{[a.shape[0] for a in arrays]}."
        )
    return arrays


def to_samples(data, specs, argname):
    """Samples of batch 1 (each a list of arrays in input order) from an
    array/list/dict of arrays, or a callable/iterable yielding such batches.

    >>> samples = to_samples(np.zeros((3, 2)), [("x", (None, 2), "float32")], "data")
    >>> len(samples), samples[0][0].shape, samples[0][0].dtype
    (3, (1, 2), dtype('float32'))
    """
    if callable(data):
        data = data()
    is_batch = isinstance(data, dict) or hasattr(data, "shape") or (
        isinstance(data, (list, tuple)) and len(specs) > 1 and len(data) == len(specs)
        and all(hasattr(d, "shape") for d in data)
    )
    try:
        batches = [data] if is_batch else list(data)
    except TypeError:
        raise ValueError(
            f"Argument `{argname}` must be an array, a list/dict of arrays, or a callable or "
            f"iterable of input batches. Received: {type(data).__name__}"
        ) from None
    samples = []
    for batch in batches:
        arrays = _structure(batch, specs, argname)
        samples += [[a[i : i + 1] for a in arrays] for i in range(arrays[0].shape[0])]
    if not samples:
        raise ValueError(f"Argument `{argname}` holds no samples.")
    return samples


def random_samples(specs, count=None):
    """`count` (default `RANDOM_SAMPLES`) seeded standard-normal samples (zeros
    for integer inputs)."""
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(RANDOM_SAMPLES if count is None else count):
        sample = []
        for _, shape, dtype in specs:
            size = (1,) + tuple(d or 1 for d in shape[1:])
            integer = "int" in dtype
            sample.append(np.zeros(size, dtype) if integer else rng.normal(size=size).astype(dtype))
        samples.append(sample)
    return samples


# ---------------------------------------------------------------- running


def io_names(model):
    """`(input names, output names)` of a Keras model, to match a file's I/O by."""
    output_names = list(getattr(model, "output_names", None) or ())
    return [name for name, _, _ in input_specs(model)], output_names


def io_details(interp, input_names, output_names):
    """Input and output details of `interp`, in the Keras model's order
    (matched by signature names; the file's order where they do not match)."""
    ins, outs = interp.get_input_details(), interp.get_output_details()
    signatures = signature_list(interp)
    if len(signatures) == 1:
        sig = next(iter(signatures.values()))
        by_index = {d["index"]: d for d in ins + outs}
        if set(sig["inputs"]) == set(input_names):
            ins = [by_index[sig["inputs"][n]] for n in input_names]
        keys = list(sig["outputs"])
        if all(re.fullmatch(r"output_\d+", k) for k in keys):
            keys.sort(key=lambda k: int(k.split("_")[1]))
        elif set(keys) == set(output_names):
            keys = list(output_names)
        outs = [by_index[sig["outputs"][k]] for k in keys]
    return ins, outs


def open_file(path_or_bytes, io_names, argname):
    """An allocated one-thread interpreter and its I/O details in Keras order."""
    interp = tflite_interpreter(path_or_bytes, argname, num_threads=1)
    interp.allocate_tensors()
    return (interp, *io_details(interp, *io_names))


def set_inputs(interp, details, sample):
    if any(tuple(d["shape"]) != x.shape for d, x in zip(details, sample)):
        for d, x in zip(details, sample):
            interp.resize_tensor_input(d["index"], x.shape)
        interp.allocate_tensors()
        fresh = {d["index"]: d for d in interp.get_input_details()}
        details[:] = [fresh[d["index"]] for d in details]
    for d, x in zip(details, sample):
        scale, zero = d["quantization"]
        if d["dtype"] in (np.int8, np.uint8) and scale and x.dtype.kind == "f":
            info = np.iinfo(d["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        interp.set_tensor(d["index"], x.astype(d["dtype"]))


def read_outputs(interp, details):
    values = []
    for d in details:
        y = interp.get_tensor(d["index"])
        scale, zero = d["quantization"]
        y = y.astype(np.float64)
        values.append((y - zero) * scale if scale and d["dtype"] in (np.int8, np.uint8, np.int16) else y)
    return values


def run_samples(content, io_names, samples, progress=None):
    """LiteRT outputs for each sample (`progress(k)` told after the k-th);
    raises RuntimeError if LiteRT cannot run it."""
    try:
        interp, ins, outs = open_file(content, io_names, "model")
        results = []
        for sample in samples:
            set_inputs(interp, ins, sample)
            interp.invoke()
            results.append(read_outputs(interp, outs))
            if progress is not None:
                progress(len(results))
    except (RuntimeError, ValueError) as e:
        # LiteRT runs its messages together ("...node #11Node number 16 ...").
        message = re.sub(r"(?<=[0-9a-z.)])(?=Node number)", "; ", str(e))
        raise RuntimeError(" ".join(message.split())) from e
    return [np.concatenate(ys) for ys in zip(*results)]


def decoded_interpreter(path_or_bytes, argname="model"):
    """An interpreter run once on zeros, without delegates, all tensors kept.

    int8, float16 and sparse-encoded constants are decoded by DEQUANTIZE /
    DENSIFY ops at run time; after this run their decoded values are
    readable with `get_tensor`.

    Args:
        path_or_bytes: a .tflite file or its flatbuffer bytes.
        argname: the argument named in the error for a file that is not TFLite.

    Returns:
        `(interpreter, ops)`, `ops` being the interpreter's op details in
        execution order.
    """
    from ai_edge_litert.interpreter import OpResolverType

    interp = tflite_interpreter(
        path_or_bytes, argname,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    interp.invoke()
    return interp, ops_details(interp)
