"""Magnitude pruning in place, for models kprune cannot clone layer by layer.

`kprune.prune_low_magnitude` clones a Sequential or Functional model whose
layers kprune knows, with `PruneLowMagnitude` wrappers (tfmot's way). Other
models -- a `keras.Model` subclass, or any model with a layer that holds
layers (a user's `ResidualBlock(keras.layers.Layer)`, KerasHub's
`TransformerEncoder` inside `BertBackbone`) -- are pruned where they are:

* every prunable layer reached through Keras' layer tracking gets a
  `PrunedInPlace` record (a layer type kprune knows, such as Dense,
  MultiHeadAttention or Embedding, is pruned whole, as its wrapper would
  prune it; any other layer that holds layers is searched; a layer whose
  trainable weights are all vectors is left as it is);
* the masks are boolean `keras.Variable`s held by those records, in an object
  attached to the model, not by its layers: the model's own variables keep
  their number, names and paths, so its `.keras` file is the user's model
  and loads without kprune;
* each pruned variable's `constraint` becomes `w -> where(mask, c(w), 0)`
  (`c` is the variable's own constraint, if any). Keras optimizers apply
  `variable.constraint` after every update, also in JAX's compiled step, so
  pruned entries stay exactly 0 and the layers need no other change. On JAX
  the compiled step holds the masks as constants, so it is traced again
  whenever masks change (at each pruning turn of the schedule);
* resuming: a saved pruned model holds exact zeros where it was pruned.
  Load it and call `prune_low_magnitude` again: the masks start as
  `weight != 0` (all ones on a fresh model). The schedule's step starts at
  0 on a model without zeros in its prunable weights (a fresh or dense
  trained model, whatever its optimizer has done), and otherwise (a pruned
  model, resumed) at the optimizer's `iterations`, saved in the .keras file
  (0 for an uncompiled model). A model whose optimizer `load_model` does not
  restore (KerasHub tasks override `compile`) is compiled again and given
  the step with `model.optimizer.iterations.assign(step)` before
  `prune_low_magnitude`;
* `strip_pruning` restores the constraints, drops the masks and returns the
  same model object (nothing to copy: its layers are the user's).

Embeddings and the language-model head are pruned like every other matrix
by default, as tfmot prunes `Embedding` layers during training: a
`ReversibleEmbedding`'s token table and, when it is untied (Llama 3's
default), its `reverse_embeddings` -- the vocabulary x hidden LM head, the
largest matrix of a Llama. One-shot LLM pruning (SparseGPT, Wanda) leaves
embeddings and the head dense; for that, pass a `pruning_policy` whose
`allow_pruning(layer)` is False for `keras.layers.Embedding` (KerasHub's
embeddings subclass it). `kprune.summary(model)` shows, per row, whether the
weights kprune prunes there are masked ("yes"/"no"/"partly").

Example:

>>> import keras, numpy as np, kprune
>>> class Net(keras.Model):
...     def __init__(self):
...         super().__init__()
...         self.hidden = keras.layers.Dense(8)
...         self.out = keras.layers.Dense(2)
...     def call(self, x):
...         return self.out(self.hidden(x))
>>> net = Net()
>>> _ = net(np.ones((1, 4), "float32"))
>>> pruned = kprune.prune_low_magnitude(net)
>>> pruned is net
True
>>> kprune.update_masks(net, sparsity=0.75)
>>> int((net.hidden.kernel.numpy() == 0).sum())
24
"""

import keras

from kprune._internal import functional
from kprune.registry import keras_layers
from kprune.sparsity import mask_math
from kprune.sparsity.masking import MaskConstraint, host_array
from kprune.sparsity.pruning_schedule import ConstantSparsity, PruningSchedule
from kprune.sparsity.pruning_wrapper import MagnitudeMasks, MaskedWrapper
from kprune.utils import backends

# The attribute of a model that holds its `InPlacePruning` (set with
# `object.__setattr__`, so Keras neither tracks nor saves it).
_ATTRIBUTE = "_kprune_in_place"


class PrunedInPlace(MagnitudeMasks):
    """The masks of one layer pruned in place (what a `PruneLowMagnitude`
    wrapper holds, without wrapping the layer).

    `UpdatePruningStep`, `update_masks`, `PruningSummaries` and
    `strip_pruning` treat it as they treat a wrapper: it has the wrapper's
    `name`, `layer`, `pruning_schedule`, `pruning_step`, `pruned_weights`,
    `apply_masks()` and `update_masks(sparsity)`.

    Args:
        layer: a built layer of a prunable type (`kprune.registry.keras_layers`).
        name: the layer's name, prefixed with the names of the layers that
            hold it inside the model ("block/conv1"), as in summaries.
        owner: the `InPlacePruning` of the model.
        pruning_schedule, block_size, block_pooling_type, sparsity_m_by_n:
            as for `kprune.prune_low_magnitude` (already checked).
        step: the schedule's step to start from.
    """

    built = True

    def __init__(self, layer, name, owner, pruning_schedule, block_size, block_pooling_type,
                 sparsity_m_by_n, step):
        self.layer = layer
        self.name = name
        self.pruning_schedule = pruning_schedule
        self.block_size = block_size
        self.block_pooling_type = block_pooling_type
        self.sparsity_m_by_n = sparsity_m_by_n
        self._owner = owner
        self._driven = False
        self._pruned = keras_layers.prunable_weights(layer)
        for w in self._pruned:
            self.check_weight(w)
        self._masked = [w.variable for w in self._pruned]
        self._constraints = [v.constraint for v in self._masked]
        self.masks = [
            keras.Variable(host_array(v) != 0, dtype="bool", trainable=False, name=f"{v.name}_mask")
            for v in self._masked
        ]
        self.pruning_step = keras.Variable(step, dtype="int32", trainable=False, name="pruning_step")
        for v, mask in zip(self._masked, self.masks):
            v.constraint = MaskConstraint(mask, v.constraint)

    def update_masks(self, sparsity):
        """Recompute the masks at `sparsity` (see `PruneLowMagnitude.update_masks`)."""
        super().update_masks(sparsity)
        self._owner.masks_changed()

    def detach(self):
        """Give the variables back their own constraints."""
        for v, constraint in zip(self._masked, self._constraints):
            v.constraint = constraint


class InPlacePruning:
    """The pruning state of a model pruned in place: its `PrunedInPlace`
    records (`targets`), attached to the model, never saved with it."""

    def __init__(self, model):
        self.model = model
        self.targets = []

    def masks_changed(self):
        """After masks change: on JAX, `fit` traces its step again (the
        compiled step holds the masks as constants)."""
        if not backends.optimizer_sees_masks():
            forget_train_step(self.model)


def forget_train_step(model):
    """Make the model's next training step be traced again (with the current
    constraints and masks): Keras traces `train_function` once and keeps it."""
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)


def needs_in_place(model, leaf_layers):
    """Whether `model` is pruned in place rather than cloned: a subclassed
    model, or one of its `leaf_layers` (layers of its graph) holds layers
    that kprune would search (`is_composite`)."""
    return not functional.is_graph(model) or any(is_composite(layer) for layer in leaf_layers)


def is_composite(layer):
    """Whether `layer` is searched for prunable layers: kprune has no rule for
    it, its weights are not all vectors, and it holds layers."""
    if isinstance(layer, MaskedWrapper):
        return False  # a kprune wrapper: the cloning path refuses to wrap it again
    return keras_layers.classify(layer) == "unsupported" and bool(functional.sublayers(layer, recursive=False))


def targets_of(model):
    """The `PrunedInPlace` records of a model pruned in place (else [])."""
    state = getattr(model, _ATTRIBUTE, None) if isinstance(model, keras.Model) else None
    return list(state.targets) if state is not None else []


def composite_layers(model):
    """The layers of `model` that hold prunable layers kprune does not know how
    to prune channels through (the model itself if it is subclassed)."""
    if not functional.is_graph(model):
        return [model]
    found = []
    for layer in functional.sublayers(model, recursive=True):
        if is_composite(layer) and not functional.is_nested_graph(layer):
            found.append(layer)
    return found


def _own_matrices(layer):
    """Trainable weights of rank >= 2 that `layer` holds itself (not through
    a sublayer)."""
    inner = {id(v) for sub in functional.sublayers(layer) for v in sub.weights}
    return [v for v in layer.trainable_weights if id(v) not in inner and len(v.shape) > 1]


def prunable_layers(model):
    """`(layers, problems)`: the layers of `model` pruned in place, reached
    through Keras' layer tracking, as `(layer, name)` with `name` the layer's
    name prefixed with those of the layers holding it ("block/conv1"), and
    descriptions of layers with trainable weights kprune cannot prune."""
    layers, problems, seen = [], [], set()

    def visit(parent, prefix):
        for layer in functional.sublayers(parent, recursive=False):
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if isinstance(layer, MaskedWrapper):
                raise ValueError(
                    f"Layer '{layer.name}' is already wrapped by {type(layer).__name__}; a "
                    "model is pruned either by wrappers or as a whole. Call "
                    "kprune.strip_pruning on the layers (or build the model with plain "
                    "layers) to prune it as a whole, or kprune.update_masks(model) to "
                    "drive the wrappers it has."
                )
            kind = keras_layers.classify(layer)
            if kind == "prunable":
                layers.append((layer, prefix + layer.name))
            elif kind == "unsupported":
                inside = functional.sublayers(layer, recursive=False)
                own = _own_matrices(layer) if inside else layer.trainable_weights
                if own:
                    names = ", ".join(f"'{v.name}'" for v in own)
                    problems.append(f"{keras_layers.describe(layer)} (weights {names})")
                visit(layer, f"{prefix}{layer.name}/")

    own = _own_matrices(model)
    if own:
        problems.append(f"{keras_layers.describe(model)} (weights {', '.join(repr(v.name) for v in own)})")
    visit(model, "")
    return layers, problems


def prune(model, pruning_schedule=None, block_size=(1, 1), block_pooling_type="AVG",
          sparsity_m_by_n=None, pruning_policy=None):
    """Prune `model` in place (see the module docstring) and return it.

    The arguments are `kprune.prune_low_magnitude`'s, with the same defaults.
    """
    if getattr(model, _ATTRIBUTE, None) is not None:
        raise ValueError(
            f"Model '{model.name}' is already pruned in place; a model can be pruned "
            "only once. Call kprune.strip_pruning(model) first to re-prune with other "
            "settings."
        )
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' ({type(model).__name__}) is not built: kprune prunes "
            "its layers where they are and needs their weights. Call the model on a "
            "batch of data (or `model.build(input_shape)`) first."
        )
    layers, problems = prunable_layers(model)
    if problems:
        raise ValueError(
            f"Model '{model.name}' has layers with trainable weights kprune cannot "
            f"prune: {'; '.join(problems)}. Describe them with kprune.register_layer "
            "(or implement kprune.PrunableLayer `get_prunable_weights()`) so that "
            "kprune knows which weights to prune."
        )
    if pruning_policy is not None:
        pruning_policy.ensure_model_supports_pruning(model)
        layers = [(layer, name) for layer, name in layers if pruning_policy.allow_pruning(layer)]
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no layer kprune can prune (Dense, Conv*, "
            "Embedding, MultiHeadAttention, ... or a registered layer)."
        )
    optimizer = getattr(model, "optimizer", None)
    resumed = any(
        not host_array(w.variable).all() for layer, _ in layers for w in keras_layers.prunable_weights(layer)
    )
    step = 0
    if resumed and optimizer is not None:
        step = int(keras.ops.convert_to_numpy(optimizer.iterations))
    schedule = pruning_schedule
    if schedule is None:
        schedule = ConstantSparsity(0.5, begin_step=0, frequency=100)
    if not isinstance(schedule, PruningSchedule):
        raise TypeError(
            "Argument `pruning_schedule` must be a kprune.PruningSchedule. "
            f"Received: pruning_schedule={pruning_schedule!r}"
        )
    pattern = mask_math.check_pattern(block_size, block_pooling_type, sparsity_m_by_n)
    state = InPlacePruning(model)
    try:
        for layer, name in layers:
            state.targets.append(PrunedInPlace(layer, name, state, schedule, *pattern, step=step))
    except Exception:
        for target in state.targets:
            target.detach()
        raise
    object.__setattr__(model, _ATTRIBUTE, state)
    forget_train_step(model)
    return model


def strip(model):
    """Undo `prune` on `model`: masks applied, constraints restored, masks
    dropped. Returns the same model."""
    state = getattr(model, _ATTRIBUTE)
    for target in state.targets:
        target.apply_masks()
        target.detach()
    object.__delattr__(model, _ATTRIBUTE)
    forget_train_step(model)
    return model



def check_channel_model(model, purpose="Channel pruning", composites=True):
    """Raise unless channel pruning can follow every channel of `model`: it
    needs a Sequential or Functional model. Layers that hold prunable layers
    (a KerasHub transformer block) are followed through their calls; with
    `composites=False` (training-time channel pruning, which wraps each
    layer of the graph) they are refused."""
    advice = (
        "Magnitude pruning works on it: kprune.prune_low_magnitude(model) "
        "(unstructured, block or M:N) prunes its layers in place."
    )
    if not functional.is_graph(model):
        raise ValueError(
            f"{purpose} needs a Sequential or Functional model: it follows channels "
            f"through the layer graph. Received: model '{model.name}' of type "
            f"{type(model).__name__} (subclassed models have no graph to analyse). "
            + advice
        )
    if composites:
        return
    for layer in composite_layers(model):
        raise ValueError(
            f"{purpose} wraps the layers of a Sequential or Functional model; it cannot "
            f"wrap the layers inside layer {keras_layers.describe(layer)}, which holds "
            f"prunable layers of its own. Received: model '{model.name}'. Prune it in one "
            "shot instead: kprune.mask_channels(model, kprune.plan_channels(model, ...)), "
            "then fine-tune, then kprune.remove_channels. " + advice
        )
