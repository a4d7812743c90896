"""`PruneLowMagnitude`: the wrapper layer that holds masks for a layer's weights.

How a wrapped layer trains:

* each pruned variable carries a constraint `w -> where(mask, constraint(w), 0)`
  (on TensorFlow computed as `constraint(w) * cast(mask)`, see `mask_product`),
  which Keras optimizers apply after every update, so pruned entries stay
  exactly 0 even under momentum or Adam, and the model's variables hold
  masked values whenever `fit` returns or a checkpoint is written;
* so during training (`UpdatePruningStep` starts it with `apply_masks`) the
  inner layer runs on its variables as they are: the step costs one select
  per pruned weight (the constraint), as in tfmot. Pruned entries get a
  gradient, as in tfmot, but their updates are discarded (a global-norm
  clip therefore counts them, as tfmot's does);
* outside training the inner layer runs on `where(mask, weight, 0)`
  (substituted for the weight through a `keras.StatelessScope`), whatever the
  variables hold; so does training on JAX, whose compiled optimizer step
  cannot read the masks (`kprune.utils.backends`): there pruned entries get zero
  gradient, and the callback zeroes their optimizer state at each update;
* masks are boolean variables (one byte per weight, not trainable), applied
  with `where(mask, w, 0)`, so no float copy of a mask is ever made;
* masks are recomputed on the host (`kprune.sparsity.mask_math`), or for unstructured
  masks of weights on a GPU or TPU there (`kprune.sparsity.smallest_device`), by
  `UpdatePruningStep` or `kprune.update_masks`, never inside the train step,
  so a step costs one select per pruned weight and no selection. The host reads the weights
  without copying them (`host_array`), and a weight is rewritten only when the
  new mask zeroes entries that are not already 0.
"""

import keras
import numpy as np

from kprune._internal import functional
from kprune._internal import keras_layers as keras_internals
from kprune.registry import keras_layers
from kprune.sparsity import mask_math, smallest_device
from kprune.sparsity import smallest as selection
from kprune.sparsity.masking import MaskConstraint, apply_mask, host_array, write_mask
from kprune.sparsity.pruning_schedule import ConstantSparsity, PruningSchedule
from kprune.utils import backends


class MaskedWeights:
    """What every holder of masks does with them: kprune's wrappers and the
    layers `kprune.sparsity.in_place` prunes where they are.

    A subclass sets `layer` (the layer whose weights are masked), `_masked`
    (its masked variables) and `masks` (one boolean variable per masked
    variable).

    How masks are updated is the holder's class's to say. Layer by layer (the
    default, `model_level = False`): the callbacks call each wrapper's
    `update_masks(sparsity)`. For the whole model at once (`model_level =
    True`, e.g. channel groups that span layers): the callbacks collect the
    model's wrappers of that class and call the classmethods
    `prepare_model_masks(model, wrappers)` when training begins and
    `update_model_masks(model, wrappers, sparsity)` at each pruning turn (of
    the first wrapper's schedule). The callbacks know nothing else of them.
    """

    model_level = False

    @classmethod
    def prepare_model_masks(cls, model, wrappers):
        """For a `model_level` class: set up (e.g. cache) what its mask updates need. Defaults to nothing."""

    @classmethod
    def update_model_masks(cls, model, wrappers, sparsity):
        """For a `model_level` class: choose and write the masks of `wrappers` in `model`
        at `sparsity` (None: the schedule's value at the wrappers' step)."""
        raise NotImplementedError(f"{cls.__name__} has model-level masks but no update_model_masks.")

    def mark_driven(self):
        """Record that a callback drives this holder's masks (`UpdatePruningStep`
        calls it when training begins); training without it is an error."""
        self._driven = True

    @property
    def pruned_weights(self):
        """The `(variable, mask)` pairs this wrapper prunes."""
        return list(zip(self._masked, self.masks))

    def apply_masks(self):
        """Zero the pruned entries of the weights: `w <- w * mask`."""
        for variable, mask in self.pruned_weights:
            variable.assign(apply_mask(variable.value, mask.value))

    def set_mask(self, variable, mask, keep, pruned_nonzero=None):
        """Assign `keep` to `mask` and zero the pruned entries of `variable`
        (`kprune.sparsity.masking.write_mask`)."""
        write_mask(variable, mask, keep, pruned_nonzero)

    def masked_layer_weights(self):
        """The inner layer's weights as NumPy arrays, pruned entries set to 0."""
        masks = {id(v): m for v, m in self.pruned_weights}
        values = []
        for v in self.layer.weights:
            value = keras.ops.convert_to_numpy(v.value)
            if id(v) in masks:
                keep = keras.ops.convert_to_numpy(masks[id(v)]).astype(bool, copy=False)
                np.copyto(value, 0, where=~keep)
            values.append(value)
        return values


class MaskedWrapper(MaskedWeights, keras.layers.Wrapper):
    """Base of kprune's wrappers: a layer whose variables are multiplied by masks.

    Subclasses call `_create_masks(variables)` in `build` and assign the masks
    (`UpdatePruningStep` or `update_masks` decide when). The forward pass, the
    mask constraint, `apply_masks` and `masked_layer_weights` are shared.
    """

    def __init__(self, layer, pruning_schedule=None, **kwargs):
        super().__init__(layer, **kwargs)
        if pruning_schedule is None:
            pruning_schedule = ConstantSparsity(0.5, begin_step=0, frequency=100)
        elif isinstance(pruning_schedule, dict):
            pruning_schedule = keras.saving.deserialize_keras_object(pruning_schedule)
        if not isinstance(pruning_schedule, PruningSchedule):
            raise TypeError(
                "Argument `pruning_schedule` must be a kprune.PruningSchedule. "
                f"Received: pruning_schedule={pruning_schedule!r}"
            )
        self.pruning_schedule = pruning_schedule
        # Keras 3's Sequential builds itself from its first layer's
        # `input_shape` argument: a wrapped first layer carries the inner
        # layer's (`Sequential([prune_low_magnitude(Dense(2, input_shape=(3,)))])`).
        inner_shape = getattr(layer, "_input_shape_arg", None)
        if inner_shape is not None and getattr(self, "_input_shape_arg", None) is None:
            self._input_shape_arg = inner_shape
        self._driven = False
        self._masked = []
        self.masks = []

    def _build_inner(self, input_shape):
        if not self.layer.built:
            try:
                self.layer.build(input_shape)
            except TypeError as e:
                raise ValueError(
                    f"Layer {keras_layers.describe(self.layer)} could not be built from "
                    f"input_shape={input_shape}: {e}. Build it (call it on its "
                    "inputs) before wrapping, or wrap the whole model."
                ) from None

    def _create_masks(self, variables):
        """A boolean mask of ones per variable (constrained so it stays masked)
        and the step."""
        self._masked = list(variables)
        self.masks = []
        for v in self._masked:
            mask = self.add_weight(
                name=f"{v.name}_mask", shape=v.shape, initializer="ones",
                dtype="bool", trainable=False,
            )
            self.masks.append(mask)
            v.constraint = MaskConstraint(mask, v.constraint, when_readable=True)
        self.pruning_step = self.add_weight(
            name="pruning_step", shape=(), initializer="zeros", dtype="int32", trainable=False
        )

    # ------------------------------------------------------------------- call
    def call(self, inputs, *args, training=None, **kwargs):
        if training and not self._driven:
            # Raised as it is: not as Keras' "Exception encountered when
            # calling PruneLowMagnitude.call()" with ANSI codes around it.
            raise functional.undecorated(ValueError(
                f"Layer '{self.name}' is being trained without the "
                "kprune.UpdatePruningStep callback, so its masks would never update. "
                "Add it: model.fit(..., callbacks=[kprune.UpdatePruningStep()]). In a "
                "custom training loop call the callback's set_model(model), "
                "on_train_begin() and on_train_batch_begin(step) yourself."
            ))
        if training is not None and keras_internals.call_has_training_arg(self.layer):
            kwargs["training"] = training
        if training and backends.optimizer_sees_masks():
            # During fit the variables already hold masked values (the mask
            # constraint runs after every optimizer step, and training starts
            # with `apply_masks`), so the inner layer reads them as they are.
            # (Not on JAX, where the optimizer step cannot read the masks.)
            return self.layer(inputs, *args, **kwargs)
        mapping = [(v, apply_mask(v.value, m.value)) for v, m in zip(self._masked, self.masks)]
        # The inner layer's other variables are mapped to their current values,
        # which inside an enclosing stateless scope (JAX's `fit`, `stateless_call`)
        # are that scope's: a scope does not see its parent's mapping.
        mapped = {id(v) for v, _ in mapping}
        mapping += [(v, v.value) for v in self.layer.variables if id(v) not in mapped]
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            given = {id(v): scope.get_current_value(v) for v in self.layer.variables}
            outputs = self.layer(inputs, *args, **kwargs)
        # State the inner layer updated (RNN dropout seeds, BatchNormalization
        # statistics, ...) and losses it added are passed on.
        for v in self.layer.variables:
            if id(v) not in mapped:
                new = scope.get_current_value(v)
                if new is not None and new is not given[id(v)]:
                    v.assign(new)
        for loss in scope.losses:
            self.add_loss(loss)
        return outputs

    # Config keys that JSON turns into lists and the constructor wants as tuples.
    _TUPLE_KEYS = ()

    def get_config(self):
        config = super().get_config()
        config["pruning_schedule"] = keras.saving.serialize_keras_object(self.pruning_schedule)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(
            config["layer"], custom_objects=custom_objects
        )
        config["pruning_schedule"] = keras.saving.deserialize_keras_object(
            config["pruning_schedule"], custom_objects=custom_objects
        )
        for key in cls._TUPLE_KEYS:
            if config.get(key) is not None:
                config[key] = tuple(config[key])
        return cls(**config)


class MagnitudeMasks(MaskedWeights):
    """Magnitude masks (unstructured, block or M:N) of a layer's prunable
    weights: shared by `PruneLowMagnitude` and `kprune.sparsity.in_place`.

    A subclass sets, besides `MaskedWeights`' attributes, `_pruned` (the
    layer's `PrunableWeight`s, in the order of `masks`), `block_size`,
    `block_pooling_type` and `sparsity_m_by_n`.
    """

    def check_weight(self, w):
        """Raise unless `w` (a `PrunableWeight`) fits the block or M:N pattern."""
        shape = tuple(w.variable.shape)
        if self.block_size != (1, 1) and len(shape) < 2:
            raise ValueError(
                f"Layer {keras_layers.describe(self.layer)}: block sparsity needs weights of "
                f"rank >= 2; weight '{w.variable.name}' has shape {shape}. "
                f"Received: block_size={self.block_size}"
            )
        if self.sparsity_m_by_n is not None:
            m, n = self.sparsity_m_by_n
            if shape[w.input_axis] % n:
                raise ValueError(
                    f"Layer {keras_layers.describe(self.layer)}: M:N sparsity {m}:{n} needs "
                    f"the input-channel axis of weight '{w.variable.name}' (shape {shape}, "
                    f"axis {w.input_axis}) to be a multiple of {n}. Leave this layer "
                    "unwrapped (see the `clone_function` pattern in the README). "
                    f"Received: sparsity_m_by_n={self.sparsity_m_by_n}"
                )

    def _new_mask(self, value, input_axis, sparsity):
        """`(keep, pruned_nonzero or None)` for one weight."""
        if self.sparsity_m_by_n is not None:
            return mask_math.m_by_n_mask(value, self.sparsity_m_by_n, input_axis), None
        if self.block_size != (1, 1):
            keep = mask_math.block_mask(value, sparsity, self.block_size, self.block_pooling_type)
            return keep, None
        keep, pruned_nonzero = selection.select_smallest(
            value, mask_math.target_zeros(value.size, sparsity)
        )
        return keep.reshape(value.shape), pruned_nonzero

    def update_masks(self, sparsity):
        """Recompute the masks from the current weights at `sparsity` (ignored
        for M:N) and zero the pruned entries of the weights.

        Unstructured masks of weights on a GPU or TPU are computed there
        (`kprune.sparsity.smallest_device`); the others on the host (`kprune.sparsity.mask_math`).
        Both give the same masks."""
        for w, mask in zip(self._pruned, self.masks):
            variable = w.variable
            if self._on_device(variable):
                k = mask_math.target_zeros(int(np.prod(variable.shape)), sparsity)
                keep, nonzero = smallest_device.select_smallest_on_device(variable.value, k)
                self.set_mask(variable, mask, keep, bool(keras.ops.convert_to_numpy(nonzero)))
                continue
            keep, pruned_nonzero = self._new_mask(host_array(variable), w.input_axis, sparsity)
            self.set_mask(variable, mask, keep, pruned_nonzero)

    def _on_device(self, variable):
        return (
            self.sparsity_m_by_n is None and self.block_size == (1, 1)
            and smallest_device.supports(variable.dtype) and backends.on_accelerator(variable)
        )


@keras.saving.register_keras_serializable(package="kprune")
class PruneLowMagnitude(MagnitudeMasks, MaskedWrapper):
    """Wraps a layer so that its weights are pruned by magnitude during training.

    Use `kprune.prune_low_magnitude` rather than this class directly.

    Args:
        layer: the layer to prune: a built-in prunable type (see
            `kprune.registry.keras_layers`) or a `kprune.PrunableLayer`.
        pruning_schedule: a `kprune.PruningSchedule`. Defaults to
            `ConstantSparsity(0.5, begin_step=0, frequency=100)`.
        block_size: `(r, c)` blocks of the last two weight axes pruned as one.
            Defaults to `(1, 1)` (unstructured).
        block_pooling_type: how a block is scored, `"AVG"` (default) or `"MAX"`.
        sparsity_m_by_n: `(m, n)` for `m` zeros in every `n` weights along the
            input-channel axis (e.g. `(2, 4)`). `UpdatePruningStep` computes
            the mask once, before training step 1, as tfmot does; the
            schedule is not used. Defaults to `None`.
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`).

    Example:

    >>> import keras, kprune
    >>> layer = kprune.PruneLowMagnitude(keras.layers.Dense(4), block_size=(1, 2))
    >>> out = layer(keras.ops.ones((1, 8)))
    >>> [tuple(m.shape) for m in layer.masks]
    [(8, 4)]
    """

    def __init__(
        self,
        layer,
        pruning_schedule=None,
        block_size=(1, 1),
        block_pooling_type="AVG",
        sparsity_m_by_n=None,
        **kwargs,
    ):
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                "Argument `layer` must be a Keras layer. "
                f"Received: layer={layer!r} (of type {type(layer).__name__})"
            )
        if isinstance(layer, MaskedWrapper):
            raise ValueError(
                f"Layer '{layer.name}' is already wrapped by {type(layer).__name__}; a "
                "layer can be wrapped only once. Received: layer="
                f"{layer.name} ({type(layer).__name__})"
            )
        if keras_layers.classify(layer) != "prunable":
            raise ValueError(
                f"Layer {keras_layers.describe(layer)} has no weights kprune can prune. "
                "Leave it unwrapped, or implement `kprune.PrunableLayer` "
                "(`get_prunable_weights()`) for a custom layer."
            )
        block_size, block_pooling_type, sparsity_m_by_n = mask_math.check_pattern(
            block_size, block_pooling_type, sparsity_m_by_n
        )
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, pruning_schedule, **kwargs)
        self.block_size = block_size
        self.block_pooling_type = block_pooling_type
        self.sparsity_m_by_n = sparsity_m_by_n

    _TUPLE_KEYS = ("block_size", "sparsity_m_by_n")

    # ------------------------------------------------------------------ build
    def build(self, input_shape=None):
        self._build_inner(input_shape)
        weights = keras_layers.prunable_weights(self.layer)
        if not weights:
            raise ValueError(
                f"Layer {keras_layers.describe(self.layer)} has no prunable weights after "
                "building. Leave it unwrapped."
            )
        for w in weights:
            self.check_weight(w)
        self._pruned = weights
        self._create_masks([w.variable for w in weights])
        self.built = True

    # ----------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "block_size": self.block_size,
                "block_pooling_type": self.block_pooling_type,
                "sparsity_m_by_n": self.sparsity_m_by_n,
            }
        )
        return config
