"""KerasHub models made smaller (issue 25): tiny random Llama 3 (GQA), Gemma,
Qwen3, GPT-2 and BERT lose half their heads, half their FFN units and a block.

* the smaller model is the stated class (the stock one where its config can
  say the widths, kprune's registered subclass where it cannot) and gives the
  masked model's outputs (1e-4 on logits);
* it saves as a preset and loads with `keras_hub.models.Backbone.from_preset`;
* a causal LM built on it generates the masked model's tokens (greedy);
* `count_params` counts its weights, under half the dense model's;
* it exports to a verified TFLite file whose MACs equal `count_macs`;
* distillation from the dense model (`kprune.distiller`) brings it back towards it.

Default: Llama 3 through the whole chain, every family masked vs removed;
presets, generation and exports of the other families under `full_matrix`.
"""

import keras
import numpy as np
import pytest

import kprune
from kprune import transformers

keras_hub = pytest.importorskip("keras_hub")

V, D, LAYERS, SEQ = 64, 32, 3, 10


def _llama3(tie=False):
    return keras_hub.models.Llama3CausalLM(backbone=keras_hub.models.Llama3Backbone(
        vocabulary_size=V, num_layers=LAYERS, num_query_heads=4, num_key_value_heads=2, hidden_dim=D,
        intermediate_dim=32, tie_word_embeddings=tie), preprocessor=None)


def _gemma():
    return keras_hub.models.GemmaCausalLM(backbone=keras_hub.models.GemmaBackbone(
        vocabulary_size=V, num_layers=LAYERS, num_query_heads=4, num_key_value_heads=2, hidden_dim=D,
        intermediate_dim=64, head_dim=8), preprocessor=None)


def _qwen3():
    return keras_hub.models.Qwen3CausalLM(backbone=keras_hub.models.Qwen3Backbone(
        vocabulary_size=V, num_layers=LAYERS, num_query_heads=4, num_key_value_heads=2, hidden_dim=D,
        intermediate_dim=32, head_dim=8), preprocessor=None)


def _gpt2():
    return keras_hub.models.GPT2CausalLM(backbone=keras_hub.models.GPT2Backbone(
        vocabulary_size=V, num_layers=LAYERS, num_heads=4, hidden_dim=D, intermediate_dim=32,
        max_sequence_length=16), preprocessor=None)


def _bert():
    return keras_hub.models.BertBackbone(vocabulary_size=V, num_layers=LAYERS, num_heads=4, hidden_dim=D,
                                         intermediate_dim=32, max_sequence_length=16)


BUILD = {"llama3": _llama3, "gemma": _gemma, "qwen3": _qwen3, "gpt2": _gpt2, "bert": _bert}
# (task class, backbone class) after removing half the heads, half the FFN units and a block.
SMALL = {"llama3": ("Llama3CausalLM", "PrunedLlama3Backbone"), "gemma": ("GemmaCausalLM", "GemmaBackbone"),
         "qwen3": ("Qwen3CausalLM", "Qwen3Backbone"), "gpt2": ("PrunedGPT2CausalLM", "PrunedGPT2Backbone"),
         "bert": ("PrunedBertBackbone", "PrunedBertBackbone")}
FULL = [name if name == "llama3" else pytest.param(name, marks=pytest.mark.full_matrix) for name in BUILD]


def _model(name):
    model = BUILD[name]()
    rng = np.random.default_rng(0)  # distinct weights (KerasHub seeds equal shapes alike)
    model.set_weights([rng.normal(0.0, 0.2, w.shape).astype("float32") for w in model.get_weights()])
    return model


def _inputs(name, n=2):
    rng = np.random.default_rng(1)
    x = {"token_ids": rng.integers(0, V, (n, SEQ)).astype("int32"), "padding_mask": np.ones((n, SEQ), "int32")}
    if name == "bert":
        x["segment_ids"] = np.zeros((n, SEQ), "int32")
    return x


def _out(model, x):
    y = model(x)
    return keras.ops.convert_to_numpy(y["sequence_output"] if isinstance(y, dict) else y)


def _backbone(model):
    return getattr(model, "backbone", model)


def _shrink(model, name, heads="kv"):
    """`(masked, small)`: half the heads, half the FFN units and the lowest-BI block."""
    plan = kprune.plan_channels(model, 0.5, round_to=1, heads=heads)
    blocks = transformers.plan_blocks(model, 1, data=_inputs(name, 4))
    small = transformers.remove_blocks(kprune.remove_channels(model, plan), blocks)
    masked = kprune.mask_channels(model, plan)
    # Post-norm blocks (BERT) cannot be bypassed by zeroing: removed from the masked model.
    bypass = transformers.remove_blocks if name == "bert" else transformers.mask_blocks
    return bypass(masked, blocks), small


@pytest.mark.parametrize("name", list(BUILD))
def test_half_the_heads_and_units_and_a_block_removed_equal_the_masked_model(name):
    model = _model(name)
    masked, small = _shrink(model, name)
    assert (type(small).__name__, type(_backbone(small)).__name__) == SMALL[name]
    x = _inputs(name)
    np.testing.assert_allclose(_out(small, x), _out(masked, x), atol=1e-4)
    assert not np.allclose(_out(small, x), _out(model, x), atol=1e-3)  # it was pruned
    backbone = _backbone(small)
    assert backbone.num_layers == LAYERS - 1
    heads = [int(v.shape[1 if name != "gemma" else 0]) for v in backbone.weights
             if v.path.endswith("/query/kernel")]
    assert heads == [2] * (LAYERS - 1)
    # Parameters: the dense count minus what the removed units and block held.
    assert kprune.count_params(small) == sum(int(np.prod(v.shape)) for v in small.weights)
    assert kprune.count_params(small) < 0.5 * kprune.count_params(model)


@pytest.mark.parametrize("name", FULL)
def test_the_smaller_model_saves_as_a_preset_and_generates_the_masked_models_tokens(name, tmp_path):
    model = _model(name)
    masked, small = _shrink(model, name)
    backbone = _backbone(small)
    backbone.save_to_preset(str(tmp_path))
    loaded = keras_hub.models.Backbone.from_preset(str(tmp_path))
    assert type(loaded) is type(backbone)
    x = _inputs(name)
    np.testing.assert_array_equal(_out(loaded, x), _out(backbone, x))
    if name == "bert":
        return
    prompt = {"token_ids": np.concatenate([x["token_ids"][:, :4], np.zeros((2, SEQ - 4), "int32")], 1),
              "padding_mask": np.concatenate([np.ones((2, 4), "int32"), np.zeros((2, SEQ - 4), "int32")], 1)}
    tokens = []
    for lm in (masked, type(small)(backbone=loaded, preprocessor=None)):
        lm.compile(sampler="greedy")
        tokens.append(keras.ops.convert_to_numpy(lm.generate(prompt, stop_token_ids=None)["token_ids"]))
    np.testing.assert_array_equal(tokens[0], tokens[1])


def test_query_heads_go_evenly_from_every_key_value_group():
    model = _model("llama3")
    plan = kprune.plan_channels(model, {"heads": 0.5}, heads="query")
    pruned = [g["pruned"] for g in plan.groups if g["pruned"]]
    # 4 query heads in 2 groups of 2: one from each group.
    assert len(pruned) == LAYERS and all(len(p) == 2 and p[0] < 2 <= p[1] for p in pruned)
    small = kprune.remove_channels(model, plan)
    assert small.backbone.num_key_value_heads == 2
    assert small.backbone.layer_query_heads == [2] * LAYERS
    masked = kprune.mask_channels(model, plan)
    x = _inputs("llama3")
    np.testing.assert_allclose(_out(small, x), _out(masked, x), atol=1e-4)
    # Removing what the masked model no longer reads, read the same way, gives the same model.
    np.testing.assert_allclose(_out(kprune.remove_channels(masked, heads="query"), x), _out(small, x), atol=1e-4)
    groups = [dict(g, pruned=[0, 1]) if g["pruned"] else g for g in plan.groups]
    with pytest.raises(ValueError, match="not the same number from each of its 2 key/value groups"):
        kprune.mask_channels(model, kprune.ChannelPlan(groups, heads="query"))


def test_ffn_only_pruning_keeps_the_stock_llama_class_and_a_tied_llama_keeps_its_tie(tmp_path):
    small = kprune.remove_channels(_model("llama3"), kprune.plan_channels(_model("llama3"), {"channels": 0.5},
                                                                          round_to=1))
    assert type(small.backbone).__name__ == "Llama3Backbone" and small.backbone.intermediate_dim == 16
    # KerasHub's Llama drops tie_word_embeddings from its config: a tied model
    # comes back as kprune's subclass, which keeps it.
    tied = keras_hub.models.Llama3CausalLM(backbone=keras_hub.models.Llama3Backbone(
        vocabulary_size=V, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=D,
        intermediate_dim=32, tie_word_embeddings=True), preprocessor=None)
    small = kprune.remove_channels(tied, kprune.plan_channels(tied, {"channels": 0.5}, round_to=1))
    assert type(small.backbone).__name__ == "PrunedLlama3Backbone"
    small.backbone.save_to_preset(str(tmp_path))
    assert keras_hub.models.Backbone.from_preset(str(tmp_path)).token_embedding.tie_weights


def test_global_ranking_gives_per_layer_widths_and_one_key_value_count_is_required():
    model = _model("qwen3")
    plan = kprune.plan_channels(model, 0.5, round_to=1, global_ranking=True, heads="query")
    small = kprune.remove_channels(model, plan)
    widths = small.backbone.layer_intermediate_dims
    assert type(small.backbone).__name__ == "PrunedQwen3Backbone" and len(set(widths)) > 1
    x = _inputs("qwen3")
    np.testing.assert_allclose(_out(small, x), _out(kprune.mask_channels(model, plan), x), atol=1e-4)
    kv = kprune.plan_channels(model, {"heads": 0.5}, global_ranking=True)
    if len({len(g["pruned"]) for g in kv.groups if g["unit"] == "kv_group"}) > 1:
        with pytest.raises(ValueError, match="different numbers of key/value heads"):
            kprune.remove_channels(model, kv)


@pytest.mark.parametrize("name", FULL)
def test_the_smaller_model_exports_to_a_verified_file_with_the_counted_macs(name, tmp_path):
    model = _model(name)
    _, small = _shrink(model, name)
    x = _inputs(name, 4)
    shapes = {key: (SEQ,) for key in x}
    path = str(tmp_path / f"{name}.tflite")
    report = kprune.export_tflite(small, path, sample_inputs=x, measure_latency=False)
    assert report.verified
    macs = kprune.count_macs(small, shapes)
    assert report.macs == kprune.summary(path).macs == macs < kprune.count_macs(model, shapes)


def test_distillation_from_the_dense_model_heals_the_smaller_one():
    """The documented recovery: `kprune.distiller` (forward KL on the logits) trains the
    smaller model towards the dense one."""
    model = _model("llama3")
    _, small = _shrink(model, "llama3")
    x = _inputs("llama3", 16)
    y = np.roll(x["token_ids"], -1, axis=1)

    def kl():
        p = keras.ops.convert_to_numpy(keras.ops.softmax(model(x)))
        log_q = keras.ops.convert_to_numpy(keras.ops.log_softmax(small(x)))
        return float(np.mean(np.sum(p * (np.log(p) - log_q), axis=-1)))

    before = kl()
    trainer = kprune.distiller(small, model, temperature=1.0, alpha=0.0)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trainer.fit(x, y, epochs=10, batch_size=8, verbose=0)
    assert kl() < 0.5 * before  # here: 0.022 -> 0.002


def test_a_kerashub_model_without_a_builder_is_refused_by_name_and_masks():
    # RoBERTa has no registered builder: removal says so and names the ones kprune rebuilds;
    # masking still works.
    backbone = keras_hub.models.RobertaBackbone(vocabulary_size=V, num_layers=2, num_heads=4, hidden_dim=D,
                                                intermediate_dim=32, max_sequence_length=16)
    plan = kprune.plan_channels(backbone, {"heads": 0.5, "channels": 0.5}, round_to=1)
    with pytest.raises(ValueError, match=r"'transformer_layer_0' \(TransformerEncoder\).*LlamaBackbone"):
        kprune.remove_channels(backbone, plan)
    masked = kprune.mask_channels(backbone, plan)  # a Functional copy: no builder keeps the class
    x = {"token_ids": np.arange(SEQ)[None] % V, "padding_mask": np.ones((1, SEQ), "int32")}
    dense_out, masked_out = (keras.ops.convert_to_numpy(m(x)) for m in (backbone, masked))
    assert masked_out.shape == dense_out.shape and np.isfinite(masked_out).all()
    assert not np.allclose(masked_out, dense_out)
    assert any(np.all(keras.ops.convert_to_numpy(w) == 0, axis=0).any()
               for w in masked.weights if len(w.shape) == 2)
