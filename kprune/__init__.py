"""kprune: pruning and compression for Keras 3 (TensorFlow, JAX, PyTorch).

The training-time sparsity API mirrors `tfmot.sparsity.keras`: a tfmot user
migrates by replacing `tfmot.sparsity.keras` with `kprune`, and
`tfmot.quantization.keras` (and `tfmot.experimental.combine`) with
`kprune.quantization`. The names below are the short doors to every
subsystem's public namespace, each a subpackage with its own `__all__`:
`kprune.sparsity` (tfmot's API), `kprune.registry`, `kprune.dependency`,
`kprune.criteria`, `kprune.channels`, `kprune.methods`, `kprune.search`,
`kprune.export` and `kprune.stats` (`kprune.prune_low_magnitude is
kprune.sparsity.prune_low_magnitude`); quantization-aware training is in
`kprune.quantization` only, as tfmot keeps it apart, and transformers made
smaller (KerasHub's rebuilt classes, depth pruning) in `kprune.transformers`.
"""

__version__ = "0.1.0"

from kprune.utils.native_logs import import_tensorflow_quietly_for_command

import_tensorflow_quietly_for_command()  # the `kprune` command: before keras imports it

from kprune.channels.channel_wrapper import PruneChannels
from kprune.channels.gradual import channel_sparsity, prune_channels
from kprune.channels.oneshot import mask_channels, plan_channels, remove_channels
from kprune.criteria.regularizers import BNScaleRegularizer
from kprune.dependency.channel_plan import ChannelPlan
from kprune.export.evaluate import TFLiteEvaluation, evaluate_tflite
from kprune.export.exporter import export_tflite
from kprune.export.report import ExportReport
from kprune.llm.oneshot import prune_oneshot
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

# tfmot.quantization.keras's namespace. Imported where kprune.quantization sorts, as before; isort would move
# `from kprune import` lines first.
from kprune import quantization  # noqa: F401  # isort: skip
from kprune.registry.registration import register_layer
from kprune.registry.rules import ChannelSpec, PrunableLayer
from kprune.search.algorithms.admm import ADMM, admm
from kprune.search.algorithms.amc import amc
from kprune.search.algorithms.annealing import simulated_annealing
from kprune.search.algorithms.auto_compress import auto_compress
from kprune.search.algorithms.netadapt import netadapt
from kprune.search.algorithms.sensitivity import SensitivityResult, sensitivity
from kprune.search.budget import Budget
from kprune.search.latency_check import match_latency
from kprune.search.latency_table import LatencyTable
from kprune.search.result import SearchResult
from kprune.search.space import SearchSpace
from kprune.sparsity.prune import prune_low_magnitude, prune_scope, strip_pruning
from kprune.sparsity.pruning_callbacks import PruningSummaries, UpdatePruningStep
from kprune.sparsity.pruning_policy import PruneForLatencyOnXNNPack, PruningPolicy
from kprune.sparsity.pruning_schedule import ConstantSparsity, PolynomialDecay, PruningSchedule
from kprune.sparsity.pruning_wrapper import PruneLowMagnitude
from kprune.sparsity.sparsity_check import check_sparsity_m_by_n
from kprune.sparsity.update import update_masks
from kprune.stats.keras_stats import count_macs, count_params
from kprune.stats.records import ModelSummary
from kprune.stats.summaries import summary

# Registers kprune's KerasHub builders and backbone classes. Imported last, as before (not isort's order).
from kprune import transformers  # noqa: F401  # isort: skip

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
    "prune_oneshot",
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
