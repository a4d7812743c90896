"""Attention heads: how an attention layer's kernels split into heads.

An attention layer whose projections are `EinsumDense` layers named
`query`, `key`, `value` and `attention_output` (Keras' `MultiHeadAttention`,
KerasHub's `CachedMultiHeadAttention`, `LlamaAttention`, `CachedGemmaAttention`,
`Qwen3Attention`, ...) is described by a `HeadSpec`: which kernel (and bias)
axis indexes the query heads and which the key/value heads, read from each
projection's einsum equation -- the axis of the head letter (the output's
second-to-last axis for `query`/`key`/`value`, the input's for
`attention_output`). Llama's query kernel `(d, Hq, hd)` (`"bqm,muh->bquh"`)
has its heads on axis 1, Gemma's `(Hq, d, hd)` (`"btd,ndh->btnh"`) on axis 0.

Under grouped-query attention (GQA) query head `u` reads key/value head
`u // G`, `G = Hq / Hkv` (the groups are contiguous, as `ops.repeat(axis=2)`
makes them). The channel dependency graph turns a `HeadSpec` into prunable
units (`kprune.dependency.channel_graph`): a key/value head with its `G`
query heads, or query heads taken evenly from every group.

The value bias of a removed head reaches the output as a constant: attention
weights sum to 1 over the keys, so head `u` adds `b_v[u // G] @ W_o[u]`
whatever the input. `fold` names the weights that let channel pruning add
that constant to the output bias (`fold_value_bias`), which makes removing a
head of a layer with biases (GPT-2, BERT, ViT) exact.

Example:

>>> import keras
>>> from kprune.registry.attention import head_spec
>>> mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
>>> _ = mha(keras.ops.ones((1, 3, 8)), keras.ops.ones((1, 3, 8)))
>>> spec = head_spec(mha)
>>> spec.num_query, spec.num_kv, spec.head_dim, [tuple(v.shape) + (a,) for v, a in spec.query_slices]
(2, 2, 4, [(8, 2, 4, 1), (2, 4, 0)])
"""

import re
from typing import NamedTuple

import keras
import numpy as np

from kprune._internal.functional import sublayers

PROJECTIONS = ("query", "key", "value", "attention_output")


class HeadSpec(NamedTuple):
    """How an attention layer's weights split into heads.

    Attributes:
        num_query: query heads `Hq`.
        num_kv: key/value heads `Hkv` (`Hq` without GQA); `Hq % Hkv == 0`.
        head_dim: channels per head.
        query_slices: `((variable, axis), ...)` that compute query heads
            (the query kernel and bias, a gate's kernel and bias).
        output_slices: `((variable, axis), ...)` that read query heads (the
            output projection's kernel).
        kv_slices: `((variable, axis), ...)` indexed by key/value head.
        fold: `(value_bias, its head axis, output_kernel, its head axis,
            output_bias)`, or None when a removed head's value bias cannot be
            folded (no value or output bias, or a gate).
        query_key, kv_key: the config keys of the head counts (cloning a
            layer from its config: `"num_heads"` for `MultiHeadAttention`),
            or None.
    """

    num_query: int
    num_kv: int
    head_dim: int
    query_slices: tuple
    output_slices: tuple
    kv_slices: tuple
    fold: tuple = None
    query_key: str = None
    kv_key: str = None


def _letters(equation):
    match = re.match(r"([\w.]+),([\w.]+)->([\w.]+)$", equation.replace(" ", ""))
    return match.groups() if match else None


def head_axes(projection, role):
    """`(kernel axis, bias axis or None)` of the heads of an `EinsumDense`
    projection: `role="in"` for query/key/value (the head letter is the
    output's second-to-last), `"out"` for the output projection (the input's).

    >>> dense = keras.layers.EinsumDense("btd,ndh->btnh", (None, 2, 4))
    >>> dense.build((None, None, 8))
    >>> head_axes(dense, "in")
    (0, None)
    """
    letters = _letters(projection.equation)
    if letters is None:
        return None, None
    inputs, kernel, output = letters
    source = output if role == "in" else inputs
    if len(source) < 3 or "." in source:
        return None, None
    letter = source[-2]
    if letter not in kernel:
        return None, None
    bias_axes = getattr(projection, "bias_axes", None) or ""
    return kernel.index(letter), (bias_axes.index(letter) if letter in bias_axes else None)


def projections(layer):
    """`{name: EinsumDense}` of the projections an attention layer holds
    directly, by layer name (`query`, `key`, `value`, `attention_output`,
    and `gate` for a gated `MultiHeadAttention`)."""
    found = {}
    for part in sublayers(layer, recursive=False):
        if isinstance(part, keras.layers.EinsumDense) and part.name in PROJECTIONS + ("gate",):
            found[part.name] = part
    return found


def _bias(part):
    bias = getattr(part, "bias", None)
    return bias if isinstance(bias, keras.Variable) else None


def _heads(part, role):
    """`[(variable, axis)]` of a projection's kernel and bias, and the head count."""
    kernel_axis, bias_axis = head_axes(part, role)
    if kernel_axis is None:
        return None, 0
    slices = [(part.kernel, kernel_axis)]
    if _bias(part) is not None and role == "in" and bias_axis is not None:
        slices.append((part.bias, bias_axis))
    return slices, int(part.kernel.shape[kernel_axis])


def head_spec(layer, query_key=None, kv_key=None):
    """The `HeadSpec` of a built attention layer, or None when its projections
    are not four head-indexed `EinsumDense` layers (LoRA-enabled or quantized
    projections, other equations).

    Args:
        layer: the attention layer.
        query_key, kv_key: config keys of its head counts (see `HeadSpec`).
    """
    parts = projections(layer)
    if not layer.built or any(name not in parts for name in PROJECTIONS):
        return None
    for part in parts.values():
        if getattr(part, "lora_enabled", False) or getattr(part, "quantization_mode", None):
            return None
    q, hq = _heads(parts["query"], "in")
    k, hk = _heads(parts["key"], "in")
    v, hv = _heads(parts["value"], "in")
    o, ho = _heads(parts["attention_output"], "out")
    if None in (q, k, v, o) or not (hk == hv and hq == ho and hk and hq % hk == 0):
        return None
    gate = parts.get("gate")
    if gate is not None:
        g, hg = _heads(gate, "in")
        if g is None or hg != hq:
            return None
        q = q + g
    q_kernel, q_axis = q[0]
    head_dim = int(np.prod(q_kernel.shape)) // (hq * int(q_kernel.shape[einsum_model_axis(parts["query"])]))
    fold = None
    value_bias, output_bias = _bias(parts["value"]), _bias(parts["attention_output"])
    if gate is None and value_bias is not None and output_bias is not None and len(v) == 2:
        fold = (value_bias, v[1][1], parts["attention_output"].kernel, o[0][1], output_bias)
    return HeadSpec(hq, hk, head_dim, tuple(q), tuple(o), tuple(k + v), fold, query_key, kv_key)


def einsum_model_axis(projection):
    """The kernel axis an input projection contracts with its input (the model
    dimension): the kernel letter that is the input's last."""
    inputs, kernel, _ = _letters(projection.equation)
    return kernel.index(inputs[-1])


def fold_value_bias(values, spec, removed_query_heads):
    """Add the constant that removed query heads contribute to the output bias.

    Head `u` adds `b_v[u // G] @ W_o[u]` (its value bias, through softmax
    weights that sum to 1) to every output; once the head is gone the output
    bias carries it. `values` maps `id(variable)` to arrays and is updated in
    place (the output bias only). Nothing happens without `spec.fold`.

    >>> import numpy as np
    >>> mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=1, output_shape=1)
    >>> _ = mha(keras.ops.ones((1, 1, 2)), keras.ops.ones((1, 1, 2)))
    >>> spec = head_spec(mha)
    >>> value_bias, _, kernel, _, bias = spec.fold
    >>> values = {id(value_bias): np.array([[1.0], [2.0]]), id(kernel): np.ones((2, 1, 1)),
    ...           id(bias): np.zeros(1)}
    >>> fold_value_bias(values, spec, [1])
    >>> values[id(bias)].tolist()
    [2.0]
    """
    if spec.fold is None or not len(removed_query_heads):
        return
    value_bias, value_axis, kernel, kernel_axis, bias = spec.fold
    group = spec.num_query // spec.num_kv
    heads = np.asarray(removed_query_heads, dtype=np.int64)
    b_v = np.moveaxis(np.asarray(values[id(value_bias)], np.float64), value_axis, 0)[heads // group]
    w_o = np.moveaxis(np.asarray(values[id(kernel)], np.float64), kernel_axis, 0)[heads]
    added = np.einsum("uh,uhd->d", b_v.reshape(len(heads), -1), w_o.reshape(len(heads), b_v[0].size, -1))
    values[id(bias)] = (np.asarray(values[id(bias)], np.float64) + added).astype(values[id(bias)].dtype)
