"""The public surface and the examples in its docstrings."""

import doctest
import importlib
import importlib.util
import pathlib

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
    "prune_oneshot",
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


NAMESPACES = {
    "sparsity": TFMOT_NAMES - {"PrunableLayer"} | {"PruneLowMagnitude", "update_masks", "check_sparsity_m_by_n"},
    "registry": {"register_layer", "ChannelSpec", "PrunableLayer", "LayerRule", "PrunableWeight", "QuantizeSpec"},
    "dependency": {"ChannelGraph", "ChannelGroup", "ChannelPlan"},
    "criteria": {"BNScaleRegularizer", "WEIGHT_CRITERIA", "DATA_CRITERIA", "get"},
    "channels": {"PruneChannels", "plan_channels", "mask_channels", "remove_channels",
                 "prune_channels", "channel_sparsity"},
    "methods": {"reconstruct", "prune_and_reconstruct", "prune_layerwise", "fine_tuner", "distiller",
                "structure_selection", "StructureSparsity", "BranchScale", "ResidualBranch", "residual_branches",
                "remove_branches", "branch_scales"},
    "search": {"Budget", "SearchOptions", "SearchSpace", "SearchResult", "SensitivityResult", "LatencyTable",
               "MacsTimer", "match_latency", "uniform", "accuracy", "negative_loss", "sensitivity", "netadapt",
               "simulated_annealing", "ADMM", "admm", "amc", "auto_compress"},
    "llm": {"prune_oneshot", "keep_zeros", "OneShotReport", "LayerReport"},
    "export": {"export_tflite", "ExportReport", "evaluate_tflite", "TFLiteEvaluation"},
    "quantization": {"quantize_model", "quantize_annotate_layer", "quantize_annotate_model", "quantize_apply",
                     "quantize_scope", "is_quantize_aware", "QuantizeConfig", "QuantizeWrapper", "QuantizeLayer",
                     "QuantizeAnnotate", "QuantizeScheme", "QuantizeRegistry", "Default8BitQuantizeScheme",
                     "Default8BitQuantizeRegistry", "Default8BitQuantizeConfig",
                     "Default8BitPrunePreserveQuantizeScheme", "quantizers"},
    "stats": {"summary", "ModelSummary", "LayerStats", "count_macs", "count_params", "layer_stats", "tflite_stats"},
    "transformers": {"Block", "BlockPlan", "block_importance", "mask_blocks", "plan_blocks", "remove_blocks",
                     "transformer_blocks"} | ({"PrunedBertBackbone", "PrunedDistilBertBackbone",
                                               "PrunedGPT2Backbone", "PrunedGPT2CausalLM",
                                               "PrunedGemma3Backbone", "PrunedGemmaBackbone",
                                               "PrunedLlama3Backbone", "PrunedQwen3Backbone",
                                               "PrunedMistralBackbone", "PrunedPhi3Backbone", "PrunedQwenBackbone",
                                               "rebuild_backbone", "rebuild_task"}
                                              if importlib.util.find_spec("keras_hub") else set()),
}


@pytest.mark.parametrize("namespace", sorted(NAMESPACES))
def test_public_namespaces(namespace):
    """optax-style namespaces: `kprune.search.uniform`, `kprune.sparsity.prune_low_magnitude`, ..."""
    module = importlib.import_module(f"kprune.{namespace}")
    assert set(module.__all__) == NAMESPACES[namespace]
    for name in module.__all__:
        obj = getattr(module, name)
        if name in kprune.__all__:
            assert obj is getattr(kprune, name), name  # one object, two doors
        if callable(obj):
            assert obj.__doc__ and obj.__doc__.strip(), f"kprune.{namespace}.{name}"


def test_names_documented_elsewhere_are_importable_from_the_namespaces_users_expect():
    assert kprune.sparsity.PrunableLayer is kprune.PrunableLayer  # tfmot's sparsity.keras.PrunableLayer
    assert kprune.channels.ChannelPlan is kprune.ChannelPlan


def test_every_top_level_name_is_in_a_namespace():
    homes = set().union(*NAMESPACES.values())
    assert set(kprune.__all__) <= homes, sorted(set(kprune.__all__) - homes)


PACKAGE = pathlib.Path(kprune.__file__).parent
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)
    for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"
)
# Modules whose docstrings run no example: the command-line entry points and the
# private readers of Keras' and LiteRT's internals (their callers' examples run them).
NO_EXAMPLES = {"kprune.__main__", "kprune.export.worker", "kprune.cli.main", "kprune._internal.litert_interpreter"}


@pytest.mark.parametrize("module", [m for m in MODULES if m not in NO_EXAMPLES])
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0, f"{module} has no example in its docstrings"
