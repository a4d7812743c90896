"""How `keras.ops` operations between layers treat channels, and their MACs.

A Keras 3 functional model holds `keras.ops` calls as graph nodes of their
own: MobileNetV3's hard-swish is `x * relu6(x + 3) / 6`, an attention block
may take `x[:, 0]` or `ops.mean(x, axis=1)`. These nodes carry no weights,
so their only rule is how the channel (last) axis flows through them:

* elementwise operations on one tensor (activations, `abs`, `cast`, ...) and
  between a tensor and a scalar or a constant broadcast along channels
  (last axis of size 1) pass channels through: `"pass"`;
* elementwise operations between tensors (`x * y`, `x + y`, `where`) tie
  channel c of every input of full width, like the `Add` layer: `"merge"`;
* reductions over other axes (`ops.mean(x, axis=[1, 2])`), `squeeze` and
  `expand_dims` of other axes and indexing that keeps the last axis whole
  (`x[:, 0]`) pass channels through;
* `ops.concatenate(..., axis=-1)` lays channels side by side: `"concat"`;
* anything else (reshape, transpose, matmul, softmax over channels, an
  elementwise op with a per-channel constant, ...) leaves the channels that
  reach it whole, with the reason in the plan: `"block"`.

Their MACs (`op_macs`): matmuls and einsums of two arrays (two activations,
as attention's `Q K^T`, or an activation and a weight) and fused attention;
elementwise and shape operations count 0.

Example:

>>> import keras
>>> from kprune._internal import functional
>>> from kprune.registry import ops as ops_rules
>>> x = keras.Input((4, 4, 8))
>>> y = keras.ops.mean(x * 2.0, axis=[1, 2])
>>> [ops_rules.channel_spec(n).kind for n in functional.nodes(keras.Model(x, y))]
['pass', 'pass']
"""

import math

import numpy as np

from kprune.registry.einsum import einsum_macs
from kprune.registry.rules import ChannelSpec, block

_UNARY = frozenset("""
Abs Absolute Arccos Arccosh Arcsin Arcsinh Arctan Arctanh Cast Cbrt Ceil Clip Conj Conjugate
Copy Cos Cosh Deg2rad Exp Exp2 Expm1 Fabs Floor Imag IsInf Isfinite Isinf Isnan Isneginf
Isposinf Log Log10 Log1p Log2 LogicalNot NanToNum Negative Rad2deg Real Reciprocal Round
SaturateCast Sign Signbit Sin Sinc Sinh Sqrt Square StopGradient Tan Tanh Trunc Erf Erfc
Erfinv Rsqrt Celu Elu Gelu HardShrink HardSigmoid HardSilu HardTanh LeakyRelu LogSigmoid
Relu Relu6 Selu Sigmoid Silu SoftShrink Softplus Softsign SparsePlus SparseSigmoid Squareplus
TanhShrink Threshold ConvertToTensor OnesLike ZerosLike FullLike EmptyLike
""".split())

_BINARY = frozenset("""
Add Subtract Multiply Divide TrueDivide DivideNoNan FloorDivide Mod Fmod Power Maximum Minimum
Fmax Fmin Arctan2 Hypot Logaddexp Logaddexp2 Equal NotEqual Greater GreaterEqual Less
LessEqual LogicalAnd LogicalOr LogicalXor Heaviside Copysign Nextafter Where
""".split())

_REDUCTIONS = frozenset("""
Mean Sum Max Min Prod Std Var Amax Amin All Any Median Nanmean Nansum Nanmax Nanmin Nanstd
Nanvar Nanprod Logsumexp Ptp
""".split())


def _name(op):
    return type(op).__name__


def _rank(node):
    tensors = node.input_tensors
    return len(tensors[0].shape) if tensors else None


def _touches_last(axis, rank):
    if axis is None:
        return True
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return any(int(a) % rank == rank - 1 for a in axes)


def _constant_ok(value):
    """A constant that broadcasts along channels (scalar, or last axis of size 1)."""
    shape = tuple(np.shape(value))  # a TensorFlow constant's TensorShape, too
    return not shape or shape[-1] == 1


def _elementwise(node):
    tensors = node.input_tensors
    if len(tensors) > 1:
        return ChannelSpec("merge")
    constants = [a for a in node.arguments.args if not hasattr(a, "_keras_history")]
    for value in constants:
        if isinstance(value, (str, bytes)) or value is None:
            continue
        if not _constant_ok(value):
            return block(f"a constant of shape {np.shape(value)} varies along channels")
    return ChannelSpec("pass")


def _get_item(node):
    """`x[key]` keeps the channel axis when the key leaves the last axis whole."""
    args = node.arguments.args
    key = args[1] if len(args) > 1 else None
    rank = _rank(node)
    key = tuple(key) if isinstance(key, (tuple, list)) else (key,)
    if any(k is None for k in key):
        return block("indexing adds an axis (None) where the channel axis may move")
    if Ellipsis in key:
        after = key[key.index(Ellipsis) + 1:]
        whole = not after or after[-1] == slice(None)
    else:
        whole = len(key) < rank or key[-1] == slice(None)
    return ChannelSpec("pass") if whole else block("indexing selects along the channel axis")


def _axis_op(node, kind_if_last, reason):
    op, rank = node.operation, _rank(node)
    axis = getattr(op, "axis", None)
    if _name(op) == "Concatenate":
        return ChannelSpec("concat") if _touches_last(axis, rank) else ChannelSpec("merge")
    if _name(op) == "ExpandDims":
        axes = axis if isinstance(axis, (list, tuple)) else [axis]
        new_rank = rank + len(axes)
        moved = any(int(a) % new_rank == new_rank - 1 for a in axes)
        return block(reason) if moved else ChannelSpec("pass")
    if _touches_last(axis, rank):
        return block(reason) if kind_if_last == "block" else ChannelSpec(kind_if_last)
    return ChannelSpec("pass")


def channel_spec(node):
    """The `ChannelSpec` of a graph node whose operation is a `keras.ops` call."""
    name = _name(node.operation)
    if name in _UNARY or name in _BINARY:
        return _elementwise(node)
    if name in _REDUCTIONS:
        return _axis_op(node, "block", f"ops.{name.lower()} reduces the channel axis")
    if name == "GetItem":
        return _get_item(node)
    if name in ("Concatenate", "Squeeze", "ExpandDims"):
        return _axis_op(node, "block", f"ops.{name.lower()} changes the channel axis")
    if name in ("Softmax", "LogSoftmax"):
        return _axis_op(node, "block", "softmax mixes channels")
    return block(f"kprune has no channel rule for keras.ops operation {name}")


def _operand_shapes(args):
    """Shapes of the array arguments of a call (tensors, variables, constants)."""
    return [tuple(a.shape) for a in args if hasattr(a, "shape") and not isinstance(a, (str, bytes))]


def op_macs(op, args, output_shapes):
    """MACs of one `keras.ops` call on one example: matmuls and einsums between
    two arrays (tensors, or a tensor and a weight), and fused attention
    (`Q K^T` and `A V`, as `MultiHeadAttention` counts them); 0 for elementwise
    and shape operations. `args` are the call's positional arguments; the
    first axis of every tensor is the batch axis.

    Example (attention scores: T x T x d per example):

    >>> import keras
    >>> from kprune._internal import functional
    >>> x = keras.Input((6, 4))
    >>> scores = keras.ops.einsum("btd,bsd->bts", x, x)
    >>> node = next(functional.nodes(keras.Model(x, scores)))
    >>> op_macs(node.operation, node.arguments.args, [(None, 6, 6)])
    144
    """
    name = _name(op)
    shapes = _operand_shapes(args)
    out = tuple(output_shapes[0]) if output_shapes else ()
    if name == "Matmul" and len(shapes) == 2 and len(shapes[0]) >= 2:
        return math.prod(int(d or 1) for d in out[1:]) * int(shapes[0][-1] or 1)
    if name == "Einsum" and len(shapes) == 2:
        subscripts = getattr(op, "subscripts", None)
        if isinstance(subscripts, str) and "->" in subscripts:
            return einsum_macs(subscripts, shapes[0], shapes[1], out)
    if name == "DotProductAttention" and len(shapes) >= 3:
        # query (B, T, H, D), key (B, S, K, D), value (B, S, K, Dv).
        (_, t, h, d), (_, s, _, _), (_, _, _, dv) = shapes[:3]
        return int(t or 1) * int(s or 1) * int(h) * (int(d) + int(dv))
    return 0


def macs(node):
    """MACs of the `keras.ops` call of a graph node on one example (`op_macs`)."""
    return op_macs(node.operation, node.arguments.args, [tuple(t.shape) for t in node.outputs])
