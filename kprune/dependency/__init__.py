"""The channel dependency graph: which channels of a model must be pruned together.

`channel_graph` walks a Sequential or Functional model (nested models and
`keras.ops` nodes included) and groups coupled channels, as Torch-Pruning's
DepGraph does: pruning channel i of a producer forces input i of every layer
that reads it, through BatchNormalization, activations, concatenations and
residual adds (an Add couples its branches into one group). `channel_plan`
holds `ChannelPlan`, which channels of which group go, as plain data that can
be saved and replayed.

May import: `kprune._internal`, `kprune.utils`, `kprune.registry`,
`kprune.litert`, `kprune.sparsity`, `kprune.stats`.
"""

from kprune.dependency.channel_graph import ChannelGraph
from kprune.dependency.channel_plan import ChannelPlan
from kprune.dependency.unit_space import ChannelGroup

__all__ = [
    "ChannelGraph",
    "ChannelGroup",
    "ChannelPlan",
]
