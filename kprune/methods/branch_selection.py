"""Sparse Structure Selection: learn which residual blocks to drop.

Huang & Wang, "Data-Driven Sparse Structure Selection for Deep Neural
Networks", ECCV 2018. Each residual branch's output is multiplied by a scalar
`lambda_j` (a `BranchScale` layer, initialised to 1), and training adds an L1
penalty `gamma * sum_j |lambda_j|` by a proximal step: after the optimizer's
ordinary step on the loss, `StructureSparsity` applies the soft-threshold

    s_t = mu * s_{t-1} + lr * gamma
    lambda <- max(|lambda| - s_t, 0) * sign(lambda),  clipped at >= 0,

with `lr` the optimizer's current learning rate and `mu` its momentum. The
paper's accelerated proximal gradient (APG in NAG form) carries the
soft-threshold step in the momentum too, so that the shrinkage and the loss
gradient are amplified alike (by 1 / (1 - mu) once steady); the optimizer's
momentum already amplifies the loss gradient's step, and the accumulated
threshold `s_t` amplifies the shrinkage the same way. (Without it, SGD with
momentum 0.9 makes gamma 10 times weaker than it reads: in the selection
benchmark no block reached 0 at gamma = 1.) The threshold is exact, so factors reach exactly 0,
and `remove_branches` then replaces each such block by its shortcut: the
outputs equal those of the model with the zero factors, and whole residual
blocks disappear (depth pruning, which channel pruning cannot do). Surviving
factors are folded into the branch's last BatchNormalization, Conv or Dense
layer.

Which Add inputs are residual branches (`residual_branches`): a
`keras.layers.Add` of two tensors where either one input is an ancestor of the
other (an identity shortcut: the other input is the branch), or both come from
a nearest common ancestor tensor through two paths (a projection shortcut:
the path with more layers is the branch, the other the shortcut; equal
lengths are not residual blocks). The branch's intermediate tensors must not
be read outside it. `keras.ops.add` (`x + y`) nodes are not considered.

Example:

>>> import keras, numpy as np, kprune
>>> x = keras.Input((8, 8, 4))
>>> h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
>>> model = keras.Model(x, keras.layers.Add(name="add")([x, h]))
>>> [(b.add, b.layers) for b in kprune.residual_branches(model)]
[('add', ['conv'])]
>>> scaled = kprune.structure_selection(model)
>>> _ = scaled.get_layer("add_scale").scale.assign(0.0)
>>> small = kprune.remove_branches(scaled)
>>> [layer.name for layer in small.layers[1:]]
[]
"""

from typing import NamedTuple

import keras
import numpy as np

from kprune._internal import functional
from kprune.sparsity.prune import clone_with, copy_layer


@keras.saving.register_keras_serializable(package="kprune")
class BranchScale(keras.layers.Layer):
    """`y = lambda * x`, one scalar `lambda` (the `scale` weight, initialised to 1).

    Example:

    >>> import numpy as np, kprune
    >>> layer = kprune.BranchScale()
    >>> float(layer(np.ones((1, 2), "float32"))[0, 0])
    1.0
    """

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones")

    def call(self, x):
        return x * keras.ops.cast(self.scale, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


class ResidualBranch(NamedTuple):
    """An `Add` layer, which of its inputs is the branch, and the branch's layer names."""

    add: str
    branch_index: int
    layers: list


def _producers(model):
    """`{id(tensor): node}` and `{id(tensor): [consuming nodes]}` of the top-level
    graph (a model output is consumed by `None`)."""
    made, used = {}, {}
    for node in functional.nodes(model):
        for t in node.outputs:
            made[id(t)] = node
        for t in node.input_tensors:
            used.setdefault(id(t), []).append(node)
    for t in functional.function_of(model).outputs:
        used.setdefault(id(t), []).append(None)  # read outside the graph
    return made, used


def _ancestors(tensor, made):
    """Ids of `tensor` and every tensor it is computed from."""
    seen, stack = set(), [tensor]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        node = made.get(id(t))
        if node is not None:
            stack.extend(node.input_tensors)
    return seen


def _path_nodes(end, start_ids, made):
    """Nodes computing `end` from tensors in `start_ids` (exclusive)."""
    nodes, stack, seen = [], [end], set()
    while stack:
        t = stack.pop()
        if id(t) in start_ids or id(t) in seen:
            continue
        seen.add(id(t))
        node = made.get(id(t))
        if node is None:
            return None  # reaches a model input outside the block
        nodes.append(node)
        stack.extend(node.input_tensors)
    return nodes


def residual_branches(model):
    """The residual branches of a Functional model, as `ResidualBranch`es (see the module doc)."""
    made, used = _producers(model)
    result = []
    for node in functional.nodes(model):
        if not isinstance(node.operation, keras.layers.Add) or len(node.input_tensors) != 2:
            continue
        a, b = node.input_tensors
        anc = [_ancestors(a, made), _ancestors(b, made)]
        if id(a) in anc[1]:
            branch, source_ids = 1, anc[0]
        elif id(b) in anc[0]:
            branch, source_ids = 0, anc[1]
        else:
            common = anc[0] & anc[1]
            if not common:
                continue
            paths = [_path_nodes(t, common, made) for t in (a, b)]
            if None in paths or len(paths[0]) == len(paths[1]):
                continue
            branch = int(len(paths[1]) > len(paths[0]))
            source_ids = common
        path = _path_nodes(node.input_tensors[branch], source_ids, made)
        if not path:
            continue
        inside = {id(n) for n in path}
        end = id(node.input_tensors[branch])
        private = all(
            all(id(c) in inside for c in used.get(id(t), []))
            for n in path for t in n.outputs if id(t) != end
        )
        if private and all(functional.is_layer(n.operation) for n in path):
            names = [n.operation.name for n in sorted(path, key=lambda n: _order(model).index(id(n)))]
            result.append(ResidualBranch(node.operation.name, branch, names))
    return result


def _order(model):
    return [id(n) for n in functional.nodes(model)]


def structure_selection(model, branches=None):
    """A copy of `model` with a `BranchScale` on every residual branch.

    Args:
        model: a Functional model with residual blocks.
        branches: the `ResidualBranch`es to scale. Defaults to all of
            `residual_branches(model)`.

    Returns:
        A new model (fresh variables); the scale of the branch added by Add
        `name` is layer `f"{name}_scale"`. Train it with
        `callbacks=[kprune.StructureSparsity(gamma)]`, then call
        `kprune.remove_branches`.
    """
    branches = residual_branches(model) if branches is None else list(branches)
    if not branches:
        raise ValueError(
            f"Model '{model.name}' has no residual branch (an Add of a tensor and a path of "
            "layers from it, see kprune.residual_branches)."
        )
    clone = clone_with(model, lambda old: (copy_layer(old),) * 2, lambda old: old.get_weights())
    which = {b.add: b.branch_index for b in branches}

    def call(node, args, kwargs):
        layer = node.operation
        if layer.name in which:
            inputs = list(args[0])
            k = which[layer.name]
            inputs[k] = BranchScale(name=f"{layer.name}_scale")(inputs[k])
            return layer(inputs, **kwargs)
        return layer(*args, **kwargs)

    return functional.rebuild(clone, call)


def _fold(layer, factor):
    """Multiply the outputs of a BatchNormalization/Conv/Dense layer by `factor`."""
    if isinstance(layer, keras.layers.BatchNormalization) and layer.scale and layer.center:
        layer.gamma.assign(layer.gamma * factor)
        layer.beta.assign(layer.beta * factor)
        return True
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense)):
        if layer.activation not in (None, keras.activations.linear):
            return False
        layer.kernel.assign(layer.kernel * factor)
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(layer.bias * factor)
        return True
    return False


def remove_branches(model, threshold=0.0):
    """Replace each residual block whose `BranchScale` is <= `threshold` (in
    absolute value) by its shortcut, and fold the other scales into the layer
    before them.

    Args:
        model: a model from `structure_selection` (trained).
        threshold: factors at most this large count as 0. Defaults to 0 (the
            proximal step makes exact zeros).

    Returns:
        A new plain model (fresh variables) whose outputs equal `model`'s with
        the removed factors set to 0 (and, for `threshold=0`, `model`'s).
    """
    clone = clone_with(model, lambda old: (copy_layer(old),) * 2, lambda old: old.get_weights())
    made, used = _producers(clone)

    def call(node, args, kwargs):
        layer = node.operation
        if isinstance(layer, keras.layers.Add) and len(node.input_tensors) == 2:
            for k, t in enumerate(node.input_tensors):
                source = made.get(id(t))
                if source is not None and isinstance(source.operation, BranchScale):
                    if abs(float(keras.ops.convert_to_numpy(source.operation.scale))) <= threshold:
                        return args[0][1 - k]
        if isinstance(layer, BranchScale):
            factor = float(keras.ops.convert_to_numpy(layer.scale))
            before = made.get(id(node.input_tensors[0]))
            alone = before is not None and len(used.get(id(node.input_tensors[0]), [])) == 1
            if abs(factor) <= threshold:
                return args[0]  # unused: the Add returns its shortcut
            if alone and functional.is_layer(before.operation) and _fold(before.operation, factor):
                return args[0]
        return layer(*args, **kwargs)

    # Folding changes the weights before the rebuilt graph is called, so the
    # BranchScale's input (already computed symbolically) carries the factor.
    return functional.rebuild(clone, call)


def branch_scales(model):
    """`{add_name: lambda}` of a `structure_selection` model."""
    return {
        layer.name[: -len("_scale")]: float(keras.ops.convert_to_numpy(layer.scale))
        for layer in model.layers if isinstance(layer, BranchScale)
    }


class StructureSparsity(keras.callbacks.Callback):
    """The L1 proximal step on every `BranchScale` after each training batch.

    `s <- momentum * s + lr * gamma`, then `lambda <- max(lambda - s, 0)`
    after clipping at 0 (the reference implementation keeps factors
    non-negative). With `momentum = 0` this is proximal SGD; with the
    optimizer's momentum it matches the accelerated proximal gradient of the
    paper (Huang & Wang, ECCV 2018), where the momentum carries the
    soft-threshold step as well as the gradient step (see the module doc).

    Args:
        gamma: the L1 strength (>= 0). Defaults to 0.01 (the paper's ResNet-50
            value, for 100 epochs from scratch; short fine-tunes need more).
        momentum: momentum of the threshold, in [0, 1). Defaults to None: the
            optimizer's `momentum` (SGD), or 0 for optimizers without one.

    Example:

    >>> import kprune
    >>> callback = kprune.StructureSparsity(gamma=0.01)
    """

    def __init__(self, gamma=0.01, momentum=None):
        super().__init__()
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or gamma < 0:
            raise ValueError(f"Argument `gamma` must be a number >= 0. Received: gamma={gamma!r}")
        if momentum is not None and (
            isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1
        ):
            raise ValueError(
                f"Argument `momentum` must be None or a number in [0, 1). Received: momentum={momentum!r}"
            )
        self.gamma = float(gamma)
        self.momentum = None if momentum is None else float(momentum)
        self.threshold = 0.0
        self._scales = None

    def on_train_begin(self, logs=None):
        self._scales = [layer for layer in functional.sublayers(self.model) if isinstance(layer, BranchScale)]
        if not self._scales:
            raise ValueError(
                f"Model '{self.model.name}' has no BranchScale layer: build it with "
                "kprune.structure_selection(model) first."
            )
        self.threshold = 0.0

    def _momentum(self):
        if self.momentum is not None:
            return self.momentum
        value = getattr(self.model.optimizer, "momentum", None)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0

    def on_train_batch_end(self, batch, logs=None):
        optimizer = self.model.optimizer
        lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        self.threshold = self._momentum() * self.threshold + lr * self.gamma
        for layer in self._scales:
            value = keras.ops.convert_to_numpy(layer.scale)
            layer.scale.assign(np.maximum(np.maximum(value, 0.0) - self.threshold, 0.0).astype(value.dtype))
