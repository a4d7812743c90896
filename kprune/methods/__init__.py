"""Pruning methods built on channel plans: reconstruction, layer by layer, SSS, distillation.

`reconstruction` (least-squares refit of the layers that read pruned
channels: ThiNet's and He et al.'s step), `layerwise` (the papers' procedure:
prune one group, fine-tune, go on), `fine_tune` (the fine-tuning step those
call), `branch_selection` (Sparse Structure Selection: learn which
residual blocks to drop) and `distillation` (fine-tune a pruned student from
its dense teacher with `keras.distillation`).

May import: every subpackage up to `kprune.channels`.
"""

from kprune.methods.branch_selection import (
    BranchScale,
    ResidualBranch,
    StructureSparsity,
    branch_scales,
    remove_branches,
    residual_branches,
    structure_selection,
)
from kprune.methods.distillation import distiller
from kprune.methods.fine_tune import fine_tuner
from kprune.methods.layerwise import prune_layerwise
from kprune.methods.reconstruction import prune_and_reconstruct, reconstruct

__all__ = [
    "BranchScale",
    "ResidualBranch",
    "StructureSparsity",
    "branch_scales",
    "distiller",
    "fine_tuner",
    "prune_and_reconstruct",
    "prune_layerwise",
    "reconstruct",
    "remove_branches",
    "residual_branches",
    "structure_selection",
]
