"""The public surface and the examples in its docstrings."""

import doctest
import importlib

import pytest

import kprune

PUBLIC = {
    "BNScaleRegularizer",
    "ChannelPlan",
    "mask_channels",
    "plan_channels",
    "remove_channels",
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
    "PruneChannels",
    "prune_channels",
    "channel_sparsity",
    "count_macs",
    "count_params",
    "distiller",
    "export_tflite",
    "ExportReport",
    "evaluate_tflite",
    "TFLiteEvaluation",
    "summary",
    "ModelSummary",
    "register_layer",
    "ChannelSpec",
    "PruningPolicy",
    "PruneForLatencyOnXNNPack",
    "prune_scope",
    "check_sparsity_m_by_n",
    "reconstruct",
    "prune_and_reconstruct",
    "prune_layerwise",
    "fine_tuner",
    "structure_selection",
    "StructureSparsity",
    "BranchScale",
    "ResidualBranch",
    "residual_branches",
    "remove_branches",
    "branch_scales",
    "Budget",
    "LatencyTable",
    "SearchResult",
    "SearchSpace",
    "SensitivityResult",
    "netadapt",
    "sensitivity",
    "simulated_annealing",
    "ADMM",
    "admm",
    "amc",
    "auto_compress",
    "match_latency",
}

TFMOT_NAMES = {
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunableLayer",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "prune_low_magnitude",
    "strip_pruning",
    "PruningPolicy",
    "PruneForLatencyOnXNNPack",
    "prune_scope",
}


def test_public_surface():
    assert set(kprune.__all__) >= PUBLIC
    for name in kprune.__all__:
        obj = getattr(kprune, name)
        assert obj.__doc__ and obj.__doc__.strip(), name
    assert TFMOT_NAMES <= set(kprune.__all__)


MODULES = [
    "schedules", "masks", "mask_ops", "device_selection", "handlers", "wrapper", "pruning", "callbacks",
    "graph", "importance", "channels", "structured", "stats", "litert", "distill", "export",
    "rules", "registration", "op_rules", "kgraph", "einsum", "tables", "verify", "convert",
    "native_logs", "backends", "tf_convert",
    "policy", "sparsity_check", "channel_wrapper", "schedule_table",
    "channel_selection", "sampling", "selection_criteria", "hessian", "reconstruction", "branches",
    "layerwise",
    "config_list", "space", "budget", "latency", "latency_check", "atomic", "search", "search_result", "progress",
    "evaluation", "sensitivity",
    "netadapt", "annealing", "rescale", "admm", "admm_sets", "ddpg", "amc", "auto_compress",
    "channel_plan", "export_prepare", "in_place", "selection", "update", "tflite_names",
    "tflite_eval",
]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    mod = importlib.import_module(f"kprune.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0
