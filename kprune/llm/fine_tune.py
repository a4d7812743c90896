"""Keep a one-shot pruned model's zeros while it trains: `keep_zeros(model)`.

One-shot pruning leaves exact zeros in the kernels of linear layers. A sparse
fine-tune (LoRA-free recovery, distillation) must keep them. `keep_zeros`
masks every linear layer where it is (`kprune.sparsity.in_place`, for every
model kind, KerasHub's included): each kernel's mask is `weight != 0` and its
variable's constraint applies it after every optimizer step, so the zeros --
unstructured or N:M -- stay zeros and nothing else changes in the model. The
masks are never recomputed (their schedule has no pruning turn), with or
without `kprune.UpdatePruningStep`. `kprune.strip_pruning(model)` removes the
masks afterwards (the same model object, its zeros kept).

Example:

>>> import keras, numpy as np, kprune
>>> from kprune.llm.fine_tune import keep_zeros
>>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="hidden"),
...                           keras.layers.Dense(1, name="out")])
>>> x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
>>> _ = kprune.prune_oneshot(model, "2:4", data=x, verbose=0)
>>> keep_zeros(model) is model
True
>>> model.compile("adam", "mse")
>>> _ = model.fit(x, x[:, :1], epochs=2, verbose=0)
>>> model = kprune.strip_pruning(model)
>>> kprune.check_sparsity_m_by_n(model, 2, 4)
{'hidden/kernel': True, 'out/kernel': False}
"""

from keras import ops

from kprune.registry import keras_layers
from kprune.sparsity import in_place
from kprune.sparsity.pruning_policy import PruningPolicy
from kprune.sparsity.pruning_schedule import PruningSchedule


class KeepMasks(PruningSchedule):
    """A schedule without pruning turns: masks stay as they were made."""

    def __call__(self, step):
        step = ops.convert_to_tensor(step)
        return ops.zeros(ops.shape(step), "bool"), ops.zeros(ops.shape(step), "float32")

    def get_config(self):
        return {}


class LinearLayers(PruningPolicy):
    """Masks the layers one-shot pruning prunes (those with a `LinearView`)."""

    def allow_pruning(self, layer):
        return keras_layers.linear_view(layer) is not None

    def ensure_model_supports_pruning(self, model):
        pass


def keep_zeros(model):
    """Mask the linear layers of `model` with `weight != 0`, in place, for a
    sparse fine-tune (see the module docstring). Returns `model`.

    Raises:
        ValueError: the model is already pruned (call `kprune.strip_pruning` first).
    """
    return in_place.prune(model, pruning_schedule=KeepMasks(), pruning_policy=LinearLayers())
