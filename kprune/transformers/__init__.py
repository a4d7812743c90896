"""Transformers made smaller: KerasHub backbones rebuilt with fewer heads, FFN units and blocks.

The verbs are kprune's own: `kprune.plan_channels`, `kprune.mask_channels`
and `kprune.remove_channels` take a KerasHub backbone or task (attention
heads, key/value groups and FFN units are groups of the channel graph,
`kprune.dependency.channel_graph`). This subpackage holds what is particular
to KerasHub and to depth:

* `hub_rebuild`: the builder that turns pruned arrays into a smaller KerasHub
  model -- the stock class with a new config where it can say the new widths,
  else kprune's registered subclass with per-layer widths and an explicit
  `head_dim` (`hub_llama`: `PrunedLlama3Backbone`, ...) -- registered with
  `kprune.registry.model_builders.register_model_builder` when KerasHub is installed
  (Llama/Llama 3, Gemma, Gemma 3, Qwen3, Mistral, Qwen2, Phi-3, GPT-2,
  BERT, DistilBERT; `hub_llama`, `hub_gemma_qwen`, `hub_gemma3_distilbert`,
  `hub_mistral_qwen2`, `hub_phi3`, `hub_gpt2_bert` hold the subclasses);
* `head_size`: KerasHub attention layers with a given head size
  (`gqa_projections`, the decoder mixin `GivenHeadDim`);
* `family`: what kprune knows of one KerasHub family (`Family`: its stock
  config maker and its subclass's), declared by each `hub_*` module;
* `widths`: a block's widths read from its pruned weights;
* depth: `blocks` (a model's transformer blocks), `block_scores`
  (`plan_blocks`, Block Influence and angular distance), `depth`
  (`BlockPlan`, `mask_blocks`, `remove_blocks`).

May import: every subpackage up to `kprune.methods`.
"""

import importlib.util

from kprune.transformers.block_scores import block_importance, plan_blocks
from kprune.transformers.blocks import Block, transformer_blocks
from kprune.transformers.depth import BlockPlan, mask_blocks, remove_blocks

__all__ = [
    "Block",
    "BlockPlan",
    "block_importance",
    "mask_blocks",
    "plan_blocks",
    "remove_blocks",
    "transformer_blocks",
]

if importlib.util.find_spec("keras_hub") is not None:
    # KerasHub is optional: its models' builders and kprune's backbone
    # classes (registered with Keras for `from_preset`) exist when it is installed.
    from kprune.transformers.hub_gemma3_distilbert import PrunedDistilBertBackbone, PrunedGemma3Backbone
    from kprune.transformers.hub_gemma_qwen import PrunedGemmaBackbone, PrunedQwen3Backbone
    from kprune.transformers.hub_gpt2_bert import PrunedBertBackbone, PrunedGPT2Backbone, PrunedGPT2CausalLM
    from kprune.transformers.hub_llama import PrunedLlama3Backbone
    from kprune.transformers.hub_mistral_qwen2 import PrunedMistralBackbone, PrunedQwenBackbone
    from kprune.transformers.hub_phi3 import PrunedPhi3Backbone
    from kprune.transformers.hub_rebuild import rebuild_backbone, rebuild_task

    __all__ += [
        "PrunedBertBackbone",
        "PrunedDistilBertBackbone",
        "PrunedGPT2Backbone",
        "PrunedGPT2CausalLM",
        "PrunedGemma3Backbone",
        "PrunedGemmaBackbone",
        "PrunedLlama3Backbone",
        "PrunedMistralBackbone",
        "PrunedPhi3Backbone",
        "PrunedQwen3Backbone",
        "PrunedQwenBackbone",
        "rebuild_backbone",
        "rebuild_task",
    ]
