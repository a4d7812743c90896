"""Running TFLite files in LiteRT: inputs, outputs, latency and per-op figures.

`tflite_interpreter(path_or_bytes)` opens a .tflite file (or its bytes) in
LiteRT's `Interpreter`, turning "not a TFLite model" into a ValueError that
names the file; `tflite_stats(path)` gives one `kprune.stats.records.LayerStats` per op
that reads weights (what `kprune.summary` prints for a .tflite file).

The helpers `kprune.export` runs its file with live here too: sample inputs
(an array, a list or dict of arrays, or a callable/iterable of batches) become
batch-1 samples in the Keras model's input order; the file's inputs and outputs
are matched to the Keras model's by signature names; int8 inputs are
quantized and int8/int16 outputs dequantized; latency is the median of timed
invokes on one thread.

Example:

>>> from kprune.litert.runtime import tflite_interpreter
>>> tflite_interpreter(b"not a TFLite model")
Traceback (most recent call last):
...
ValueError: LiteRT cannot read the converted model (argument `model`): ...
"""

import re
import time

import keras
import numpy as np

from kprune._internal.functional import is_graph
from kprune.stats.records import LayerStats
from kprune.litert.op_names import has_scope_suffixes, op_label

RANDOM_SAMPLES = 16
_WARMUP_RUNS = 5


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
    signatures = interp._get_full_signature_list()
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


def _open(path_or_bytes, io_names, argname):
    """An allocated one-thread interpreter and its I/O details in Keras order."""
    interp = tflite_interpreter(path_or_bytes, argname, num_threads=1)
    interp.allocate_tensors()
    return (interp, *io_details(interp, *io_names))


def _set_inputs(interp, details, sample):
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


def _outputs(interp, details):
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
        interp, ins, outs = _open(content, io_names, "model")
        results = []
        for sample in samples:
            _set_inputs(interp, ins, sample)
            interp.invoke()
            results.append(_outputs(interp, outs))
            if progress is not None:
                progress(len(results))
    except (RuntimeError, ValueError) as e:
        # LiteRT runs its messages together ("...node #11Node number 16 ...").
        message = re.sub(r"(?<=[0-9a-z.)])(?=Node number)", "; ", str(e))
        raise RuntimeError(" ".join(message.split())) from e
    return [np.concatenate(ys) for ys in zip(*results)]


def latency_ms(path, io_names, sample, runs):
    """Median milliseconds of one invoke on `sample`, after warm-up invokes."""
    interp, ins, _ = _open(path, io_names, "path")
    _set_inputs(interp, ins, sample)
    for _ in range(_WARMUP_RUNS):
        interp.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def interleaved_latency(path, reference, io_names, sample, rounds=9, runs=200):
    """Median ms of `path` and of `reference`, and the median per-round ratio.

    Each of `rounds` rounds times both files (`latency_ms`, `runs` invokes),
    alternating which goes first, so that drifts in machine load hit both
    alike; the ratio `path / reference` of every round is kept and the
    median returned, which is steadier than the ratio of two medians on a
    shared machine. Returns `(ms, reference_ms, ratio)`.
    """
    ms, reference_ms, ratios = [], [], []
    for r in range(rounds):
        if r % 2:
            b = latency_ms(path, io_names, sample, runs)
            a = latency_ms(reference, io_names, sample, runs)
        else:
            a = latency_ms(reference, io_names, sample, runs)
            b = latency_ms(path, io_names, sample, runs)
        ms.append(b)
        reference_ms.append(a)
        ratios.append(b / a)
    return float(np.median(ms)), float(np.median(reference_ms)), float(np.median(ratios))


# ---------------------------------------------------------------- per-op figures

# Compute ops: (weight input position, bias input position).
_COMPUTE_OPS = {
    "CONV_2D": (1, 2),
    "DEPTHWISE_CONV_2D": (1, 2),
    "FULLY_CONNECTED": (1, 2),
    "TRANSPOSE_CONV": (1, 3),
    "CONV_3D": (1, 2),
}
# Ops that turn a stored constant into the tensor a compute op reads.
_DECODE_OPS = ("DEQUANTIZE", "DENSIFY")
# Constants of these types are shapes, axes or indices, not parameters.
_INDEX_TYPES = (np.int32, np.int64, np.bool_)


def _tflite_macs(op_name, weight_shape, in_shape, out_shape):
    """MACs of one compute op on one example, as `handlers.macs` counts the
    Keras layer. Shapes are those of the batch-1 interpreter."""
    w, inp, out = (tuple(int(d) for d in s) for s in (weight_shape, in_shape, out_shape))
    if op_name == "TRANSPOSE_CONV":  # weights (out_c, kh, kw, in_c), per input pixel
        return int(np.prod(inp[1:])) * int(np.prod(w[:-1]))
    if op_name == "CONV_3D":  # weights (kd, kh, kw, in_c, out_c)
        return int(np.prod(out[1:-1])) * int(np.prod(w))
    if op_name == "DEPTHWISE_CONV_2D":  # weights (1, kh, kw, out_c)
        return int(np.prod(out[1:])) * int(np.prod(w[1:-1]))
    # CONV_2D weights (out_c, kh, kw, in_c); FULLY_CONNECTED (out_c, in_c).
    return int(np.prod(out)) * int(np.prod(w[1:]))


def _matmul_macs(lhs, out):
    """MACs of a batched matmul with output (..., M, N): M * N * K per batch,
    K being the axis of the left operand that is not M (it may be adjointed)."""
    k = lhs[-1] if lhs[-2] == out[-2] else lhs[-2]
    return int(np.prod(out)) * int(k)


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
    return interp, interp._get_ops_details()


def tflite_stats(path):
    """Per-op figures of a .tflite file.

    Parameters are the elements of the constants an op reads (int8, float16
    and sparse-encoded weights count as the dense tensor the op computes
    with: the file is run once, without delegates, to decode them). MACs are
    counted for CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV
    and CONV_3D with constant weights, as `handlers.macs` counts the Keras
    layer. Integer constants of other ops (shapes, axes) are not parameters.

    Args:
        path: a .tflite file (or its bytes).

    Returns:
        One `LayerStats` per op that reads weights, in execution order; its
        name is the Keras layer the op came from, read from its tensors' names
        (`kprune.litert.op_names`; `OPNAME_#index` when they name none), its type
        the op name.
    """
    interp, ops = decoded_interpreter(path, "model_or_path")
    tensors = {d["index"]: d for d in interp.get_tensor_details()}
    suffixed = has_scope_suffixes(d["name"] for d in tensors.values())

    def label(op, weights):
        outputs = [tensors[int(t)]["name"] for t in op["outputs"]]
        return op_label(op["op_name"], op["index"], [tensors[t]["name"] for t in weights], outputs, suffixed)
    producer = {int(t): op for op in ops for t in op["outputs"]}
    inputs = {d["index"] for d in interp.get_input_details()}

    def constant(t):
        if t < 0 or t in inputs:
            return False
        op = producer.get(t)
        return op is None or (op["op_name"] in _DECODE_OPS and all(constant(int(i)) for i in op["inputs"]))

    rows, seen = [], set()
    for op in ops:
        name = op["op_name"]
        if name in _DECODE_OPS:
            continue
        ins = [int(i) for i in op["inputs"]]
        if name in _COMPUTE_OPS:
            positions = [p for p in _COMPUTE_OPS[name] if p < len(ins)]
            weights = [ins[p] for p in positions if constant(ins[p])]
        else:
            weights = [t for t in ins if constant(t) and tensors[t]["dtype"] not in _INDEX_TYPES]
        if not weights:
            if name == "BATCH_MATMUL":  # activations times activations (attention)
                shapes = [tuple(int(d) for d in tensors[t]["shape"]) for t in ins[:2]]
                out = tuple(int(d) for d in tensors[int(op["outputs"][0])]["shape"])
                rows.append(LayerStats(label(op, []), name, 0, 0, _matmul_macs(shapes[0], out)))
            continue
        values = [interp.get_tensor(t) for t in weights if t not in seen]
        seen.update(weights)
        macs = 0
        if name in _COMPUTE_OPS and constant(ins[_COMPUTE_OPS[name][0]]):
            data_in = ins[2] if name == "TRANSPOSE_CONV" else ins[0]
            macs = _tflite_macs(name, tensors[ins[_COMPUTE_OPS[name][0]]]["shape"],
                                tensors[data_in]["shape"], tensors[int(op["outputs"][0])]["shape"])
        rows.append(LayerStats(label(op, weights), name, int(sum(v.size for v in values)),
                               int(sum(np.count_nonzero(v) for v in values)), int(macs)))
    return rows
