"""Rebuilding a KerasHub backbone or task with pruned weights: the smaller model.

`rebuild_backbone(backbone, values_of, blocks)` is the builder kprune
registers for KerasHub's backbones (`kprune.registry.model_builders.register_model_builder`):
`kprune.mask_channels` and `kprune.remove_channels` call it with each
variable's new array, `kprune.transformers.remove_blocks` with the blocks to
keep. It reads every kept block's widths from the arrays
(`kprune.transformers.widths`) and returns

* the same backbone class with a new config when that config can say the new
  widths: the same widths in every layer, a head size the class either takes
  (`head_dim`: Gemma, Qwen3, Mistral) or computes right (`hidden_dim // heads` equal
  to the head size: nothing was removed from the heads), and nothing the
  class's `get_config` loses (a tied Llama's `tie_word_embeddings`), and
  the local/global attention pattern (and, in Gemma 3, the RoPE) of the
  kept layers where the class derives it from the layer index (Gemma,
  Gemma 3);
* otherwise kprune's registered subclass of that family, which takes per-layer
  widths and an explicit `head_dim` (`PrunedLlama3Backbone`, ...).

A hidden size pruned on request (`kprune.plan_channels(..., hidden=...)`)
is read from the arrays too (`BlockWidths.hidden`) and built by the families
that declare it (`Family.hidden`: Llama / Llama 3, Qwen3, Gemma, GPT-2); any
other family (BERT, Mistral, Qwen2, Phi-3) refuses it with a `ValueError`
naming `hidden`.

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

import numpy as np

from kprune.registry.model_builders import register_model_builder
from kprune.transformers import (
    hub_gemma3_distilbert,
    hub_gemma_qwen,
    hub_gpt2_bert,
    hub_llama,
    hub_mistral_qwen2,
    hub_phi3,
)
from kprune.transformers.family import hidden_width
from kprune.transformers.widths import block_widths

_MODELS = "keras_hub.src.models."

# Qualified class name -> its family (`kprune.transformers.family.Family`),
# declared by the module holding the family's kprune subclasses.
FAMILIES = {**hub_llama.FAMILIES, **hub_gemma_qwen.FAMILIES, **hub_gpt2_bert.FAMILIES,
            **hub_mistral_qwen2.FAMILIES, **hub_phi3.FAMILIES, **hub_gemma3_distilbert.FAMILIES}


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
    _check_hidden(backbone, family, widths)
    config = family.stock(backbone, widths, kept)
    if config is not None:
        new = type(backbone).from_config(config)
    else:
        cls, config = family.pruned(backbone, widths, kept)
        new = cls.from_config(config)
    assign(backbone, new, values_of, kept)
    return new


def _check_hidden(backbone, family, widths):
    """Raise when the hidden size changed and `family` cannot build it."""
    if family.hidden or hidden_width(backbone, widths) == backbone.hidden_dim:
        return
    known = sorted(name.rsplit(".", 1)[1] for name, f in FAMILIES.items() if f.hidden)
    raise ValueError(
        f"Argument `hidden` of plan_channels removed channels of the hidden size of backbone "
        f"'{backbone.name}' ({type(backbone).__name__}: {backbone.hidden_dim} -> "
        f"{hidden_width(backbone, widths)}), but kprune cannot rebuild {type(backbone).__name__} with a "
        f"smaller hidden size; it can for {known}. Plan without `hidden` (hidden=None), or use "
        "kprune.mask_channels to zero those channels instead."
    )


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
