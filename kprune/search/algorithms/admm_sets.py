"""The constraint sets of ADMM pruning and the projections onto them.

A *block* is one constraint set `S`: at most `keep` non-zero entries of a
variable (unstructured), or at most `keep` non-zero channels of a channel
group (every trainable weight slice that writes the group's channels:
kernels, biases, BatchNormalization's gamma and beta). `Proj_S(X)` keeps the
`keep` entries of largest magnitude, or the `keep` channels whose producers'
filters (kernel and bias slices) have the largest L2 norm, and zeroes the
rest. Written in `keras.ops`; `kprune.admm` drives them.

Example:

>>> import keras, numpy as np
>>> keras.ops.convert_to_numpy(project_weights(np.array([3.0, -1.0, 2.0]), 2)).tolist()
[3.0, 0.0, 2.0]
"""

import keras
import numpy as np

from kprune._internal import functional
from kprune.dependency.unit_space import rows_of
from kprune.registry.queries import prunable_weights
from kprune.utils.validation import check_sparsity

ops = keras.ops


# ------------------------------------------------------------ pure math (keras.ops)


def project_weights(x, keep):
    """`x` with all but its `keep` entries of largest magnitude set to 0.

    >>> keras.ops.convert_to_numpy(project_weights(np.array([[0.5, -3.0], [2.0, 0.1]]), 2)).tolist()
    [[0.0, -3.0], [2.0, 0.0]]
    """
    x = ops.convert_to_tensor(x)
    n = int(np.prod(x.shape))
    if keep >= n:
        return x
    if keep <= 0:
        return ops.zeros_like(x)
    _, index = ops.top_k(ops.reshape(ops.abs(x), (-1,)), keep, sorted=False)
    mask = ops.scatter(ops.expand_dims(index, -1), ops.ones((keep,), x.dtype), (n,))
    return ops.where(ops.reshape(mask, x.shape) > 0, x, ops.zeros_like(x))


def channel_keep_mask(scores, keep, blocks=1):
    """A 0/1 vector keeping the `keep` highest `scores`: `keep / blocks` in
    each of `blocks` equal blocks (query heads, the same number from every
    key/value group).

    >>> keras.ops.convert_to_numpy(channel_keep_mask(np.array([0.3, 0.9, 0.1, 0.5]), 2)).tolist()
    [0.0, 1.0, 0.0, 1.0]
    >>> keras.ops.convert_to_numpy(channel_keep_mask(np.array([0.3, 0.9, 0.1, 0.5]), 2, blocks=2)).tolist()
    [0.0, 1.0, 0.0, 1.0]
    >>> keras.ops.convert_to_numpy(channel_keep_mask(np.array([0.3, 0.9, 0.6, 0.5]), 2, blocks=2)).tolist()
    [0.0, 1.0, 1.0, 0.0]
    """
    scores = ops.convert_to_tensor(scores)
    n = int(scores.shape[0])
    if blocks > 1:
        size = n // blocks
        return ops.concatenate([channel_keep_mask(scores[b * size:(b + 1) * size], keep // blocks)
                                for b in range(blocks)])
    if keep >= n:
        return ops.ones((n,), scores.dtype)
    _, index = ops.top_k(scores, keep, sorted=False)
    return ops.scatter(ops.expand_dims(index, -1), ops.ones((keep,), scores.dtype), (n,))


def row_sum_squares(x, axis):
    """Per index along `axis`, the sum of squares of the slice."""
    axis = axis % len(x.shape)
    return ops.sum(ops.square(x), axis=[a for a in range(len(x.shape)) if a != axis])


# ------------------------------------------------------------------- targets


class Block:
    """One constraint set: `keep` weights of a variable, or `keep` channels of a group.

    `slices` holds `(variable, axis, unit_of_row, scored)`: for each index along
    `axis`, the channel it belongs to (-1 for none); `scored` marks the slices
    whose norms rank the channels (the producers' kernels and biases);
    `blocks` equal blocks of channels keep `keep / blocks` each (query heads).
    """

    def __init__(self, name, keep, variable=None, slices=(), channels=0, blocks=1):
        self.name, self.keep, self.variable = name, int(keep), variable
        self.slices, self.channels, self.blocks = list(slices), int(channels), int(blocks)

    def variables(self):
        return [self.variable] if self.variable is not None else [s[0] for s in self.slices]


def weight_blocks(model, sparsity):
    """Unstructured blocks: the prunable weights of the layers `sparsity` names."""
    layers = {layer.name: layer for layer in functional.sublayers(model)}
    if isinstance(sparsity, dict):
        unknown = sorted(set(sparsity) - set(layers))
        if unknown:
            raise ValueError(f"Argument `sparsity` names no layer of the model: {unknown}. Received: {sparsity!r}")
        chosen = sparsity
    else:
        chosen = {name: sparsity for name, layer in layers.items() if prunable_weights(layer)}
    blocks = []
    for name, value in chosen.items():
        value = check_sparsity(f"sparsity['{name}']", value)
        for pw in prunable_weights(layers[name]):
            size = int(np.prod(pw.variable.shape))
            blocks.append(Block(pw.variable.path, int(round((1.0 - value) * size)), variable=pw.variable))
    if not blocks:
        raise ValueError(f"Argument `sparsity` selects no prunable weight. Received: sparsity={sparsity!r}")
    return blocks


def channel_blocks(space, widths):
    """Channel blocks: group `name` keeps `widths[name]` channels."""
    unknown = sorted(set(widths) - set(space.names))
    if unknown:
        raise ValueError(
            f"Argument `widths` names no prunable channel group: {unknown} (groups are named by their "
            f"first producer: {space.names}). Received: widths={widths!r}"
        )
    blocks = []
    for k, name in enumerate(space.names):
        if name not in widths:
            continue
        n = int(space.channels[k])
        width = widths[name]
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or not 1 <= width <= n:
            raise ValueError(f"Argument `widths['{name}']` must be an int in [1, {n}]. Received: {width!r}")
        group = space.groups[k]
        slices = []
        for usage in group.usages:
            if usage.role != "out":
                continue
            positions = space.graph.unit_positions(group, usage)
            for variable, axis, repeat in usage.slices:
                if not variable.trainable:
                    continue
                axis = axis % len(variable.shape)
                unit_of_row = np.full(variable.shape[axis], -1, dtype=np.int64)
                for unit, where in enumerate(positions):
                    unit_of_row[rows_of(where, repeat)] = unit
                slices.append((variable, axis, unit_of_row, usage.kind != "pass"))
        blocks.append(Block(name, width, slices=slices, channels=n, blocks=group.blocks))
    return blocks


def channel_scores(block, values):
    """Per channel of a channel block, the L2 norm of its producers' slices
    (kernels and biases) in `values = {id(variable): value}`."""
    scores = None
    for variable, axis, unit_of_row, scored in block.slices:
        if not scored:
            continue
        rows = row_sum_squares(values[id(variable)], axis)
        ids = np.where(unit_of_row < 0, block.channels, unit_of_row)
        part = ops.segment_sum(rows, ids, num_segments=block.channels + 1)[: block.channels]
        scores = part if scores is None else scores + part
    return ops.sqrt(scores)


def project_block(block, values):
    """`Proj_S` of one block: `{id(variable): projected value}` for
    `values = {id(variable): W + U}`."""
    if block.variable is not None:
        return {id(block.variable): project_weights(values[id(block.variable)], block.keep)}
    scores = channel_scores(block, values)
    keep = ops.concatenate([channel_keep_mask(scores, block.keep, block.blocks), ops.ones((1,), scores.dtype)])
    out = {}
    for variable, axis, unit_of_row, _ in block.slices:
        value = out.get(id(variable), values[id(variable)])
        mask = ops.take(keep, np.where(unit_of_row < 0, block.channels, unit_of_row))
        shape = [-1 if a == axis else 1 for a in range(len(variable.shape))]
        out[id(variable)] = value * ops.reshape(ops.cast(mask, value.dtype), shape)
    return out


def project(blocks, values):
    """`Proj_S` of every block (variables outside all blocks are left out)."""
    out = {}
    for block in blocks:
        for key, value in project_block(block, {**values, **out}).items():
            out[key] = value
    return out
