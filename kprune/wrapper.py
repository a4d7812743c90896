"""`PruneLowMagnitude`: the wrapper layer that holds masks for a layer's weights.

How a wrapped layer trains:

* the forward pass runs the inner layer on `weight * mask` (substituted for the
  weight through a `keras.StatelessScope`), so pruned entries receive exactly
  zero gradient;
* each pruned variable carries a constraint `w -> constraint(w) * mask`, which
  Keras optimizers apply after every update, so pruned entries stay exactly 0
  even under momentum or Adam, and the model's variables hold masked values
  whenever `fit` returns or a checkpoint is written;
* masks are recomputed on the host (`kprune.masks`) by `UpdatePruningStep` or
  `kprune.update_masks`, never inside the train step, so a step costs one
  multiply per pruned weight and no selection.
"""

import keras
import numpy as np
from keras import ops

from kprune import handlers
from kprune import masks as mask_math
from kprune.schedules import ConstantSparsity, PruningSchedule


class _MaskConstraint(keras.constraints.Constraint):
    """Applies the layer's own constraint, then the mask."""

    def __init__(self, mask, inner=None):
        self.mask = mask
        self.inner = inner

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        return ops.multiply(w, ops.cast(self.mask, w.dtype))


def _mask_gradient(value, mask):
    """`value` unchanged in the forward pass; the gradient is multiplied by `mask`."""

    @ops.custom_gradient
    def masked(x):
        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            return ops.multiply(upstream, ops.cast(mask, upstream.dtype))

        return ops.copy(x), grad

    return masked(value)


@keras.saving.register_keras_serializable(package="kprune")
class PruneLowMagnitude(keras.layers.Wrapper):
    """Wraps a layer so that its weights are pruned by magnitude during training.

    Use `kprune.prune_low_magnitude` rather than this class directly.

    Args:
        layer: the layer to prune: a built-in prunable type (see
            `kprune.handlers`) or a `kprune.PrunableLayer`.
        pruning_schedule: a `kprune.PruningSchedule`. Defaults to
            `ConstantSparsity(0.5, begin_step=0, frequency=100)`.
        block_size: `(r, c)` blocks of the last two weight axes pruned as one.
            Defaults to `(1, 1)` (unstructured).
        block_pooling_type: how a block is scored, `"AVG"` (default) or `"MAX"`.
        sparsity_m_by_n: `(m, n)` to keep `m` of every `n` weights along the
            input-channel axis (e.g. `(2, 4)`); overrides the schedule's
            sparsity value (the schedule still says when masks update).
            Defaults to `None`.
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
        if isinstance(layer, PruneLowMagnitude):
            raise ValueError(
                f"Layer '{layer.name}' is already wrapped by PruneLowMagnitude; a "
                "layer can be wrapped only once. Received: layer="
                f"{layer.name} (PruneLowMagnitude)"
            )
        if handlers.classify(layer) != "prunable":
            raise ValueError(
                f"Layer {handlers.describe(layer)} has no weights kprune can prune. "
                "Leave it unwrapped, or implement `kprune.PrunableLayer` "
                "(`get_prunable_weights()`) for a custom layer."
            )
        if pruning_schedule is None:
            pruning_schedule = ConstantSparsity(0.5, begin_step=0, frequency=100)
        elif isinstance(pruning_schedule, dict):
            pruning_schedule = keras.saving.deserialize_keras_object(pruning_schedule)
        if not isinstance(pruning_schedule, PruningSchedule):
            raise TypeError(
                "Argument `pruning_schedule` must be a kprune.PruningSchedule. "
                f"Received: pruning_schedule={pruning_schedule!r}"
            )
        block_size, block_pooling_type, sparsity_m_by_n = mask_math.check_pattern(
            block_size, block_pooling_type, sparsity_m_by_n
        )
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        self.pruning_schedule = pruning_schedule
        self.block_size = block_size
        self.block_pooling_type = block_pooling_type
        self.sparsity_m_by_n = sparsity_m_by_n
        self._driven = False

    # ------------------------------------------------------------------ build
    def build(self, input_shape=None):
        if not self.layer.built:
            try:
                self.layer.build(input_shape)
            except TypeError as e:
                raise ValueError(
                    f"Layer {handlers.describe(self.layer)} could not be built from "
                    f"input_shape={input_shape}: {e}. Build it (call it on its "
                    "inputs) before wrapping, or wrap the whole model."
                ) from None
        weights = handlers.prunable_weights(self.layer)
        if not weights:
            raise ValueError(
                f"Layer {handlers.describe(self.layer)} has no prunable weights after "
                "building. Leave it unwrapped."
            )
        for w in weights:
            self._check_weight(w)
        self._pruned = weights
        self.masks = []
        for w in weights:
            mask = self.add_weight(
                name=f"{w.variable.name}_mask",
                shape=w.variable.shape,
                initializer="ones",
                dtype=w.variable.dtype,
                trainable=False,
            )
            self.masks.append(mask)
            w.variable.constraint = _MaskConstraint(mask, w.variable.constraint)
        self.pruning_step = self.add_weight(
            name="pruning_step", shape=(), initializer="zeros", dtype="int64", trainable=False
        )
        self.built = True

    def _check_weight(self, w):
        shape = tuple(w.variable.shape)
        if self.block_size != (1, 1) and len(shape) < 2:
            raise ValueError(
                f"Layer {handlers.describe(self.layer)}: block sparsity needs weights of "
                f"rank >= 2; weight '{w.variable.name}' has shape {shape}. "
                f"Received: block_size={self.block_size}"
            )
        if self.sparsity_m_by_n is not None:
            m, n = self.sparsity_m_by_n
            if shape[w.input_axis] % n:
                raise ValueError(
                    f"Layer {handlers.describe(self.layer)}: M:N sparsity {m}:{n} needs "
                    f"the input-channel axis of weight '{w.variable.name}' (shape {shape}, "
                    f"axis {w.input_axis}) to be a multiple of {n}. Leave this layer "
                    "unwrapped (see the `clone_function` pattern in the README). "
                    f"Received: sparsity_m_by_n={self.sparsity_m_by_n}"
                )

    # ------------------------------------------------------------------- call
    def call(self, inputs, *args, training=None, **kwargs):
        if training and not self._driven:
            raise ValueError(
                f"Layer '{self.name}' is being trained without the "
                "kprune.UpdatePruningStep callback, so its masks would never update. "
                "Add it: model.fit(..., callbacks=[kprune.UpdatePruningStep()]). In a "
                "custom training loop call the callback's set_model(model), "
                "on_train_begin() and on_train_batch_begin(step) yourself."
            )
        if training is not None and self.layer._call_has_training_arg:
            kwargs["training"] = training
        if training:
            # During fit the variables already hold masked values (the mask
            # constraint runs after every optimizer step, and training starts
            # with `apply_masks`), so the forward pass reads them as they are
            # and only the gradient is masked: one elementwise pass fewer.
            mapping = [
                (w.variable, _mask_gradient(w.variable.value, m.value))
                for w, m in zip(self._pruned, self.masks)
            ]
        else:
            mapping = [
                (w.variable, ops.multiply(w.variable.value, m.value))
                for w, m in zip(self._pruned, self.masks)
            ]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            outputs = self.layer(inputs, *args, **kwargs)
        # State the inner layer updated (RNN dropout seeds, ...) is written back.
        mapped = {id(v) for v, _ in mapping}
        for v in self.layer.variables:
            if id(v) not in mapped:
                new = scope.get_current_value(v)
                if new is not None:
                    v.assign(new)
        return outputs

    # ------------------------------------------------------------------ masks
    @property
    def pruned_weights(self):
        """The `(variable, mask)` pairs this wrapper prunes."""
        return [(w.variable, m) for w, m in zip(self._pruned, self.masks)]

    def _new_mask(self, value, input_axis, sparsity):
        if self.sparsity_m_by_n is not None:
            return mask_math.m_by_n_mask(value, self.sparsity_m_by_n, input_axis)
        if self.block_size != (1, 1):
            return mask_math.block_mask(value, sparsity, self.block_size, self.block_pooling_type)
        return mask_math.magnitude_mask(value, sparsity)

    def update_masks(self, sparsity):
        """Recompute the masks from the current weights at `sparsity` (ignored
        for M:N) and zero the pruned entries of the weights."""
        for w, mask in zip(self._pruned, self.masks):
            value = keras.ops.convert_to_numpy(w.variable.value)
            keep = self._new_mask(value, w.input_axis, sparsity)
            mask.assign(ops.cast(keep, mask.dtype))
            w.variable.assign(ops.multiply(w.variable.value, mask.value))

    def apply_masks(self):
        """Zero the pruned entries of the weights: `w <- w * mask`."""
        for variable, mask in self.pruned_weights:
            variable.assign(ops.multiply(variable.value, mask.value))

    def masked_layer_weights(self):
        """The inner layer's weights as NumPy arrays, pruned entries set to 0."""
        masks = {id(v): m for v, m in self.pruned_weights}
        values = []
        for v in self.layer.weights:
            value = keras.ops.convert_to_numpy(v.value)
            if id(v) in masks:
                value = value * keras.ops.convert_to_numpy(masks[id(v)])
            values.append(value)
        return values

    # ----------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pruning_schedule": keras.saving.serialize_keras_object(self.pruning_schedule),
                "block_size": self.block_size,
                "block_pooling_type": self.block_pooling_type,
                "sparsity_m_by_n": self.sparsity_m_by_n,
            }
        )
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
        for key in ("block_size", "sparsity_m_by_n"):
            if config.get(key) is not None:
                config[key] = tuple(config[key])
        return cls(**config)
