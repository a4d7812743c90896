"""Gemma 3 and DistilBERT made smaller (issue 25): tiny random models lose half
their heads, half their FFN units and a block.

* the smaller model is the stated class -- the stock one where its config can
  say the widths and the kept layers' attention types and RoPE, kprune's
  registered subclass where it cannot -- and gives the masked model's outputs
  (1e-4);
* each kept Gemma 3 layer keeps its own type and RoPE (the stock class would
  derive others from the new indices, and compute something else);
* under `full_matrix`: it saves as a preset and loads with
  `keras_hub.models.Backbone.from_preset`, a `Gemma3CausalLM` on it generates
  the masked model's tokens (greedy), and it exports to a verified TFLite file
  whose MACs equal `count_macs`.

The Gemma 3 has 6 layers (local x5, global with
`use_sliding_window_attention`), a sliding window shorter than the inputs,
Gemma 2's post norms and soft caps, a global RoPE scaling factor and a
non-default `layer_norm_epsilon`, so that a layer rebuilt with the wrong type,
RoPE or epsilon gives other outputs.
"""

import keras
import numpy as np
import pytest

import kprune
from kprune import transformers

keras_hub = pytest.importorskip("keras_hub")

V, D, SEQ, G3_LAYERS, BERT_LAYERS = 64, 32, 10, 6, 3


def _gemma3(**overrides):
    config = dict(vocabulary_size=V, image_size=16, num_layers=G3_LAYERS, num_query_heads=4,
                  num_key_value_heads=2, hidden_dim=D, intermediate_dim=64, head_dim=8,
                  use_sliding_window_attention=True, sliding_window_size=4, use_post_ffw_norm=True,
                  use_post_attention_norm=True, attention_logit_soft_cap=20.0, final_logit_soft_cap=30.0,
                  global_rope_scaling_factor=8.0, layer_norm_epsilon=1e-3, vision_encoder=None)
    config.update(overrides)
    return _randomized(keras_hub.models.Gemma3CausalLM(
        backbone=keras_hub.models.Gemma3Backbone(**config), preprocessor=None))


def _distilbert():
    return _randomized(keras_hub.models.DistilBertBackbone(
        vocabulary_size=V, num_layers=BERT_LAYERS, num_heads=4, hidden_dim=D, intermediate_dim=32,
        max_sequence_length=16))


def _randomized(model):
    rng = np.random.default_rng(0)  # distinct weights (KerasHub seeds equal shapes alike)
    model.set_weights([rng.normal(0.0, 0.2, w.shape).astype("float32") for w in model.get_weights()])
    return model


def _inputs(n=2):
    rng = np.random.default_rng(1)
    return {"token_ids": rng.integers(0, V, (n, SEQ)).astype("int32"), "padding_mask": np.ones((n, SEQ), "int32")}


def _out(model, x):
    return keras.ops.convert_to_numpy(model(x))


def _backbone(model):
    return getattr(model, "backbone", model)


def _blocks(model, removed):
    names = [b.name for b in _backbone(model).transformer_layers]
    return transformers.BlockPlan([{"index": i, "name": n, "score": 0.0} for i, n in enumerate(names)],
                                  removed=removed)


def _shrink(model, heads, removed, amount=0.5):
    """`(masked, small)`: `amount` of the heads and FFN units, and the blocks `removed`."""
    plan = kprune.plan_channels(model, amount, round_to=1, heads=heads)
    blocks = _blocks(model, removed)
    small = transformers.remove_blocks(kprune.remove_channels(model, plan), blocks)
    masked = kprune.mask_channels(model, plan)
    # DistilBERT's post-norm blocks cannot be bypassed by zeroing: removed from the masked model.
    bypass = transformers.mask_blocks if hasattr(model, "backbone") else transformers.remove_blocks
    return bypass(masked, blocks), small


# name: (model, heads, blocks removed, (task class, backbone class) of the smaller model)
CASES = {
    # Block 0 goes: the kept layers are local x4, global; the stock pattern for
    # 5 layers is local x5.
    "gemma3-kv": (_gemma3, "kv", [0], ("Gemma3CausalLM", "PrunedGemma3Backbone")),
    # Block 5 goes: local x5 is the stock pattern for 5 layers, and Gemma 3
    # takes head_dim: the stock class says it all.
    "gemma3-query": (lambda: _gemma3(query_head_dim_normalize=False), "query", [5],
                     ("Gemma3CausalLM", "Gemma3Backbone")),
    "distilbert": (_distilbert, "kv", [1], ("PrunedDistilBertBackbone", "PrunedDistilBertBackbone")),
}


def _same_but_widths(new, old):
    """Whether block `new`'s config is `old`'s but for its name and widths (a
    `head_dim` it adds is checked by the shapes)."""
    widths = ("name", "num_query_heads", "num_key_value_heads", "intermediate_dim", "num_heads")
    old_config, new_config = old.get_config(), new.get_config()
    return all(new_config.get(k) == v for k, v in old_config.items() if k not in widths)


@pytest.mark.parametrize("name", list(CASES))
def test_half_the_heads_and_units_and_a_block_removed_equal_the_masked_model(name):
    build, heads, removed, classes = CASES[name]
    model = build()
    masked, small = _shrink(model, heads, removed)
    assert (type(small).__name__, type(_backbone(small)).__name__) == classes
    x = _inputs()
    np.testing.assert_allclose(_out(small, x), _out(masked, x), atol=1e-4)
    assert not np.allclose(_out(small, x), _out(model, x), atol=1e-3)  # it was pruned
    old, new = _backbone(model), _backbone(small)
    kept = [i for i in range(old.num_layers) if i not in removed]
    assert new.num_layers == len(kept)
    gemma = name.startswith("gemma3")
    query_heads = [int(v.shape[0 if gemma else 1]) for v in new.weights if v.path.endswith("/query/kernel")]
    kv_heads = [int(v.shape[0 if gemma else 1]) for v in new.weights if v.path.endswith("/key/kernel")]
    assert query_heads == [2] * len(kept)
    assert kv_heads == [1 if gemma and heads == "kv" else 2] * len(kept)
    # Each kept layer is its old self with fewer heads and units: same type, RoPE, norms, caps.
    for j, i in enumerate(kept):
        assert _same_but_widths(new.transformer_layers[j], old.transformer_layers[i])
    assert kprune.count_params(small) == sum(int(np.prod(v.shape)) for v in small.weights)
    assert kprune.count_params(small) < 0.5 * kprune.count_params(model)
    if name == "gemma3-kv":
        assert new.layer_sliding_window == [True] * 4 + [False]
        assert [b.rope_wavelength for b in new.transformer_layers] == [1e4] * 4 + [1e6]
        assert [b.rope_scaling_factor for b in new.transformer_layers] == [1.0] * 4 + [8.0]
        # The trap: the stock class with the same weights derives the types and
        # RoPE from the new indices (local x5) and computes something else.
        stock = keras_hub.models.Gemma3CausalLM(backbone=keras_hub.models.Gemma3Backbone.from_config(
            {**old.get_config(), "num_layers": len(kept), "num_query_heads": 2, "num_key_value_heads": 1,
             "intermediate_dim": new.intermediate_dim}), preprocessor=None)
        stock.set_weights(small.get_weights())
        assert not np.allclose(_out(stock, x), _out(small, x), atol=1e-3)


@pytest.mark.parametrize("build", [_gemma3, _distilbert], ids=["gemma3", "distilbert"])
def test_ffn_only_and_depth_only_pruning_keep_the_stock_class(build):
    model = build()
    stock = type(_backbone(model))
    small = kprune.remove_channels(model, kprune.plan_channels(model, {"channels": 0.5}, round_to=1))
    assert type(_backbone(small)) is stock
    assert _backbone(small).intermediate_dim == _backbone(model).intermediate_dim // 2
    # Depth: the last block (Gemma 3: the kept pattern, local x5, is the stock one for 5 layers).
    last = _backbone(model).num_layers - 1
    assert type(_backbone(transformers.remove_blocks(model, _blocks(model, [last])))) is stock


def test_gemma3_layers_whose_query_scale_follows_the_head_count_keep_their_heads():
    """KerasHub 0.32's Gemma3DecoderBlock always scales queries by 1/sqrt(head_dim);
    an attention that scales by 1/sqrt(hidden_dim // num_query_heads) (set here on
    the layers, as a KerasHub that passed `query_head_dim_normalize` on would)
    would change scale with fewer heads: kprune refuses to remove them."""
    model = _gemma3(num_layers=2, query_head_dim_normalize=False)
    for block in model.backbone.transformer_layers:
        block.attention.query_head_dim_normalize = False
    with pytest.raises(ValueError, match=r"'decoder_block_0'.*1/sqrt\(8\).*with 2 query heads.*1/sqrt\(16\)"):
        kprune.remove_channels(model, kprune.plan_channels(model, {"heads": 0.5}, round_to=1))


def test_pruned_gemma3_backbone_checks_its_per_layer_arguments():
    widths = dict(vocabulary_size=V, hidden_dim=16, head_dim=4, num_key_value_heads=2,
                  layer_intermediate_dims=[8, 8])
    with pytest.raises(ValueError, match=r"`layer_sliding_window`.*one entry per layer \(2\).*\[True\]"):
        transformers.PrunedGemma3Backbone(layer_query_heads=[2, 2], layer_sliding_window=[True], **widths)
    with pytest.raises(ValueError, match=r"multiples of num_key_value_heads=2.*\[2, 3\]"):
        transformers.PrunedGemma3Backbone(layer_query_heads=[2, 3], layer_sliding_window=[True, False], **widths)


def test_gemma3_with_per_layer_widths_is_the_subclass():
    model = _gemma3(num_layers=3)
    plan = kprune.plan_channels(model, 0.5, round_to=1, global_ranking=True, heads="query")
    small = kprune.remove_channels(model, plan)
    backbone = small.backbone
    assert type(backbone).__name__ == "PrunedGemma3Backbone"
    assert len(set(backbone.layer_intermediate_dims)) > 1 and backbone.layer_sliding_window == [True] * 3
    x = _inputs()
    np.testing.assert_allclose(_out(small, x), _out(kprune.mask_channels(model, plan), x), atol=1e-4)


def test_gemma3_embedding_models_keep_the_stock_class_and_vision_models_are_refused():
    embedder = _randomized(keras_hub.models.Gemma3Backbone(
        vocabulary_size=V, image_size=16, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=D,
        intermediate_dim=64, head_dim=8, is_embedding_model=True, pooling_intermediate_dim=16, embedding_dim=8))
    plan = kprune.plan_channels(embedder, 0.5, round_to=1)
    assert type(kprune.mask_channels(embedder, plan)) is type(embedder)  # the class, not a Functional copy
    # The stock config says the blocks' widths, not its pooling head's (which the plan prunes too).
    with pytest.raises(ValueError, match=r"'pooling_dense_1/kernel' would get an array of shape \(32, 8\)"):
        kprune.remove_channels(embedder, plan)
    # Per-layer widths (global ranking) need PrunedGemma3Backbone, which has no pooling head.
    per_layer = kprune.plan_channels(embedder, 0.5, round_to=1, global_ranking=True, heads="query")
    with pytest.raises(ValueError, match="'gemma3_backbone.*' is a Gemma 3 embedding model"):
        kprune.remove_channels(embedder, per_layer)
    from keras_hub.src.models.gemma3.gemma3_vision_encoder import Gemma3VisionEncoder

    vision = keras_hub.models.Gemma3Backbone(
        vocabulary_size=V, image_size=16, num_layers=1, num_query_heads=4, num_key_value_heads=2, hidden_dim=D,
        intermediate_dim=64, head_dim=8, vision_encoder=Gemma3VisionEncoder(
            image_size=16, patch_size=4, num_heads=2, hidden_dim=16, num_layers=1, intermediate_dim=16,
            output_dim=D, pool_size=2))
    with pytest.raises(ValueError, match="backbone 'gemma3_backbone.*' has a vision encoder"):
        kprune.remove_channels(vision, kprune.plan_channels(vision, {"channels": 0.5}, round_to=1))


@pytest.mark.full_matrix
@pytest.mark.parametrize("name", ["gemma3-kv", "distilbert"])
def test_the_smaller_model_saves_as_a_preset_and_generates_the_masked_models_tokens(name, tmp_path):
    build, heads, removed, _ = CASES[name]
    masked, small = _shrink(build(), heads, removed)
    backbone = _backbone(small)
    backbone.save_to_preset(str(tmp_path))
    loaded = keras_hub.models.Backbone.from_preset(str(tmp_path))
    assert type(loaded) is type(backbone)
    x = _inputs()
    np.testing.assert_array_equal(_out(loaded, x), _out(backbone, x))
    if name == "distilbert":
        return
    prompt = {"token_ids": np.concatenate([x["token_ids"][:, :4], np.zeros((2, SEQ - 4), "int32")], 1),
              "padding_mask": np.concatenate([np.ones((2, 4), "int32"), np.zeros((2, SEQ - 4), "int32")], 1)}
    tokens = []
    for lm in (masked, type(small)(backbone=loaded, preprocessor=None)):
        lm.compile(sampler="greedy")
        # generate_step, not generate: KerasHub 0.32's Gemma3CausalLM.generate without a
        # preprocessor fails on a text-only model (it concatenates the `images: None` it returns).
        tokens.append(keras.ops.convert_to_numpy(lm.generate_step(prompt, stop_token_ids=None)["token_ids"]))
    np.testing.assert_array_equal(tokens[0], tokens[1])
    assert (tokens[0][:, 4:] != 0).any()  # it generated


@pytest.mark.full_matrix
@pytest.mark.parametrize("name", ["gemma3-kv", "distilbert"])
def test_the_smaller_model_exports_to_a_verified_file_with_the_counted_macs(name, tmp_path):
    build, heads, removed, _ = CASES[name]
    model = build()
    _, small = _shrink(model, heads, removed)
    x = _inputs(4)
    shapes = {key: (SEQ,) for key in x}
    path = str(tmp_path / f"{name}.tflite")
    report = kprune.export_tflite(small, path, sample_inputs=x, measure_latency=False)
    assert report.verified
    macs = kprune.count_macs(small, shapes)
    assert report.macs == kprune.summary(path).macs == macs < kprune.count_macs(model, shapes)
