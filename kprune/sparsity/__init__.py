"""Training-time sparsity with tfmot's API: `kprune.sparsity` is `tfmot.sparsity.keras`.

File names follow tfmot's: `prune` (`prune_low_magnitude`, `strip_pruning`,
`prune_scope`, the cloning they use), `pruning_wrapper`
(`PruneLowMagnitude` and the mask holders' base classes), `pruning_schedule`
(`ConstantSparsity`, `PolynomialDecay`, `PruningSchedule`),
`pruning_callbacks` (`UpdatePruningStep`, `PruningSummaries`),
`pruning_policy` (`PruningPolicy`, `PruneForLatencyOnXNNPack`). Around them:
pure mask math (`mask_math`: magnitude, blocks, M:N), exact selection of the
smallest magnitudes on the host (`smallest`) and on the device
(`smallest_device`), masks applied to tensors and variables (`masking`),
pruning in place of models kprune cannot clone (`in_place`), `update_masks`
(`update`), evaluating schedules over many steps (`schedule_table`) and the
M:N check of the 2:4 guide (`sparsity_check`).

Masks chosen for the whole model at once (channel groups) are driven through
the holder class's `model_level` protocol (`pruning_wrapper.MaskedWeights`),
so the callbacks never import `kprune.channels`.

May import: `kprune._internal`, `kprune.utils`, `kprune.registry`, `kprune.litert`.
"""

from kprune.registry.rules import PrunableLayer as PrunableLayer  # documented in kprune.registry
from kprune.sparsity.prune import prune_low_magnitude, prune_scope, strip_pruning
from kprune.sparsity.pruning_callbacks import PruningSummaries, UpdatePruningStep
from kprune.sparsity.pruning_policy import PruneForLatencyOnXNNPack, PruningPolicy
from kprune.sparsity.pruning_schedule import ConstantSparsity, PolynomialDecay, PruningSchedule
from kprune.sparsity.pruning_wrapper import PruneLowMagnitude
from kprune.sparsity.sparsity_check import check_sparsity_m_by_n
from kprune.sparsity.update import update_masks

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PruneForLatencyOnXNNPack",
    "PruneLowMagnitude",
    "PruningPolicy",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "check_sparsity_m_by_n",
    "prune_low_magnitude",
    "prune_scope",
    "strip_pruning",
    "update_masks",
]
