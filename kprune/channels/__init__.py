"""Structured channel pruning: plan which channels go, zero them, remove them.

`oneshot` (`plan_channels`, `mask_channels`, `remove_channels`: a plan from
a criterion, applied as zeros or as a smaller model) over `planning` (scores
to a plan), `apply_plan` (the masked or smaller model) and `compensation`
(FLAP's bias compensation), `gradual`
(`prune_channels`: channels pruned on a schedule during `fit`),
`channel_wrapper` (`PruneChannels`, the wrapper `prune_channels` puts on
each layer of a group), `channel_masks` (the whole model's channel choice at
each pruning turn) and `config_list` (NNI's `config_list` vocabulary).

May import: every subpackage up to `kprune.criteria`.
"""

from kprune.channels.channel_wrapper import PruneChannels
from kprune.channels.gradual import channel_sparsity, prune_channels
from kprune.channels.oneshot import mask_channels, plan_channels, remove_channels
from kprune.dependency.channel_plan import ChannelPlan as ChannelPlan  # documented in kprune.dependency

__all__ = [
    "PruneChannels",
    "channel_sparsity",
    "mask_channels",
    "plan_channels",
    "prune_channels",
    "remove_channels",
]
