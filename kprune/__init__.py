"""kprune: pruning and compression for Keras 3 / TensorFlow.

The training-time sparsity API mirrors `tfmot.sparsity.keras`: a tfmot user
migrates by replacing `tfmot.sparsity.keras` with `kprune`.
"""

__version__ = "0.1.0"

from kprune.callbacks import PruningSummaries
from kprune.callbacks import UpdatePruningStep
from kprune.handlers import PrunableLayer
from kprune.pruning import prune_low_magnitude
from kprune.pruning import strip_pruning
from kprune.pruning import update_masks
from kprune.schedules import ConstantSparsity
from kprune.schedules import PolynomialDecay
from kprune.schedules import PruningSchedule
from kprune.wrapper import PruneLowMagnitude

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneLowMagnitude",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "prune_low_magnitude",
    "strip_pruning",
    "update_masks",
]
