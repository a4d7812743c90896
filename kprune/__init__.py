"""kprune: pruning and compression for Keras 3 / TensorFlow.

The training-time sparsity API mirrors `tfmot.sparsity.keras`: a tfmot user
migrates by replacing `tfmot.sparsity.keras` with `kprune`.
"""

__version__ = "0.1.0"

from kprune.native_logs import import_tensorflow_quietly_for_command

import_tensorflow_quietly_for_command()  # the `kprune` command: before keras imports it

from kprune.admm import ADMM
from kprune.admm import admm
from kprune.amc import amc
from kprune.annealing import simulated_annealing
from kprune.auto_compress import auto_compress
from kprune.budget import Budget
from kprune.callbacks import PruningSummaries
from kprune.channel_plan import ChannelPlan
from kprune.channels import mask_channels
from kprune.channels import plan_channels
from kprune.channels import remove_channels
from kprune.callbacks import UpdatePruningStep
from kprune.rules import ChannelSpec
from kprune.rules import PrunableLayer
from kprune.registration import register_layer
from kprune.distill import distiller
from kprune.export import ExportReport
from kprune.export import export_tflite
from kprune.tflite_eval import TFLiteEvaluation
from kprune.tflite_eval import evaluate_tflite
from kprune.importance import BNScaleRegularizer
from kprune.policy import PruneForLatencyOnXNNPack
from kprune.policy import PruningPolicy
from kprune.latency import LatencyTable
from kprune.latency_check import match_latency
from kprune.layerwise import fine_tuner
from kprune.layerwise import prune_layerwise
from kprune.netadapt import netadapt
from kprune.pruning import prune_low_magnitude
from kprune.pruning import prune_scope
from kprune.reconstruction import prune_and_reconstruct
from kprune.reconstruction import reconstruct
from kprune.pruning import strip_pruning
from kprune.update import update_masks
from kprune.schedules import ConstantSparsity
from kprune.schedules import PolynomialDecay
from kprune.schedules import PruningSchedule
from kprune.sparsity_check import check_sparsity_m_by_n
from kprune.search import SearchResult
from kprune.sensitivity import SensitivityResult
from kprune.sensitivity import sensitivity
from kprune.space import SearchSpace
from kprune.structured import channel_sparsity
from kprune.structured import prune_channels
from kprune.stats import count_macs
from kprune.branches import BranchScale
from kprune.branches import ResidualBranch
from kprune.branches import StructureSparsity
from kprune.branches import branch_scales
from kprune.branches import remove_branches
from kprune.branches import residual_branches
from kprune.branches import structure_selection
from kprune.stats import ModelSummary
from kprune.stats import count_params
from kprune.stats import summary
from kprune.channel_wrapper import PruneChannels
from kprune.wrapper import PruneLowMagnitude

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
