"""Evaluating search candidates: a masked working copy, built-in accuracy and fine-tuning.

A search evaluates hundreds of candidate plans. Cloning and removing channels
for each would rebuild (and retrace) a model every time; instead
`MaskedCopy` clones the model once and, per candidate, assigns the original
(or given) weights with the candidate's channels zeroed -- every weight slice
that reads or writes a pruned channel, as `kprune.mask_channels` does, so the
copy computes what the pruned model computes. Short fine-tuning keeps the
masks after every batch (`keep_masks()`), which trains the kept weights
exactly as the physically smaller model would train them.

`accuracy(x, y)` is the built-in metric: `evaluate(model) -> top-1 accuracy`
(over every position of a sequence model's output: a causal LM's token
accuracy); `negative_loss(x, y, loss)` is `evaluate(model) -> -loss`, a
smoother score for small evaluation sets. Both take a dict of inputs (a
KerasHub model's `token_ids` and `padding_mask`).

Example:

>>> import keras, numpy as np
>>> from kprune.search.space import SearchSpace
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...     keras.layers.Conv2D(16, 3, name="c1"), keras.layers.ReLU(),
...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4, name="head")])
>>> space = SearchSpace(model)
>>> copy = MaskedCopy(space)
>>> pruned = copy.apply(space.plan([8]))
>>> int(np.sum(np.any(pruned.get_layer("c1").kernel.numpy() != 0, axis=(0, 1, 2))))
8
"""

import keras
import numpy as np

from kprune.channels.oneshot import masked_copy
from kprune.dependency.channel_graph import ChannelGraph
from kprune.dependency.channel_plan import ChannelPlan


def take(x, index):
    """Rows `index` of an array, or of every array of a dict or tuple of inputs."""
    if isinstance(x, dict):
        return {k: np.asarray(v)[index] for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(np.asarray(v)[index] for v in x)
    return np.asarray(x)[index]


def _inputs(x):
    if isinstance(x, dict):
        return {k: np.asarray(v) for k, v in x.items()}
    return tuple(np.asarray(v) for v in x) if isinstance(x, (tuple, list)) else np.asarray(x)


def _rows(x):
    first = next(iter(x.values())) if isinstance(x, dict) else x[0] if isinstance(x, (tuple, list)) else x
    return len(first)


def accuracy(x, y, batch_size=256):
    """`evaluate(model) -> float`: top-1 accuracy of `model` on `(x, y)` (integer labels).

    `x` is an array, a tuple of arrays or a dict of them by input name; `y`
    holds one label per output position (`(n,)` for a classifier, `(n,
    length)` for a sequence model: a causal LM's next tokens), and the
    accuracy is over all of them.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
    >>> model.set_weights([np.eye(2)])
    >>> accuracy(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0]))(model)
    0.5
    """
    x = _inputs(x)
    y = np.asarray(y).reshape(-1)

    def evaluate(model):
        logits = model.predict(x, batch_size=batch_size, verbose=0)
        predicted = np.argmax(logits, axis=-1).reshape(-1)
        if predicted.shape != y.shape:
            raise ValueError(f"Argument `y` must hold one label per output position of the model: "
                             f"{predicted.size} for outputs of shape {tuple(np.shape(logits))}. Received: "
                             f"{y.size} labels.")
        return float(np.mean(predicted == y))

    evaluate.__name__ = "accuracy"
    return evaluate


def negative_loss(x, y, loss, batch_size=256):
    """`evaluate(model) -> float`: minus the mean `loss` of `model` on `(x, y)`
    (higher is better, as a search wants).

    Args:
        x: inputs (an array, a tuple of arrays or a dict by input name).
        y: targets.
        loss: a Keras loss or its name (a model that outputs logits needs
            e.g. `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`).
        batch_size: of the predictions. Defaults to 256.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    >>> model.set_weights([np.ones((2, 1))])
    >>> negative_loss(np.array([[1.0, 1.0]]), np.array([[1.0]]), "mse")(model)
    -1.0
    """
    x = _inputs(x)
    y = np.asarray(y)
    loss_fn = keras.losses.get(loss)

    def evaluate(model):
        predicted = model.predict(x, batch_size=batch_size, verbose=0)
        return -float(keras.ops.convert_to_numpy(keras.ops.mean(loss_fn(y, predicted))))

    evaluate.__name__ = "negative_loss"
    return evaluate


def data_evaluator(evaluate, data, argname="evaluate"):
    """`evaluate` itself, or `accuracy(*data)` when only `data=(x, y)` is given."""
    if evaluate is not None:
        if not callable(evaluate):
            raise ValueError(
                f"Argument `{argname}` must be a callable `evaluate(model) -> float` (higher is "
                f"better). Received: {argname}={evaluate!r}"
            )
        return evaluate
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError(
            f"Give `{argname}` (a callable `evaluate(model) -> float`) or `data=(x, y)` for the "
            f"built-in top-1 accuracy. Received: {argname}=None, data={type(data).__name__}"
        )
    return accuracy(*data)


class _KeepMasks(keras.callbacks.Callback):
    def __init__(self, pairs):
        super().__init__()
        self.pairs = pairs

    def on_train_batch_end(self, batch, logs=None):
        for variable, mask in self.pairs:
            variable.assign(keras.ops.multiply(variable.value, mask))


class MaskedCopy:
    """One clone of the search space's model whose weights are set per candidate.

    Args:
        space: a `kprune.search.space.SearchSpace`.

    Attributes:
        model: the clone (compiled on the first `fine_tune`).
        base: the weights `apply` starts from (a list of arrays, in
            `model.weights` order): the original ones until replaced.
    """

    def __init__(self, space):
        self.space = space
        self.model = masked_copy(space.model, ChannelPlan([]))
        self.graph = ChannelGraph(self.model, heads=space.heads)
        self.variables = list(self.model.weights)
        self.base = [keras.ops.convert_to_numpy(v.value) for v in self.variables]
        self._masks = {}
        self._optimizer_state = None

    def masks(self, plan):
        """`{id(variable): 0/1 array}` for the variables holding slices of the plan's channels."""
        pruned = plan.units(self.graph)
        return self.graph.keep_masks(pruned) if pruned else {}

    def apply(self, plan, weights=None):
        """Set the copy's weights to `weights` (default `self.base`) with the
        plan's channels zeroed; returns the copy."""
        values = self.base if weights is None else weights
        self._masks = self.masks(plan)
        for variable, value in zip(self.variables, values):
            mask = self._masks.get(id(variable))
            variable.assign(value * mask.astype(value.dtype) if mask is not None else value)
        return self.model

    def weights(self):
        """The copy's current weights (a list of arrays)."""
        return [keras.ops.convert_to_numpy(v.value) for v in self.variables]

    def keep_masks(self):
        """A Keras callback that re-applies the current masks after every batch
        (pass it to `fit` when fine-tuning the copy yourself)."""
        pairs = [(v, keras.ops.convert_to_tensor(self._masks[id(v)].astype(v.dtype)))
                 for v in self.model.trainable_variables if id(v) in self._masks]
        return _KeepMasks(pairs)

    def fine_tune(self, x, y, steps, batch_size=32, seed=0, learning_rate=1e-3, loss=None):
        """Train the masked copy for `steps` batches drawn (seeded) from `(x, y)`.

        The optimizer (Adam) starts from the same state every time, so every
        candidate gets the same fine-tuning budget and data order.
        """
        if self._optimizer_state is None:
            loss = loss or getattr(self.space.model, "loss", None)
            if loss is None:
                raise ValueError(
                    "Built-in fine-tuning needs a loss: compile the model or pass `loss=` "
                    "(e.g. keras.losses.SparseCategoricalCrossentropy(from_logits=True))."
                )
            self.model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
            self.model.optimizer.build(self.model.trainable_variables)
            self._optimizer_state = [keras.ops.convert_to_numpy(v.value) for v in self.model.optimizer.variables]
        for variable, value in zip(self.model.optimizer.variables, self._optimizer_state):
            variable.assign(value)
        index = np.random.default_rng(seed).integers(0, _rows(x), size=steps * batch_size)
        self.model.fit(take(x, index), np.asarray(y)[index], batch_size=batch_size, epochs=1,
                       shuffle=False, verbose=0, callbacks=[self.keep_masks()])
        return self.model
