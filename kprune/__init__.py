"""kprune: pruning and compression for Keras 3 / TensorFlow.

The training-time sparsity API mirrors `tfmot.sparsity.keras`: a tfmot user
migrates by replacing `tfmot.sparsity.keras` with `kprune`.
"""

__version__ = "0.1.0"

from kprune.utils.native_logs import import_tensorflow_quietly_for_command

import_tensorflow_quietly_for_command()  # the `kprune` command: before keras imports it

from kprune.search.algorithms.admm import ADMM
from kprune.search.algorithms.admm import admm
from kprune.search.algorithms.amc import amc
from kprune.search.algorithms.annealing import simulated_annealing
from kprune.search.algorithms.auto_compress import auto_compress
from kprune.search.budget import Budget
from kprune.sparsity.pruning_callbacks import PruningSummaries
from kprune.dependency.channel_plan import ChannelPlan
from kprune.channels.oneshot import mask_channels
from kprune.channels.oneshot import plan_channels
from kprune.channels.oneshot import remove_channels
from kprune.sparsity.pruning_callbacks import UpdatePruningStep
from kprune.registry.rules import ChannelSpec
from kprune.registry.rules import PrunableLayer
from kprune.registry.registration import register_layer
from kprune.methods.distillation import distiller
from kprune.export.exporter import ExportReport
from kprune.export.exporter import export_tflite
from kprune.export.evaluate import TFLiteEvaluation
from kprune.export.evaluate import evaluate_tflite
from kprune.criteria.importance import BNScaleRegularizer
from kprune.sparsity.pruning_policy import PruneForLatencyOnXNNPack
from kprune.sparsity.pruning_policy import PruningPolicy
from kprune.search.latency_table import LatencyTable
from kprune.search.latency_check import match_latency
from kprune.methods.layerwise import fine_tuner
from kprune.methods.layerwise import prune_layerwise
from kprune.search.algorithms.netadapt import netadapt
from kprune.sparsity.prune import prune_low_magnitude
from kprune.sparsity.prune import prune_scope
from kprune.methods.reconstruction import prune_and_reconstruct
from kprune.methods.reconstruction import reconstruct
from kprune.sparsity.prune import strip_pruning
from kprune.sparsity.update import update_masks
from kprune.sparsity.pruning_schedule import ConstantSparsity
from kprune.sparsity.pruning_schedule import PolynomialDecay
from kprune.sparsity.pruning_schedule import PruningSchedule
from kprune.sparsity.sparsity_check import check_sparsity_m_by_n
from kprune.search.driver import SearchResult
from kprune.search.algorithms.sensitivity import SensitivityResult
from kprune.search.algorithms.sensitivity import sensitivity
from kprune.search.space import SearchSpace
from kprune.channels.gradual import channel_sparsity
from kprune.channels.gradual import prune_channels
from kprune.stats.keras_stats import count_macs
from kprune.methods.structure_selection import BranchScale
from kprune.methods.structure_selection import ResidualBranch
from kprune.methods.structure_selection import StructureSparsity
from kprune.methods.structure_selection import branch_scales
from kprune.methods.structure_selection import remove_branches
from kprune.methods.structure_selection import residual_branches
from kprune.methods.structure_selection import structure_selection
from kprune.stats.keras_stats import ModelSummary
from kprune.stats.keras_stats import count_params
from kprune.stats.keras_stats import summary
from kprune.channels.channel_wrapper import PruneChannels
from kprune.sparsity.pruning_wrapper import PruneLowMagnitude

__all__ = [
    "ADMM",
    "BNScaleRegularizer",
    "BranchScale",
    "Budget",
    "LatencyTable",
    "SearchResult",
    "SearchSpace",
    "SensitivityResult",
    "TFLiteEvaluation",
    "ChannelPlan",
    "ChannelSpec",
    "ExportReport",
    "ModelSummary",
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneChannels",
    "PruneForLatencyOnXNNPack",
    "PruneLowMagnitude",
    "PruningPolicy",
    "PruningSchedule",
    "PruningSummaries",
    "ResidualBranch",
    "StructureSparsity",
    "UpdatePruningStep",
    "admm",
    "amc",
    "auto_compress",
    "branch_scales",
    "channel_sparsity",
    "check_sparsity_m_by_n",
    "count_macs",
    "count_params",
    "distiller",
    "evaluate_tflite",
    "export_tflite",
    "fine_tuner",
    "mask_channels",
    "match_latency",
    "netadapt",
    "plan_channels",
    "prune_channels",
    "prune_and_reconstruct",
    "prune_layerwise",
    "prune_low_magnitude",
    "register_layer",
    "prune_scope",
    "reconstruct",
    "remove_branches",
    "remove_channels",
    "residual_branches",
    "sensitivity",
    "simulated_annealing",
    "strip_pruning",
    "structure_selection",
    "summary",
    "update_masks",
]
