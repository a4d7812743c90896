"""Channel importance criteria: `(graph, group) -> one score per channel`.

Higher scores are kept. Weight-based criteria read the group's weights:

* `"l1"`, `"l2"`: norm of each output filter, summed over the group's
  producers (Li et al., "Pruning Filters for Efficient ConvNets", 2017).
  A hidden-size channel (a group of unit `"hidden"`: a transformer's
  residual stream) sums the norms of its slices of every matrix that reads
  or writes it (embeddings, LM head, q/k/v and FFN inputs, attention and FFN
  outputs); normalization scales are not counted.
* `"fpgm"`: distance of each filter to the others, a proxy for distance to
  the geometric median (He et al., 2019): filters close to all others are
  redundant.
* `"random"`: seeded random scores, the baseline.
* `"bn_scale"`: `|gamma|` of the BatchNormalization layers in the group
  (Network Slimming, Liu et al., 2017); pair it with
  `kprune.criteria.regularizers.BNScaleRegularizer` during training. Groups
  without BatchNormalization score `None` and are not pruned.

Data criteria run the model on batches you pass as `data`:

* `"taylor"`: first-order Taylor estimate of the loss change when a channel's
  whole group of weights is removed, `I = mean_batches (sum_w g_w * w)^2`
  over every weight slice of the channel (Molchanov et al., "Importance
  Estimation for Neural Network Pruning", 2019); needs targets and a loss.
* `"taylor_element"`: LLM-Pruner's element-wise first order, `sum |w * g|`
  over every weight of the unit with the gradients summed over the data.
* `"apoz"`: 1 - Average Percentage of Zeros of the activations that the
  group's consumers read (Hu et al., 2016): channels that are mostly 0 after
  ReLU go first.
* `"mean_activation"`: mean `|a|` of those activations (Molchanov et al., 2017).

Example (the L1 norm of each of a convolution's filters):

>>> import keras, numpy as np
>>> from kprune.dependency.channel_graph import ChannelGraph
>>> model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 1, use_bias=False, name="c"),
...                           keras.layers.Flatten(), keras.layers.Dense(2)])
>>> model.get_layer("c").set_weights([np.array([[[[1.0, -2.0, 0.5], [1.0, 2.0, 0.0]]]])])
>>> graph = ChannelGraph(model)
>>> CRITERIA["l1"](graph, graph.prunable_groups[0]).tolist()
[2.0, 4.0, 0.5]

A custom criterion is any callable `(graph, group) -> np.ndarray | None`.
Every criterion by name, this module's and the others', is in
`kprune.criteria.catalog`.
"""

import keras
import numpy as np

from kprune.dependency.unit_space import rows_of
from kprune.registry import keras_layers
from kprune.utils import backends


def _unit_rows(graph, group, usage, repeat):
    """Per unit of `group`: the rows of the usage's slices that are that unit
    (an index array), or None where the usage does not hold the unit."""
    return [rows_of(p, repeat) if p else None for p in graph.unit_positions(group, usage)]


def _rows_2d(variable, axis):
    """`variable` as a 2-D array `(size along axis, rest)`."""
    value = keras.ops.convert_to_numpy(variable.value if hasattr(variable, "value") else variable)
    value = np.moveaxis(value, axis, 0)
    return value.reshape(value.shape[0], -1)


def unit_values(graph, group, usage, variable, axis, repeat):
    """Per unit of `group`: the slice of `variable` (as a 2-D array
    `(unit_positions, rest)`), or None where the usage does not hold the unit."""
    value = _rows_2d(variable, axis)
    return [None if rows is None else value[rows] for rows in _unit_rows(graph, group, usage, repeat)]


def _filter_sources(group):
    """`(usage, variable, axis, repeat)` of each producer/depthwise kernel in
    the group; for attention heads, every query, key and value kernel and
    bias that computes the head; for a hidden-size group, every matrix
    slice (rank 2 or more) of every usage, read or written."""
    if group.unit == "hidden":
        for usage in group.usages:
            for variable, axis, repeat in usage.slices:
                if len(variable.shape) >= 2:
                    yield usage, variable, axis, repeat
        return
    for usage in group.usages:
        if usage.role == "out" and usage.kind == "head":
            for variable, axis, repeat in usage.slices:
                yield usage, variable, axis, repeat
            continue
        if usage.role != "out" or usage.kind not in ("producer", "grouped", "depthwise"):
            continue
        source = usage
        if usage.kind == "depthwise":
            # A depthwise kernel is read by input channel where it has an
            # input slice (DepthwiseConv2D), else by output channel.
            source = next(
                (u for u in group.usages if u.layer is usage.layer and u.role == "in"), usage
            )
        variable, axis, repeat = source.slices[0]
        yield source, variable, axis, repeat


def _filters(graph, group):
    """For each producer/depthwise kernel in the group: per-unit filter arrays."""
    for source, variable, axis, repeat in _filter_sources(group):
        yield unit_values(graph, group, source, variable, axis, repeat)


def _norm(p):
    def importance(graph, group):
        scores = np.zeros(len(group.units))
        found = False
        for source, variable, axis, repeat in _filter_sources(group):
            value = _rows_2d(variable, axis)
            # Per row: sum |w| (L1) or sum w^2 (L2), in float64.
            row = np.abs(value).sum(axis=1, dtype=np.float64) if p == 1 else np.einsum(
                "ij,ij->i", value, value, dtype=np.float64)
            # Per unit: the sum over its rows (a unit may span several positions).
            positions, unit_of = graph.unit_index(group, source)
            if positions.size:
                found = True
                total = np.bincount(np.repeat(unit_of, repeat), weights=row[rows_of(positions, repeat)],
                                    minlength=len(group.units))
                scores += total if p == 1 else np.sqrt(total)
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
        gamma = keras_layers.channel_scale(usage.layer) if usage.role == "out" else None
        if gamma is not None:
            found = True
            gamma = np.abs(keras.ops.convert_to_numpy(gamma))
            for k, positions in enumerate(graph.unit_positions(group, usage)):
                scores[k] += gamma[positions].sum() if positions else 0.0
    return scores if found else None


def random_scores(graph, group):
    """Seeded random scores (by the group's position and size): the baseline
    every criterion must beat."""
    return np.random.default_rng([group.index, len(group.units)]).random(len(group.units))


random_scores.__name__ = "random"

CRITERIA = {"l1": _norm(1), "l2": _norm(2), "fpgm": fpgm, "bn_scale": bn_scale, "random": random_scores}


def batches(data, with_targets, batch_size=64):
    """`(x, y)` batches from an array, a tuple `(x, y)`, a list or a dict of
    input arrays (cut into `batch_size` examples) or a `tf.data.Dataset` of
    batches."""
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        for element in data:
            if isinstance(element, (tuple, list)) and len(element) >= 2:
                yield element[0], element[1]
            else:
                yield element, None
        return
    x, y = data, None
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
    elif with_targets:
        raise ValueError(
            "Argument `data` must be `(inputs, targets)` for the Taylor criteria and 'hessian'. "
            f"Received: data of type {type(data).__name__}"
        )
    first = x[0] if isinstance(x, list) else next(iter(x.values())) if isinstance(x, dict) else x
    n = len(first)
    for start in range(0, n, batch_size):
        stop = start + batch_size
        if isinstance(x, dict):  # a KerasHub model's inputs, by name
            bx = {key: value[start:stop] for key, value in x.items()}
        else:
            bx = [a[start:stop] for a in x] if isinstance(x, list) else x[start:stop]
        yield bx, (None if y is None else y[start:stop])


class DataCriterion:
    """A criterion that measures the model on data; `bind(model)` before use."""

    needs_model = True

    def __init__(self, name, data, loss=None):
        if data is None:
            raise ValueError(
                f"Importance {name!r} measures the model on data: pass `data=` "
                f"({'(inputs, targets)' if name.startswith('taylor') else 'inputs'}). Received: data=None"
            )
        self.__name__ = name
        self.data = data
        self.loss = loss
        self.model = None
        self._cache = None  # (graph id, scores per group index)

    def bind(self, model):
        self.model = model
        self._cache = None
        return self

    def __call__(self, graph, group):
        if self._cache is None or self._cache[0] is not graph:
            self._cache = (graph, self._measure(graph))
        return self._cache[1].get(group.index)


class _ActivationCriterion(DataCriterion):
    def _measure(self, graph):
        tensors = graph.read_tensors
        if not tensors:
            return {}
        inputs = graph.function.inputs
        probe = keras.Model(inputs if len(inputs) > 1 else inputs[0], [t for t, _ in tensors])
        zeros = [0.0] * len(tensors)
        sums = [0.0] * len(tensors)
        count = [0] * len(tensors)
        for x, _ in batches(self.data, with_targets=False):
            outputs = probe(x, training=False)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            for k, out in enumerate(outputs):
                a = keras.ops.convert_to_numpy(out)
                a = a.reshape(-1, a.shape[-1])
                zeros[k] = zeros[k] + (a == 0).sum(axis=0)
                sums[k] = sums[k] + np.abs(a).sum(axis=0)
                count[k] += a.shape[0]
        if not count or not count[0]:
            raise ValueError("Argument `data` holds no examples.")
        scores = {}
        for group in graph.groups:
            total, found = np.zeros(len(group.units)), False
            for k, (_, ids) in enumerate(tensors):
                per_channel = (1.0 - zeros[k] / count[k]) if self.__name__ == "apoz" else sums[k] / count[k]
                for u, positions in enumerate(graph.unit_positions(group, ids)):
                    if positions:
                        found = True
                        total[u] += per_channel[positions].mean()
            if found:
                scores[group.index] = total
        return scores


def resolve_loss(model, loss, name):
    """`loss` (a Keras loss or its name), else the compiled model's loss."""
    loss = loss if loss is not None else getattr(model, "loss", None)
    if loss is None:
        raise ValueError(
            f"Importance {name!r} needs a loss: pass `loss=` (e.g. "
            "'sparse_categorical_crossentropy') or compile the model first."
        )
    return keras.losses.get(loss) if isinstance(loss, str) else loss


def check_targets(name, data):
    """Raise unless `data` is `(inputs, targets)` or a `tf.data.Dataset`."""
    import tensorflow as tf

    if not isinstance(data, tf.data.Dataset) and not (isinstance(data, tuple) and len(data) == 2):
        raise ValueError(
            f"Argument `data` must be `(inputs, targets)` for importance {name!r}. "
            f"Received: data of type {type(data).__name__}"
        )


class _TaylorCriterion(DataCriterion):
    def __init__(self, name, data, loss=None):
        super().__init__(name, data, loss)
        check_targets(name, data)

    def _measure(self, graph):
        model = self.model
        loss_fn = resolve_loss(model, self.loss, self.__name__)
        variables = [v for v in model.trainable_variables]
        index = {id(v): k for k, v in enumerate(variables)}
        groups = [g for g in graph.groups if g.blocked is None and g.producers]
        scores = {g.index: np.zeros(len(g.units)) for g in groups}
        count = 0
        for x, y in batches(self.data, with_targets=True):
            grads = backends.gradients(
                model, x, lambda outputs: keras.ops.mean(loss_fn(y, outputs)), variables  # noqa: B023 (called at once)
            )
            products = {}
            for group in groups:
                per_unit = np.zeros(len(group.units))
                for usage in group.usages:
                    for variable, axis, repeat in usage.slices:
                        k = index.get(id(variable))
                        if k is None or grads[k] is None:
                            continue
                        if k not in products:
                            products[k] = keras.ops.convert_to_numpy(grads[k] * variables[k].value)
                        rows = unit_values(graph, group, usage, products[k], axis, repeat)
                        for u, r in enumerate(rows):
                            if r is not None:
                                per_unit[u] += r.sum()
                scores[group.index] += per_unit**2
            count += 1
        if not count:
            raise ValueError("Argument `data` holds no examples.")
        return {i: s / count for i, s in scores.items()}


class _ElementTaylorCriterion(_TaylorCriterion):
    """LLM-Pruner's element-wise first-order Taylor importance (Ma et al.,
    "LLM-Pruner: On the Structural Pruning of Large Language Models", 2023;
    `hf_llama_pruner.TaylorImportance`, `taylor="param_first"`): the
    gradients of the loss summed over the calibration batches, then each
    unit's `sum |w * g|` over every weight slice that holds it (a head's
    query, key, value and output rows; an FFN unit's gate, up and down)."""

    def _measure(self, graph):
        model = self.model
        loss_fn = resolve_loss(model, self.loss, self.__name__)
        variables = list(model.trainable_variables)
        index = {id(v): k for k, v in enumerate(variables)}
        totals, count = [None] * len(variables), 0
        for x, y in batches(self.data, with_targets=True):
            grads = backends.gradients(model, x, lambda outputs, y=y: keras.ops.mean(loss_fn(y, outputs)), variables)
            for k, g in enumerate(grads):
                if g is not None:
                    g = keras.ops.convert_to_numpy(g)
                    totals[k] = g if totals[k] is None else totals[k] + g
            count += 1
        if not count:
            raise ValueError("Argument `data` holds no examples.")
        salience = {}
        scores = {}
        for group in graph.groups:
            if group.blocked or not group.producers:
                continue
            per_unit = np.zeros(len(group.units))
            for usage in group.usages:
                for variable, axis, repeat in usage.slices:
                    k = index.get(id(variable))
                    if k is None or totals[k] is None:
                        continue
                    if k not in salience:
                        salience[k] = np.abs(totals[k] * keras.ops.convert_to_numpy(variable.value))
                    for u, rows in enumerate(unit_values(graph, group, usage, salience[k], axis, repeat)):
                        if rows is not None:
                            per_unit[u] += rows.sum()
            scores[group.index] = per_unit
        return scores


DATA_CRITERIA = {"taylor": _TaylorCriterion, "taylor_element": _ElementTaylorCriterion,
                 "apoz": _ActivationCriterion, "mean_activation": _ActivationCriterion}
