"""Channel importance criteria: `(graph, group) -> one score per channel`.

Higher scores are kept. Weight-based criteria read the group's weights:

* `"l1"`, `"l2"`: norm of each output filter, summed over the group's
  producers (Li et al., "Pruning Filters for Efficient ConvNets", 2017).
* `"fpgm"`: distance of each filter to the others, a proxy for distance to
  the geometric median (He et al., 2019): filters close to all others are
  redundant.
* `"bn_scale"`: `|gamma|` of the BatchNormalization layers in the group
  (Network Slimming, Liu et al., 2017); pair it with `BNScaleRegularizer`
  during training. Groups without BatchNormalization score `None` and are not
  pruned.

A custom criterion is any callable `(graph, group) -> np.ndarray | None`.
"""

import keras
import numpy as np

from kprune import handlers


def _unit_values(graph, group, usage, variable, axis, repeat):
    """Per unit of `group`: the slice of `variable` (as a 2-D array
    `(unit_positions, rest)`), or None where the usage does not hold the unit."""
    value = keras.ops.convert_to_numpy(variable.value if hasattr(variable, "value") else variable)
    value = np.moveaxis(value, axis, 0)
    result = []
    for positions in graph.unit_positions(group, usage):
        if not positions:
            result.append(None)
            continue
        rows = np.concatenate([np.arange(p * repeat, p * repeat + repeat) for p in positions])
        result.append(value[rows].reshape(len(rows), -1))
    return result


def _filters(graph, group):
    """For each producer/depthwise kernel in the group: per-unit filter arrays."""
    for usage in group.usages:
        if usage.role != "out":
            continue
        spec = handlers.channel_spec(usage.layer)
        if spec.kind not in ("producer", "grouped", "depthwise"):
            continue
        if spec.kind == "depthwise":
            variable, axis, repeat = spec.in_slices[0]
            in_usage = next(
                (u for u in group.usages if u.layer is usage.layer and u.role == "in"), None
            )
            if in_usage is None:
                continue
            yield _unit_values(graph, group, in_usage, variable, axis, repeat)
        else:
            variable, axis, repeat = usage.slices[0]
            yield _unit_values(graph, group, usage, variable, axis, repeat)


def _norm(p):
    def importance(graph, group):
        scores = np.zeros(len(group.units))
        found = False
        for per_unit in _filters(graph, group):
            for k, rows in enumerate(per_unit):
                if rows is not None:
                    found = True
                    scores[k] += np.abs(rows).sum() if p == 1 else np.sqrt((rows**2).sum())
        return scores if found else None

    importance.__name__ = f"l{p}"
    return importance


def fpgm(graph, group):
    scores = np.zeros(len(group.units))
    found = False
    for per_unit in _filters(graph, group):
        present = [k for k, rows in enumerate(per_unit) if rows is not None]
        if len(present) < 2:
            continue
        found = True
        flat = np.stack([per_unit[k].ravel() for k in present])
        sq = (flat**2).sum(axis=1)
        dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * flat @ flat.T, 0.0))
        scores[present] += dist.sum(axis=1)
    return scores if found else None


def bn_scale(graph, group):
    scores = np.zeros(len(group.units))
    found = False
    for usage in group.usages:
        gamma = handlers.channel_scale(usage.layer) if usage.role == "out" else None
        if gamma is not None:
            found = True
            gamma = np.abs(keras.ops.convert_to_numpy(gamma))
            for k, positions in enumerate(graph.unit_positions(group, usage)):
                scores[k] += gamma[positions].sum() if positions else 0.0
    return scores if found else None


CRITERIA = {"l1": _norm(1), "l2": _norm(2), "fpgm": fpgm, "bn_scale": bn_scale}


def get(importance):
    """Resolve a criterion name or callable."""
    if callable(importance):
        return importance
    if importance not in CRITERIA:
        raise ValueError(
            f"Argument `importance` must be one of {sorted(CRITERIA)} or a callable "
            f"`(graph, group) -> scores`. Received: importance={importance!r}"
        )
    return CRITERIA[importance]


@keras.saving.register_keras_serializable(package="kprune")
class BNScaleRegularizer(keras.regularizers.Regularizer):
    """L1 penalty on BatchNormalization `gamma` (Network Slimming's sparsity training).

    `loss = strength * sum(|gamma|)`; use it as `gamma_regularizer` of the
    BatchNormalization layers, then prune with `importance="bn_scale"`.

    Args:
        strength: the L1 coefficient (>= 0). Defaults to 1e-4.

    Example:

    >>> import keras, kprune
    >>> bn = keras.layers.BatchNormalization(gamma_regularizer=kprune.BNScaleRegularizer(1e-4))
    """

    def __init__(self, strength=1e-4):
        if not isinstance(strength, (int, float)) or isinstance(strength, bool) or strength < 0:
            raise ValueError(f"Argument `strength` must be a number >= 0. Received: strength={strength!r}")
        self.strength = float(strength)

    def __call__(self, x):
        return self.strength * keras.ops.sum(keras.ops.abs(x))

    def get_config(self):
        return {"strength": self.strength}
