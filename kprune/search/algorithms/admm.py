"""ADMM pruning (Zhang et al., ECCV 2018): train towards a sparse set, then cut.

Pruning is posed as `min_W f(W)` subject to `W_l in S_l` (at most `k_l`
non-zero weights, or `k_l` non-zero channels of a channel group) and split
with an auxiliary `Z = W` and a scaled dual `U`:

    W <- argmin_W f(W) + sum_l rho/2 ||W_l - Z_l + U_l||_F^2   (training epochs)
    Z <- Proj_S(W + U)                                          (every `admm_epochs`)
    U <- U + W - Z

`Proj_S` keeps the `k` entries of largest magnitude (unstructured) or the `k`
channels of a group whose producers' filters have the largest L2 norm, and
zeroes the rest (`kprune.search.algorithms.admm_sets`). The penalty is the
paper's squared norm (not NNI v2's square root), added to the loss as a
regularizer of each constrained variable, written in `keras.ops` so that it
runs inside `fit`'s compiled step on TensorFlow and JAX. `Z^0 = Proj(W^0)`,
`U^0 = 0` (the reference code). At the end, `hard_prune()` zeroes
`W` outside the support of `Proj(W)` and `keep_masks()` keeps it zero
during a masked fine-tune; for channel targets, `.plan` is the
`kprune.ChannelPlan` of the pruned channels (`kprune.remove_channels` makes
the model smaller).

With a small constant `rho` (1e-4, the paper's and NNI's) the weights are
only approximately sparse after the ADMM rounds: the masked fine-tune is not
optional. `history` logs `||W - Z||_F / ||W||_F` after every round.

Example:

>>> import keras, numpy as np
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="d"), keras.layers.Dense(2)])
>>> model.compile(optimizer="adam", loss="mse")
>>> x, y = np.random.default_rng(0).normal(size=(64, 4)), np.zeros((64, 2))
>>> callback = ADMM(model, sparsity={"d": 0.75}, rho=1e-2)
>>> _ = model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
>>> len(callback.history)
2
>>> masks = callback.hard_prune()
>>> int(np.count_nonzero(model.get_layer("d").kernel.numpy()))
8
"""

import keras
import numpy as np

from kprune.search.algorithms.admm_sets import channel_blocks, channel_keep_mask, channel_scores, project, weight_blocks
from kprune.search.space import SearchSpace
from kprune.sparsity.prune import collect_wrappers
from kprune.utils import backends

ops = keras.ops


# ------------------------------------------------------------ penalty (keras.ops)


def dual_update(u, w, z):
    """The scaled dual step `U + W - Z`."""
    return u + w - z


class ADMMPenalty(keras.regularizers.Regularizer):
    """`rho/2 ||W - Z + U||_F^2`, reading `Z` and `U` from non-trainable
    variables (assigned between ADMM rounds). Transient: ADMM installs it for
    its training and removes it after; it is not serialized."""

    def __init__(self, z, u, rho):
        self.z, self.u, self.rho = z, u, float(rho)

    def __call__(self, w):
        return 0.5 * self.rho * ops.sum(ops.square(w - self.z.value + self.u.value))

    def get_config(self):
        return {"rho": self.rho}


# ------------------------------------------------------------------ callback


class ADMM(keras.callbacks.Callback):
    """The ADMM rounds as a Keras callback: pass it to `fit`, then `hard_prune()`.

    Args:
        model: the model that will be trained (its variables get the penalty).
        sparsity: unstructured target: a fraction of the prunable weights to
            remove, for every prunable layer (a float) or per layer name (a dict).
        widths: channel target instead: `{group name: channels to keep}`, a
            group named by its first producer as in `kprune.SearchSpace`
            (`SearchResult.widths` is such a dict).
        rho: the penalty weight. Defaults to 1e-4 (the paper, NNI).
        admm_epochs: epochs between two `Z`/`U` updates. Defaults to 1.
        exclude: layers whose channel groups are never touched (channel target).
        heads: the unit of grouped-query attention for a channel target, as
            in `kprune.SearchSpace`: "kv" (default) or "query" (query heads,
            the same number kept in every key/value group).

    Attributes:
        history: per ADMM round, `{"round", "residual"}` with the relative
            primal residual `||W - Z|| / ||W||` over all constrained weights.
        plan: after `hard_prune()` with a channel target, the `ChannelPlan`.
    """

    def __init__(self, model, sparsity=None, widths=None, rho=1e-4, admm_epochs=1, exclude=(), heads="kv"):
        super().__init__()
        if (sparsity is None) == (widths is None):
            raise ValueError(
                "Give exactly one target: `sparsity` (unstructured) or `widths` (channels). "
                f"Received: sparsity={sparsity!r}, widths={widths!r}"
            )
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not rho > 0:
            raise ValueError(f"Argument `rho` must be a number > 0. Received: rho={rho!r}")
        if isinstance(admm_epochs, bool) or not isinstance(admm_epochs, int) or admm_epochs < 1:
            raise ValueError(f"Argument `admm_epochs` must be an int >= 1. Received: admm_epochs={admm_epochs!r}")
        if collect_wrappers(model):
            raise ValueError(
                f"Model '{model.name}' holds kprune pruning wrappers: ADMM trains a plain model. "
                "Call kprune.strip_pruning(model) first."
            )
        self.target_model, self.rho, self.admm_epochs = model, float(rho), admm_epochs
        self.space = None
        if widths is not None:
            self.space = SearchSpace(model, round_to=1, exclude=exclude, heads=heads)
            self.blocks = channel_blocks(self.space, dict(widths))
        else:
            self.blocks = weight_blocks(model, sparsity)
        self.variables = []
        for block in self.blocks:
            for variable in block.variables():
                if all(v is not variable for v in self.variables):
                    self.variables.append(variable)
        self.z = [keras.Variable(np.zeros(v.shape), dtype=v.dtype, trainable=False) for v in self.variables]
        self.u = [keras.Variable(np.zeros(v.shape), dtype=v.dtype, trainable=False) for v in self.variables]
        self.history, self.plan, self.masks = [], None, None
        self._epochs, self._started, self._saved = 0, False, None

    def _values(self):
        backends.sync(self.target_model)
        return [v.value for v in self.variables]

    def _project(self, values):
        projected = project(self.blocks, {id(v): x for v, x in zip(self.variables, values)})
        return [projected.get(id(v), x) for v, x in zip(self.variables, values)]

    def update(self):
        """One ADMM round: `Z <- Proj(W + U)`, `U <- U + W - Z`; logs the residual."""
        w = self._values()
        z = self._project([x + u.value for x, u in zip(w, self.u)])
        residual = 0.0
        for x, zi, z_var, u_var in zip(w, z, self.z, self.u):
            z_var.assign(zi)
            u_var.assign(dual_update(u_var.value, x, zi))
            residual += float(ops.convert_to_numpy(ops.sum(ops.square(x - zi))))
        norm = sum(float(ops.convert_to_numpy(ops.sum(ops.square(x)))) for x in w)
        self.history.append({"round": len(self.history) + 1, "residual": float(np.sqrt(residual / max(norm, 1e-30)))})
        self._retrace()

    def _retrace(self):
        # JAX compiles Z and U into the step as constants: recompile after they change.
        if backends.name() == "jax" and getattr(self.target_model, "train_function", None) is not None:
            self.target_model.make_train_function(force=True)

    def on_train_begin(self, logs=None):
        if not self._started:  # Z^0 = Proj(W^0), U^0 = 0
            for z_var, zi in zip(self.z, self._project(self._values())):
                z_var.assign(zi)
            self._started = True
        self._saved = [v.regularizer for v in self.variables]
        for v, z, u in zip(self.variables, self.z, self.u):
            v.regularizer = ADMMPenalty(z, u, self.rho)
        self.target_model.make_train_function(force=True)

    def on_epoch_end(self, epoch, logs=None):
        self._epochs += 1
        if self._epochs % self.admm_epochs == 0:
            self.update()

    def on_train_end(self, logs=None):
        for v, regularizer in zip(self.variables, self._saved or []):
            v.regularizer = regularizer
        self.target_model.train_function = None  # the next fit traces without the penalty

    def hard_prune(self):
        """Zero the weights outside the support of `Proj(W)`; returns
        `{variable path: 0/1 array}` (and sets `.plan` for a channel target)."""
        w = self._values()
        z = self._project(w)
        self.masks = {}
        for v, zi in zip(self.variables, z):
            mask = ops.convert_to_numpy(zi) != 0
            if self.space is not None:  # whole channels, even where a weight is exactly 0
                mask = self._channel_mask(v)
            v.assign(ops.convert_to_numpy(v.value) * mask)
            self.masks[v.path] = mask.astype(np.float32)
        if self.space is not None:
            self.plan = self._make_plan(w)
        return self.masks

    def _channel_mask(self, variable):
        mask = np.ones(variable.shape, dtype=bool)
        for block in self.blocks:
            for v, axis, unit_of_row, _ in block.slices:
                if v is variable:
                    kept = np.ones(block.channels + 1, dtype=bool)
                    kept[: block.channels] = self._kept[block.name]
                    shape = [-1 if a == axis else 1 for a in range(len(v.shape))]
                    mask &= kept[np.where(unit_of_row < 0, block.channels, unit_of_row)].reshape(shape)
        return mask

    def _make_plan(self, w):
        names = {b.name: b for b in self.blocks}
        widths = [names[n].keep if n in names else int(c) for n, c in zip(self.space.names, self.space.channels)]
        scores = [np.where(self._kept[n], 1.0, 0.0) if n in names else np.ones(int(c))
                  for n, c in zip(self.space.names, self.space.channels)]
        return self.space.plan(widths, scores)

    @property
    def _kept(self):
        """Per channel block: which channels `Proj(W)` keeps (bool array)."""
        values = {id(v): x for v, x in zip(self.variables, self._values())}
        kept = {}
        for block in self.blocks:
            if block.variable is not None:
                continue
            scores = channel_scores(block, values)
            kept[block.name] = ops.convert_to_numpy(channel_keep_mask(scores, block.keep, block.blocks)) != 0
        return kept

    def keep_masks(self):
        """A callback keeping the pruned weights at 0 after every batch (for the
        masked fine-tune after `hard_prune()`)."""
        if self.masks is None:
            raise ValueError("Call `hard_prune()` before `keep_masks()`.")
        return KeepMasks([(v, self.masks[v.path]) for v in self.variables], self.target_model)


class KeepMasks(keras.callbacks.Callback):
    """Re-applies fixed 0/1 masks to variables after every training batch."""

    def __init__(self, pairs, model):
        super().__init__()
        self.pairs = [(v, ops.convert_to_tensor(m.astype(np.float32))) for v, m in pairs]
        self.target_model = model

    def on_train_batch_end(self, batch, logs=None):
        backends.sync(self.target_model)
        for variable, mask in self.pairs:
            variable.assign(variable.value * ops.cast(mask, variable.dtype))


def admm(model, train, sparsity=None, widths=None, rho=1e-4, iterations=30, training_epochs=5,
         fine_tune_epochs=0, exclude=(), heads="kv"):
    """ADMM pruning from start to end: rounds, hard prune, masked fine-tune.

    Args:
        model: a trained Keras model, changed in place.
        train: `train(model, epochs, callbacks)`, which fits `model` for
            `epochs` epochs passing `callbacks` to `fit` (the model must be compiled).
        sparsity / widths / rho / exclude / heads: the target and penalty (see `ADMM`).
        iterations: ADMM rounds. Defaults to 30 (NNI).
        training_epochs: epochs per round. Defaults to 5 (NNI).
        fine_tune_epochs: masked fine-tune after the hard prune. Defaults to 0.

    Returns:
        The `ADMM` callback after the hard prune (`.masks`, `.plan`, `.history`).

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="d"), keras.layers.Dense(2)])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> x, y = np.random.default_rng(0).normal(size=(64, 4)), np.zeros((64, 2))
    >>> fit = lambda m, epochs, callbacks: m.fit(x, y, epochs=epochs, verbose=0, callbacks=callbacks)
    >>> result = admm(model, fit, widths={"d": 2}, iterations=2, training_epochs=1, fine_tune_epochs=1)
    >>> result.plan.num_pruned, int(np.count_nonzero(np.abs(model.get_layer("d").kernel.numpy()).sum(0)))
    (6, 2)
    """
    for name, value in (("iterations", iterations), ("training_epochs", training_epochs),
                        ("fine_tune_epochs", fine_tune_epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "fine_tune_epochs" else 1):
            raise ValueError(f"Argument `{name}` must be an int >= {0 if name == 'fine_tune_epochs' else 1}. "
                             f"Received: {name}={value!r}")
    if not callable(train):
        raise ValueError(f"Argument `train` must be a callable `train(model, epochs, callbacks)`. Received: {train!r}")
    callback = ADMM(model, sparsity=sparsity, widths=widths, rho=rho, admm_epochs=training_epochs,
                    exclude=exclude, heads=heads)
    train(model, iterations * training_epochs, [callback])
    callback.hard_prune()
    if fine_tune_epochs:
        train(model, fine_tune_epochs, [callback.keep_masks()])
    return callback
