"""The widths of a transformer block, read from its (pruned) weights.

A KerasHub model is rebuilt smaller from arrays (`kprune.channels.apply_plan`
hands each variable's new array to the builder): the new head counts and FFN
widths are those arrays' shapes along the axes the layer registry names --
the query and key kernels' head axes (`kprune.registry.attention.head_spec`),
the FFN down projection's input axis, and the query kernel's model axis
(the hidden size, when `plan_channels(..., hidden=...)` pruned it). `block_widths` reads them,
`uniform` says whether every layer has the same, and `check_lists` checks
the per-layer lists the pruned backbone classes take.

Example:

>>> check_lists("Backbone", layer_query_heads=[4, 2], layer_intermediate_dims=(8, 8))
([4, 2], [8, 8])
>>> uniform([4, 4, 4]), uniform([4, 2])
(4, None)
"""

from typing import NamedTuple

from kprune._internal.functional import sublayers
from kprune.registry.attention import einsum_model_axis, head_spec, projections


class BlockWidths(NamedTuple):
    """The widths of one transformer block after pruning."""

    query_heads: int
    kv_heads: int
    head_dim: int
    ffn: int  # units of the FFN (a gated FFN: of each of its gate and up projections)
    hidden: int = None  # channels of the residual stream the block reads (the hidden size)


def attention_of(block):
    """The attention layer inside a transformer block (the sublayer with heads)."""
    for layer in sublayers(block):
        if head_spec(layer) is not None:
            return layer
    raise ValueError(f"Layer '{block.name}' ({type(block).__name__}) holds no attention layer kprune knows.")


def named(block, name):
    """The sublayer of `block` called `name`."""
    for layer in sublayers(block):
        if layer.name == name:
            return layer
    raise ValueError(f"Layer '{block.name}' ({type(block).__name__}) holds no layer named '{name}'.")


def block_widths(block, values_of, ffn_output):
    """`BlockWidths` of `block` whose variables will hold `values_of(variable)`.

    Args:
        block: a built transformer block.
        values_of: `variable -> array` (the pruned arrays).
        ffn_output: the name of the FFN's down projection (its input axis,
            axis 0 of its kernel, counts the FFN units).
    """
    attention = attention_of(block)
    spec = head_spec(attention)
    (query, q_axis), (key, k_axis) = spec.query_slices[0], spec.kv_slices[0]
    model_axis = einsum_model_axis(projections(attention)["query"])
    down = named(block, ffn_output)
    return BlockWidths(int(values_of(query).shape[q_axis]), int(values_of(key).shape[k_axis]),
                       spec.head_dim, int(values_of(down.kernel).shape[0]),
                       int(values_of(query).shape[model_axis]))


def uniform(values):
    """The one value of `values` if they are all equal, else None."""
    values = list(values)
    return values[0] if values and all(v == values[0] for v in values) else None


def check_lists(owner, **lists):
    """The per-layer width lists as lists of ints, checked: same length (the
    number of layers, at least 1), every entry a positive int."""
    result, length = [], None
    for name, value in lists.items():
        if not isinstance(value, (list, tuple)) or not value or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            raise ValueError(
                f"Argument `{name}` of {owner} must be a non-empty list of positive integers, one "
                f"per layer. Received: {name}={value!r}"
            )
        if length is not None and len(value) != length:
            raise ValueError(
                f"The per-layer lists of {owner} must have one entry per layer; received lists of "
                f"lengths {[len(v) for v in lists.values()]} ({', '.join(lists)})."
            )
        length = len(value)
        result.append([int(v) for v in value])
    return tuple(result)
