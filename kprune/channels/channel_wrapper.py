"""`PruneChannels`: the wrapper of a layer whose channels are pruned in groups.

`kprune.prune_channels` wraps every layer that holds weight slices of a
prunable channel group; `UpdatePruningStep` (through `kprune.channels.gradual`)
chooses the channels for the whole model and sets each wrapper's masks, whole
slices at a time. The forward pass, the mask constraint and the storage of
masks are `kprune.sparsity.pruning_wrapper.MaskedWrapper`'s.

Example:

>>> import keras, kprune
>>> layer = PruneChannels(keras.layers.Dense(4), round_to=1)
>>> _ = layer(keras.ops.ones((1, 8)))
>>> [tuple(m.shape) for m in layer.masks]
[(8, 4), (4,)]
"""

import keras
import numpy as np

from kprune.channels import channel_masks
from kprune.registry import keras_layers
from kprune.sparsity.pruning_wrapper import MaskedWrapper
from kprune.utils.validation import check_round_to


@keras.saving.register_keras_serializable(package="kprune")
class PruneChannels(MaskedWrapper):
    """Wraps a layer whose channels are pruned as part of channel groups.

    Made by `kprune.prune_channels`, which wraps every layer that holds weight
    slices of a prunable channel group (producers, BatchNormalization,
    consumers). The masks zero whole slices: the filters that write a pruned
    channel and the weights that read it. `UpdatePruningStep` chooses the
    channels for the whole model at once (`kprune.channels.gradual`).

    Args:
        layer: the layer.
        pruning_schedule: a `kprune.PruningSchedule` giving the fraction of
            channels pruned per group over time. Defaults to
            `ConstantSparsity(0.5, begin_step=0, frequency=100)`.
        importance: a weight criterion name: `"l1"`, `"l2"` (default),
            `"fpgm"` or `"bn_scale"`.
        global_ranking: rank channels across groups. Defaults to False.
        round_to: keep a multiple of this many channels per group. Defaults to 8.
        ratio: this producer's final channel sparsity, overriding the
            schedule's final value (scaled along the schedule). Defaults to None.
        **kwargs: base `Layer` arguments.
    """

    model_level = True  # channels are chosen for the whole model at once

    @classmethod
    def prepare_model_masks(cls, model, wrappers):
        """Build the model's channel graph and mask writer once, before the first step."""
        channel_masks.channel_state(model, wrappers)

    @classmethod
    def update_model_masks(cls, model, wrappers, sparsity):
        """Choose the pruned channels of the whole model and write every wrapper's masks."""
        if not isinstance(model, keras.Model):
            raise ValueError(
                "Channel masks are chosen for a whole model: pass the model returned by "
                f"kprune.prune_channels. Received: {type(model).__name__}"
            )
        graph, writer = channel_masks.channel_state(model, wrappers)
        return channel_masks.update_channel_masks(model, sparsity, wrappers, graph, writer)

    def __init__(
        self,
        layer,
        pruning_schedule=None,
        importance="l2",
        global_ranking=False,
        round_to=8,
        ratio=None,
        **kwargs,
    ):
        if not isinstance(layer, keras.layers.Layer) or isinstance(layer, MaskedWrapper):
            raise TypeError(
                "Argument `layer` must be a Keras layer that is not already wrapped. "
                f"Received: layer={layer!r}"
            )
        if not isinstance(importance, str):
            raise TypeError(
                "Argument `importance` must be the name of a weight criterion (see "
                f"kprune.prune_channels). Received: importance={importance!r}"
            )
        check_round_to(round_to)
        kwargs.setdefault("name", f"prune_channels_{layer.name}")
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, pruning_schedule, **kwargs)
        self.importance = importance
        self.global_ranking = bool(global_ranking)
        self.round_to = round_to
        self.ratio = None if ratio is None else float(ratio)

    def build(self, input_shape=None):
        self._build_inner(input_shape)
        spec = keras_layers.channel_spec(self.layer, input_shape)
        slices = spec.in_slices + spec.out_slices + sum((s for _, s in spec.input_slices), ())
        if spec.heads is not None:  # an attention layer's heads: query, key, value, output
            slices += tuple((v, a, 1) for v, a in
                            spec.heads.query_slices + spec.heads.kv_slices + spec.heads.output_slices)
        variables = []
        for variable, _, _ in slices:
            if variable.trainable and all(variable is not v for v in variables):
                variables.append(variable)
        self._create_masks(variables)
        self.built = True

    def set_channel_masks(self, keep):
        """Assign masks from `{id(variable): 0/1 array}` (missing: all ones) and
        zero the pruned slices of the weights."""
        for variable, mask in self.pruned_weights:
            value = keep.get(id(variable))
            value = np.ones(tuple(mask.shape), bool) if value is None else np.asarray(value, bool)
            self.set_mask(variable, mask, value)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "importance": self.importance,
                "global_ranking": self.global_ranking,
                "round_to": self.round_to,
                "ratio": self.ratio,
            }
        )
        return config
