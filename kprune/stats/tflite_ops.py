"""Per-op figures of a .tflite file: parameters, nonzero parameters and MACs.

What `kprune.summary` and `kprune inspect` print for a .tflite file, counted
as `kprune.stats.keras_stats` counts the Keras model it came from, so the
two can be compared op by op.

Example:

>>> import os, tempfile, keras, kprune
>>> model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(4, name="head")])
>>> path = os.path.join(tempfile.mkdtemp(), "m.tflite")
>>> _ = kprune.export_tflite(model, path, verify=False, measure_latency=False)
>>> [(row.name, row.type, row.params, row.macs) for row in tflite_stats(path)]
[('head', 'FULLY_CONNECTED', 40, 40)]

(The converter drops the zero bias: 40 parameters in the file, 44 in the Keras layer.)
"""

import numpy as np

from kprune.litert.op_names import has_scope_suffixes, op_label
from kprune.litert.runtime import decoded_interpreter
from kprune.stats.records import LayerStats

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
