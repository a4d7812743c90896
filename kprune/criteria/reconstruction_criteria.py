"""The reconstruction criteria `importance="thinet"` and `importance="lasso"`.

Both score a channel group by what its channels contribute to the outputs of
every layer that reads them (its *consumers*: the Conv/Dense layers with an
"in" usage in the group), measured on data:

1. `kprune.criteria.sampling.sample_patches` cuts each consumer's input patches at
   random output positions; for every sampled position a few random output
   filters `f` give rows `x[n, c] = sum_k P[n, k, c] W[k, c, f]`, channel c's
   share of output `y_n = sum_c x[n, c]` (bias left out).
2. Columns that are one unit of the group (the positions of a Flatten, both
   branches of a residual Add ...) are summed; each consumer's rows are divided
   by the root-mean-square of its full output `y`, so that the error summed
   over consumers weighs each consumer alike.
3. ThiNet (`kprune.criteria.least_squares.thinet_order`) removes channels greedily by the
   least added squared error; LASSO (`kprune.criteria.least_squares.lasso_order`) keeps the
   channels that enter the LASSO path first.

Scores follow the criterion contract `(graph, group) -> scores` (higher is
kept): ThiNet's score is the step at which the greedy search would remove
the channel, LASSO's the `alpha` at which it enters the path. For any target
count, the lowest scores are the removal set of the paper's procedure (for
LASSO: when no coefficient leaves the path, the usual case). Pair them with
`kprune.reconstruct` (or use `kprune.prune_and_reconstruct`), which refits
the consumers by least squares.

Cost: one forward pass over at most `max_images` images per chunk of
consumer layers whose patches fit in `memory_mb` (default 512 MB);
ThiNet is O(N C^2) and LASSO (LARS on the Gram matrix) O(N C^2 + C^3) per
group, N = sampled rows (<= `max_images * positions_per_image *
filters_per_position` per consumer).

Example:

>>> import keras, numpy as np, kprune
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...     keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
...     keras.layers.Conv2D(4, 3, name="next"), keras.layers.GlobalAveragePooling2D()])
>>> x = np.random.default_rng(0).random((16, 8, 8, 3), dtype=np.float32)
>>> plan = kprune.plan_channels(model, 0.5, importance="thinet", data=x, round_to=1)
>>> plan.num_pruned
4
"""

import numpy as np

from kprune._internal import functional
from kprune.criteria import least_squares as selection
from kprune.criteria import sampling
from kprune.criteria.importance import DataCriterion
from kprune.registry import keras_layers


def consumers(graph, group):
    """The usages of `group` by layers that read its channels and that
    `kprune.criteria.sampling.supports` (Conv/Dense), in the top-level model."""
    top = {id(n.operation) for n in functional.nodes(graph.model)}
    result = []
    for usage in group.usages:
        layer = usage.layer
        if usage.role != "in" or keras_layers.channel_spec(layer).kind != "producer":
            continue
        if sampling.supports(layer) and id(layer) in top:
            result.append(usage)
    return result


def layer_contributions(patches, kernel, filters_per_position, rng):
    """`(n * filters_per_position, C)` rows `x[r, c] = sum_k P[n, k, c] W[k, c, f_r]`
    for random filters `f_r`, and the full outputs `y = x.sum(1)`.

    Args:
        patches: `(n, K, C)` input patches.
        kernel: `(K, C, F)` kernel (`kprune.criteria.sampling.kernel_matrix`).
        filters_per_position: random filters per patch (all F if larger).
        rng: a `numpy.random.Generator`.
    """
    n, F = patches.shape[0], kernel.shape[-1]
    if filters_per_position >= F:
        x = np.einsum("nkc,kcf->nfc", patches, kernel).reshape(-1, patches.shape[2])
    else:
        f = rng.integers(0, F, size=(n, filters_per_position))
        picked = np.moveaxis(kernel[:, :, f], 2, 0)  # (n, K, C, m)
        x = np.einsum("nkc,nkcm->nmc", patches, picked).reshape(-1, patches.shape[2])
    return x.astype(np.float64), x.sum(axis=1, dtype=np.float64)


class ReconstructionCriterion(DataCriterion):
    """Shared driver of `"thinet"` and `"lasso"`: samples the consumers of
    every prunable group and hands each group's contribution matrix to `rank`."""

    def __init__(self, name, data, loss=None, max_images=256, positions_per_image=8,
                 filters_per_position=4, memory_mb=512, seed=0):
        super().__init__(name, data, loss)
        self.max_images = max_images
        self.positions_per_image = positions_per_image
        self.filters_per_position = filters_per_position
        self.memory_mb = memory_mb
        self.seed = seed

    def group_matrix(self, graph, group, contributions):
        """The group's `(rows, units)` contribution matrix over all its consumers."""
        blocks = []
        for usage in consumers(graph, group):
            if usage.layer.name not in contributions:
                continue
            x, y = contributions[usage.layer.name]
            scale = np.sqrt(np.mean(y**2)) + 1e-12
            units = np.zeros((x.shape[0], len(group.units)))
            for u, positions in enumerate(graph.unit_positions(group, usage)):
                if positions:
                    units[:, u] = x[:, positions].sum(axis=1)
            blocks.append(units / scale)
        return np.concatenate(blocks) if blocks else None

    def _measure(self, graph):
        groups = [g for g in graph.groups if g.blocked is None and g.producers]
        layers, seen = [], set()
        for group in groups:
            for usage in consumers(graph, group):
                if id(usage.layer) not in seen:
                    seen.add(id(usage.layer))
                    layers.append(usage.layer)
        rows = self.max_images * self.positions_per_image
        rng = np.random.default_rng(self.seed)
        contributions = {}
        for chunk in sampling.chunks(layers, rows, self.memory_mb * 2**20):
            patches, _ = sampling.sample_patches(
                graph.model, chunk, self.data, self.positions_per_image, self.max_images, seed=self.seed
            )
            for layer in chunk:
                kernel = sampling.kernel_matrix(layer)
                contributions[layer.name] = layer_contributions(
                    patches.pop(layer.name), kernel, self.filters_per_position, rng
                )
        scores = {}
        for group in groups:
            matrix = self.group_matrix(graph, group, contributions)
            if matrix is not None and matrix.shape[1] > 1:
                scores[group.index] = self.rank(matrix)
        return scores

    def rank(self, matrix):
        raise NotImplementedError


class ThiNetCriterion(ReconstructionCriterion):
    """`importance="thinet"`: greedy removal order (Luo et al., ICCV 2017)."""

    def rank(self, matrix):
        order = selection.thinet_order(matrix)
        scores = np.empty(matrix.shape[1])
        scores[order] = np.arange(matrix.shape[1], dtype=np.float64)
        return scores


class LassoCriterion(ReconstructionCriterion):
    """`importance="lasso"`: LASSO path order (He, Zhang, Sun, ICCV 2017)."""

    def rank(self, matrix):
        return selection.lasso_order(matrix, matrix.sum(axis=1))


RECONSTRUCTION_CRITERIA = {"thinet": ThiNetCriterion, "lasso": LassoCriterion}
