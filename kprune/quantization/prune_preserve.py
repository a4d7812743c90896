"""Pruning-preserving quantization-aware training (PQAT): zeros stay exactly zero.

tfmot's `Default8BitPrunePreserveQuantizeScheme` (`tfmot.experimental.combine`):
the default 8-bit scheme, with weight quantizers that keep the zeros a
pruned model has when quantization-aware training starts. At build, each
quantized weight's zeros become a boolean mask (a non-trainable variable,
saved with the model); the forward pass quantizes `where(mask, w, 0)`, and
the mask is the weight's constraint too (`kprune.sparsity.masking.MaskConstraint`),
so the optimizer's updates leave those entries at exactly 0 (on JAX, where
a constraint cannot read the mask, their gradient is 0). Zero is exact in
symmetric quantization, so the int8 file has the same zeros: unstructured,
2:4, or the channels of a channel-pruned model.

tfmot leaves depthwise kernels out of sparsity preservation; kprune keeps
their zeros too. tfmot's mask is a tensor recomputed from the weights when
the layer is built (a loaded model gets it from the loaded weights); kprune
saves it.

Example:

>>> import keras, numpy as np
>>> from kprune.quantization import quantize
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
>>> _ = model.layers[0].kernel.assign(np.where(np.eye(4, 3) > 0, 1.0, 0.0))
>>> pqat = quantize.quantize_apply(quantize.quantize_annotate_model(model),
...                                Default8BitPrunePreserveQuantizeScheme())
>>> kernel = pqat.get_layer("quant_dense").layer.kernel
>>> _ = pqat(np.ones((2, 4), "float32"), training=True)
>>> int(np.sum(keras.ops.convert_to_numpy(kernel) != 0))
3
"""

import keras
from keras import ops

from kprune.quantization import quant_ops
from kprune.quantization.default_8bit import (
    Default8BitQuantizeConfig,
    Default8BitQuantizeRegistry,
    Default8BitQuantizeScheme,
)
from kprune.quantization.quantize_wrapper import weight_name
from kprune.quantization.quantizers import PerChannelWeightsQuantizer
from kprune.sparsity.masking import MaskConstraint, apply_mask


@keras.saving.register_keras_serializable(package="kprune")
class PrunePreservingWeightsQuantizer(PerChannelWeightsQuantizer):
    """`PerChannelWeightsQuantizer` that keeps the weight's zeros (see the module).

    Args: as `PerChannelWeightsQuantizer`.
    """

    def build(self, tensor_shape, name, layer):
        inner = getattr(layer, "layer", layer)
        variables = [v for v in inner.weights if weight_name(v) == name]
        if len(variables) != 1:
            raise ValueError(
                f"Layer '{inner.name}': PrunePreservingWeightsQuantizer needs the weight '{name}' "
                f"it quantizes; found {len(variables)} weights of that name."
            )
        variable = variables[0]
        mask = layer.add_weight(shape=tuple(variable.shape), name=f"{name}_sparsity_mask",
                                dtype="bool", trainable=False, initializer="ones")
        mask.assign(ops.not_equal(variable.value, 0))
        if not isinstance(variable.constraint, MaskConstraint) or variable.constraint.mask is not mask:
            variable.constraint = MaskConstraint(mask, variable.constraint, when_readable=True)
        return {"sparsity_mask": mask}

    def __call__(self, inputs, training, weights, **kwargs):
        kept = apply_mask(inputs, weights["sparsity_mask"])
        return quant_ops.fake_quant_weights(kept, self.channel_axes, self.num_bits)


@keras.saving.register_keras_serializable(package="kprune")
class PrunePreserveQuantizeConfig(Default8BitQuantizeConfig):
    """`Default8BitQuantizeConfig` whose weight quantizers keep the weights' zeros.

    Args: as `Default8BitQuantizeConfig` (per-tensor weights: `weight_channel_axes=None`).
    """

    def weight_quantizer(self, index):
        axes = () if self.weight_channel_axes is None else self.weight_channel_axes[index]
        return PrunePreservingWeightsQuantizer(axes)


class Default8BitPrunePreserveQuantizeRegistry(Default8BitQuantizeRegistry):
    """The default 8-bit registry, with sparsity-preserving weight quantizers."""

    def producer_config(self, layer, weights):
        config = super().producer_config(layer, weights)
        return PrunePreserveQuantizeConfig(**config.get_config())


class Default8BitPrunePreserveQuantizeScheme(Default8BitQuantizeScheme):
    """The default 8-bit scheme that keeps a pruned model's zeros (tfmot's, from
    `tfmot.experimental.combine`).

    Args:
        disable_per_axis: per-tensor weights. Defaults to False.
    """

    def get_quantize_registry(self):
        return Default8BitPrunePreserveQuantizeRegistry(self.disable_per_axis)
