"""kprune: pruning and compression for Keras 3 / TensorFlow.

The training-time sparsity API mirrors `tfmot.sparsity.keras`: a tfmot user
migrates by replacing `tfmot.sparsity.keras` with `kprune`.
"""

__version__ = "0.1.0"

from kprune.annealing import simulated_annealing
from kprune.budget import Budget
from kprune.callbacks import PruningSummaries
from kprune.channels import ChannelPlan
from kprune.channels import mask_channels
from kprune.channels import plan_channels
from kprune.channels import remove_channels
from kprune.callbacks import UpdatePruningStep
from kprune.handlers import PrunableLayer
from kprune.distill import distiller
from kprune.export import ExportReport
from kprune.export import export_tflite
from kprune.importance import BNScaleRegularizer
from kprune.latency import LatencyTable
from kprune.netadapt import netadapt
from kprune.pruning import prune_low_magnitude
from kprune.pruning import strip_pruning
from kprune.pruning import update_masks
from kprune.schedules import ConstantSparsity
from kprune.schedules import PolynomialDecay
from kprune.schedules import PruningSchedule
from kprune.search import SearchResult
from kprune.sensitivity import SensitivityResult
from kprune.sensitivity import sensitivity
from kprune.space import SearchSpace
from kprune.structured import channel_sparsity
from kprune.structured import prune_channels
from kprune.stats import count_macs
from kprune.stats import ModelSummary
from kprune.stats import count_params
from kprune.stats import summary
from kprune.wrapper import PruneChannels
from kprune.wrapper import PruneLowMagnitude

__all__ = [
    "BNScaleRegularizer",
    "Budget",
    "LatencyTable",
    "SearchResult",
    "SearchSpace",
    "SensitivityResult",
    "ChannelPlan",
    "ExportReport",
    "ModelSummary",
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneChannels",
    "PruneLowMagnitude",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "channel_sparsity",
    "count_macs",
    "count_params",
    "distiller",
    "export_tflite",
    "mask_channels",
    "netadapt",
    "plan_channels",
    "prune_channels",
    "prune_low_magnitude",
    "remove_channels",
    "sensitivity",
    "simulated_annealing",
    "strip_pruning",
    "summary",
    "update_masks",
]
