"""Rebuilding a KerasHub backbone or task with pruned weights: the smaller model.

`rebuild_backbone(backbone, values_of, blocks)` is the builder kprune
registers for KerasHub's backbones (`kprune.registry.model_builders.register_model_builder`):
`kprune.mask_channels` and `kprune.remove_channels` call it with each
variable's new array, `kprune.transformers.remove_blocks` with the blocks to
keep. It reads every kept block's widths from the arrays
(`kprune.transformers.widths`) and returns

* the same backbone class with a new config when that config can say the new
  widths: the same widths in every layer, a head size the class either takes
  (`head_dim`: Gemma, Qwen3) or computes right (`hidden_dim // heads` equal
  to the head size: nothing was removed from the heads), and nothing the
  class's `get_config` loses (a tied Llama's `tie_word_embeddings`), and
  the local/global attention pattern of the kept layers where the class
  derives it from the layer index (Gemma);
* otherwise kprune's registered subclass of that family, which takes per-layer
  widths and an explicit `head_dim` (`PrunedLlama3Backbone`, ...).

The new model's variables get the arrays: block `j` of the new model those
of kept block `blocks[j]`, the other variables (embeddings, final norm) in
order; a shape that does not match raises. Tasks (`Llama3CausalLM`, ...) are
rebuilt around their rebuilt backbone with the same preprocessor
(`rebuild_task`).

Example (a Llama 3 whose FFN lost half its units: the stock class again):

>>> import keras_hub
>>> from kprune.transformers.widths import named
>>> backbone = keras_hub.models.Llama3Backbone(vocabulary_size=32, num_layers=2,
...     num_query_heads=4, num_key_value_heads=2, hidden_dim=16, intermediate_dim=8)
>>> halves = {id(v): v.numpy()[..., :4] if "feedforward_gate" in v.path or "intermediate" in v.path
...           else v.numpy()[:4] if "feedforward_output" in v.path else v.numpy() for v in backbone.weights}
>>> small = rebuild_backbone(backbone, lambda v: halves[id(v)])
>>> type(small).__name__, small.intermediate_dim
('Llama3Backbone', 4)
>>> type(rebuild_backbone(backbone, lambda v: halves[id(v)], blocks=[1])).__name__
'Llama3Backbone'
"""

from typing import Callable, NamedTuple

import numpy as np

from kprune.registry.model_builders import register_model_builder
from kprune.transformers import hub_gemma_qwen, hub_gpt2_bert, hub_llama
from kprune.transformers.widths import block_widths, uniform


class Family(NamedTuple):
    """What kprune knows of one KerasHub backbone family.

    Attributes:
        ffn_output: name of the FFN's down projection inside a block.
        stock: `(backbone, widths, kept) -> config or None`: the stock
            class's config for these widths, or None if it cannot say them.
        pruned: `(backbone, widths, kept) -> (class, config)`: kprune's
            subclass and its config.
        pruned_class: kprune's subclass (a model of it is never rebuilt
            with the stock class: their configs differ).
        tasks: `{task class: kprune's task class}` for tasks that cannot
            hold the pruned backbone as they are (GPT-2's cache).
    """

    ffn_output: str
    stock: Callable
    pruned: Callable
    pruned_class: type
    tasks: dict = {}


def _uniform_widths(widths):
    """`(query heads, kv heads, ffn units)` when every layer has the same, else Nones."""
    return tuple(uniform(getattr(w, k) for w in widths) for k in ("query_heads", "kv_heads", "ffn"))


def _one_kv(backbone, widths):
    kv = uniform(w.kv_heads for w in widths)
    if kv is None:
        raise ValueError(
            f"The pruned layers of backbone '{backbone.name}' keep different numbers of key/value "
            f"heads ({[w.kv_heads for w in widths]}); KerasHub's causal LMs keep one KV cache for every "
            "layer, so they must keep the same. Prune key/value groups with local ranking "
            "(global_ranking=False) or prune query heads (heads='query')."
        )
    return kv


def _base(backbone, names):
    config = {name: getattr(backbone, name) for name in names}
    config.update(name=backbone.name, trainable=backbone.trainable, dtype=backbone.dtype_policy.name,
                  vocabulary_size=backbone.vocabulary_size, hidden_dim=backbone.hidden_dim)
    return config


def _stock_config(backbone, family, widths, kept, **keys):
    """The stock config with `keys` set, or None for a kprune subclass."""
    if isinstance(backbone, family.pruned_class):
        return None
    return {**backbone.get_config(), "num_layers": len(kept), **keys}


def _llama_stock(backbone, widths, kept):
    q, kv, ffn = _uniform_widths(widths)
    if None in (q, kv, ffn) or backbone.hidden_dim // q != widths[0].head_dim or backbone.token_embedding.tie_weights:
        return None
    return _stock_config(backbone, LLAMA, widths, kept, num_query_heads=q, num_key_value_heads=kv,
                         intermediate_dim=ffn)


def _llama_pruned(backbone, widths, kept):
    config = _base(backbone, (
        "rope_max_wavelength", "rope_position_scaling_factor", "rope_frequency_adjustment_factor",
        "rope_low_freq_factor", "rope_high_freq_factor", "rope_pretraining_sequence_length",
        "layer_norm_epsilon", "dropout"))
    config.update(head_dim=widths[0].head_dim, num_key_value_heads=_one_kv(backbone, widths),
                  layer_query_heads=[w.query_heads for w in widths],
                  layer_intermediate_dims=[w.ffn for w in widths],
                  tie_word_embeddings=bool(backbone.token_embedding.tie_weights))
    return hub_llama.PrunedLlama3Backbone, config


def _sliding(backbone, kept):
    """Whether each kept Gemma layer attends locally, and the stock pattern for as many layers."""
    flags = [bool(backbone.transformer_layers[i].use_sliding_window_attention) for i in kept]
    stock = [bool(backbone.use_sliding_window_attention) and j % 2 == 0 for j in range(len(kept))]
    return flags, stock


def _gemma_stock(backbone, widths, kept):
    q, kv, ffn = _uniform_widths(widths)
    flags, stock = _sliding(backbone, kept)
    if None in (q, kv, ffn) or flags != stock:
        return None
    return _stock_config(backbone, GEMMA, widths, kept, num_query_heads=q, num_key_value_heads=kv,
                         intermediate_dim=2 * ffn)


def _gemma_pruned(backbone, widths, kept):
    config = _base(backbone, (
        "head_dim", "layer_norm_epsilon", "dropout", "query_head_dim_normalize", "use_post_ffw_norm",
        "use_post_attention_norm", "attention_logit_soft_cap", "final_logit_soft_cap", "sliding_window_size"))
    config.update(num_key_value_heads=_one_kv(backbone, widths),
                  layer_query_heads=[w.query_heads for w in widths],
                  layer_intermediate_dims=[2 * w.ffn for w in widths],
                  layer_sliding_window=_sliding(backbone, kept)[0])
    return hub_gemma_qwen.PrunedGemmaBackbone, config


def _qwen3_stock(backbone, widths, kept):
    q, kv, ffn = _uniform_widths(widths)
    if None in (q, kv, ffn):
        return None
    return _stock_config(backbone, QWEN3, widths, kept, num_query_heads=q, num_key_value_heads=kv,
                         intermediate_dim=ffn)


def _qwen3_pruned(backbone, widths, kept):
    config = _base(backbone, ("head_dim", "rope_max_wavelength", "rope_scaling_factor", "layer_norm_epsilon",
                              "dropout", "sliding_window_size"))
    config.update(num_key_value_heads=_one_kv(backbone, widths),
                  layer_query_heads=[w.query_heads for w in widths],
                  layer_intermediate_dims=[w.ffn for w in widths],
                  tie_word_embeddings=bool(backbone.token_embedding.tie_weights))
    return hub_gemma_qwen.PrunedQwen3Backbone, config


def _mha_stock(family):
    """GPT-2 and BERT: one head count, with `hidden_dim // heads` the head size."""
    def stock(backbone, widths, kept):
        q, _, ffn = _uniform_widths(widths)
        if None in (q, ffn) or backbone.hidden_dim // q != widths[0].head_dim:
            return None
        return _stock_config(backbone, family(), widths, kept, num_heads=q, intermediate_dim=ffn)
    return stock


def _mha_pruned(cls, names):
    def pruned(backbone, widths, kept):
        config = _base(backbone, names)
        config.update(head_dim=widths[0].head_dim, layer_heads=[w.query_heads for w in widths],
                      layer_intermediate_dims=[w.ffn for w in widths])
        return cls, config
    return pruned


LLAMA = Family("feedforward_output_dense", _llama_stock, _llama_pruned, hub_llama.PrunedLlama3Backbone)
GEMMA = Family("ffw_linear", _gemma_stock, _gemma_pruned, hub_gemma_qwen.PrunedGemmaBackbone)
QWEN3 = Family("feedforward_output_dense", _qwen3_stock, _qwen3_pruned, hub_gemma_qwen.PrunedQwen3Backbone)
GPT2 = Family("feedforward_output_dense", _mha_stock(lambda: GPT2),
              _mha_pruned(hub_gpt2_bert.PrunedGPT2Backbone, ("dropout", "max_sequence_length")),
              hub_gpt2_bert.PrunedGPT2Backbone,
              {"keras_hub.src.models.gpt2.gpt2_causal_lm.GPT2CausalLM": hub_gpt2_bert.PrunedGPT2CausalLM})
BERT = Family("feedforward_output_dense", _mha_stock(lambda: BERT),
              _mha_pruned(hub_gpt2_bert.PrunedBertBackbone, ("dropout", "max_sequence_length", "num_segments")),
              hub_gpt2_bert.PrunedBertBackbone)

_MODELS = "keras_hub.src.models."

# Qualified class name -> its family (the nearest one in the class's MRO).
FAMILIES = {
    _MODELS + "llama.llama_backbone.LlamaBackbone": LLAMA,
    _MODELS + "gemma.gemma_backbone.GemmaBackbone": GEMMA,
    _MODELS + "qwen3.qwen3_backbone.Qwen3Backbone": QWEN3,
    _MODELS + "gpt2.gpt2_backbone.GPT2Backbone": GPT2,
    _MODELS + "bert.bert_backbone.BertBackbone": BERT,
}


def family_of(model):
    for cls in type(model).__mro__:
        family = FAMILIES.get(f"{cls.__module__}.{cls.__qualname__}")
        if family is not None:
            return family
    return None


def _kept(backbone, blocks):
    count = len(backbone.transformer_layers)
    kept = list(range(count)) if blocks is None else sorted(int(b) for b in blocks)
    if not kept or kept[0] < 0 or kept[-1] >= count or len(set(kept)) != len(kept):
        raise ValueError(
            f"Argument `blocks` must name distinct blocks among the {count} of backbone "
            f"'{backbone.name}' (at least one). Received: blocks={blocks!r}"
        )
    return kept


def rebuild_backbone(backbone, values_of, blocks=None):
    """A backbone like `backbone` holding `values_of(variable)` for each of its
    variables, with the blocks at indices `blocks` (all when None); see the
    module docstring for the class it is."""
    family = family_of(backbone)
    if family is None:
        raise ValueError(
            f"kprune cannot rebuild backbone '{backbone.name}' ({type(backbone).__name__}) smaller: "
            f"it knows {sorted(name.rsplit('.', 1)[1] for name in FAMILIES)}."
        )
    kept = _kept(backbone, blocks)
    widths = [block_widths(backbone.transformer_layers[i], values_of, family.ffn_output) for i in kept]
    config = family.stock(backbone, widths, kept)
    if config is not None:
        new = type(backbone).from_config(config)
    else:
        cls, config = family.pruned(backbone, widths, kept)
        new = cls.from_config(config)
    assign(backbone, new, values_of, kept)
    return new


def assign(old, new, values_of, kept):
    """Give `new`'s variables the arrays of `old`'s: block `j` those of block
    `kept[j]`, the variables outside the blocks in order."""
    pairs = []
    for j, i in enumerate(kept):
        pairs += _pairs(old.transformer_layers[i].weights, new.transformer_layers[j].weights, old)
    inside_old = {id(v) for b in old.transformer_layers for v in b.weights}
    inside_new = {id(v) for b in new.transformer_layers for v in b.weights}
    pairs += _pairs([v for v in old.weights if id(v) not in inside_old],
                    [v for v in new.weights if id(v) not in inside_new], old)
    for source, target in pairs:
        value = np.asarray(values_of(source))
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(
                f"Rebuilding '{old.name}': variable '{source.path}' would get an array of shape "
                f"{tuple(value.shape)}, but the rebuilt model's '{target.path}' has shape "
                f"{tuple(target.shape)}."
            )
        target.assign(value)


def _pairs(old, new, model):
    if len(old) != len(new):
        raise ValueError(
            f"Rebuilding '{model.name}': {len(old)} variables to copy, but the rebuilt model has "
            f"{len(new)} in their place."
        )
    return list(zip(old, new))


def rebuild_task(task, values_of, blocks=None):
    """A task like `task` around `rebuild_backbone(task.backbone, ...)`, with
    the same preprocessor; its other variables (a classifier's head) get
    `values_of` too."""
    backbone = rebuild_backbone(task.backbone, values_of, blocks)
    config = task.get_config()
    config.update(backbone=backbone, preprocessor=task.preprocessor)
    cls = type(task)
    family = family_of(task.backbone)
    if isinstance(backbone, family.pruned_class):
        cls = family.tasks.get(f"{cls.__module__}.{cls.__qualname__}", cls)
    new = cls.from_config(config)
    inside_old = {id(v) for v in task.backbone.weights}
    inside_new = {id(v) for v in backbone.weights}
    for source, target in _pairs([v for v in task.weights if id(v) not in inside_old],
                                 [v for v in new.weights if id(v) not in inside_new], task):
        target.assign(np.asarray(values_of(source)))
    return new


def _task_builder(task, values_of, blocks=None):
    """The builder registered for KerasHub tasks: None (clone it) when kprune
    does not know its backbone's family."""
    if family_of(task.backbone) is None:
        return None
    return rebuild_task(task, values_of, blocks)


def _backbone_builder(backbone, values_of, blocks=None):
    return rebuild_backbone(backbone, values_of, blocks)


def register_builders():
    """Register the builders of the KerasHub families kprune knows, and of tasks."""
    for name in FAMILIES:
        register_model_builder(name, _backbone_builder)
    register_model_builder(_MODELS + "task.Task", _task_builder)


register_builders()
