"""Mistral, Qwen2 and Phi-3 made smaller (issue 25): tiny random KerasHub models
(GQA: 4 query heads, 2 key/value heads) lose half their heads, half their FFN
units and a block.

* the smaller model is the stated class -- a stock `MistralBackbone` (it
  takes `head_dim`), kprune's `PrunedQwenBackbone` and `PrunedPhi3Backbone`
  (their attention computes `hidden_dim // heads`), the stock class again
  after FFN pruning alone -- and gives the masked model's outputs (1e-4 on
  logits), with the sliding windows and Phi-3's "su" rope factors kept;
* under `full_matrix`: it saves as a preset and loads with
  `keras_hub.models.Backbone.from_preset`, the stock causal LM generates the
  masked model's tokens (greedy), and it exports to a verified TFLite file
  whose MACs equal `count_macs`.
"""

import keras
import numpy as np
import pytest

import kprune
from kprune import transformers

keras_hub = pytest.importorskip("keras_hub")

V, D, LAYERS, SEQ = 64, 32, 3, 10
SU = {"rope_scaling_type": "su", "rope_scaling_short_factor": [1.0, 1.5, 2.0, 2.5],
      "rope_scaling_long_factor": [3.0, 3.5, 4.0, 4.5], "max_sequence_length": 64,
      "pretraining_sequence_length": 8}  # longer inputs than 8 use the long factors
COMMON = dict(vocabulary_size=V, num_layers=LAYERS, num_query_heads=4, num_key_value_heads=2, hidden_dim=D,
              intermediate_dim=32)


def _mistral():
    return keras_hub.models.MistralCausalLM(backbone=keras_hub.models.MistralBackbone(
        sliding_window=4, **COMMON), preprocessor=None)


def _qwen(sliding=True):
    return keras_hub.models.QwenCausalLM(backbone=keras_hub.models.QwenBackbone(
        use_sliding_window_attention=sliding, sliding_window_size=4, **COMMON), preprocessor=None)


def _phi3():
    return keras_hub.models.Phi3CausalLM(backbone=keras_hub.models.Phi3Backbone(**SU, **COMMON),
                                         preprocessor=None)


BUILD = {"mistral": _mistral, "qwen": _qwen, "phi3": _phi3}
# (task class, backbone class) after removing half the heads (the same number in every layer),
# half the FFN units and a block.
SMALL = {"mistral": ("MistralCausalLM", "MistralBackbone"), "qwen": ("QwenCausalLM", "PrunedQwenBackbone"),
         "phi3": ("Phi3CausalLM", "PrunedPhi3Backbone")}
# What the smaller backbone must keep of the dense one's config.
KEPT = {"mistral": ("sliding_window", "rope_max_wavelength"),
        "qwen": ("use_sliding_window_attention", "sliding_window_size", "tie_word_embeddings"),
        "phi3": tuple(SU)}


def _model(name, **options):
    model = BUILD[name](**options)
    rng = np.random.default_rng(0)  # distinct weights (KerasHub seeds equal shapes alike); Qwen2's biases too
    model.set_weights([rng.normal(0.0, 0.2, w.shape).astype("float32") for w in model.get_weights()])
    return model


def _inputs(n=2):
    rng = np.random.default_rng(1)
    return {"token_ids": rng.integers(0, V, (n, SEQ)).astype("int32"), "padding_mask": np.ones((n, SEQ), "int32")}


def _out(model, x):
    return keras.ops.convert_to_numpy(model(x))


def _shrink(model, heads="kv", global_ranking=False):
    """`(masked, small)`: half the heads, half the FFN units and the lowest-BI block."""
    plan = kprune.plan_channels(model, 0.5, round_to=1, heads=heads, global_ranking=global_ranking)
    blocks = transformers.plan_blocks(model, 1, data=_inputs(4))
    small = transformers.remove_blocks(kprune.remove_channels(model, plan), blocks)
    return transformers.mask_blocks(kprune.mask_channels(model, plan), blocks), small


def _query_heads(backbone):
    return [int(v.shape[1]) for v in backbone.weights if v.path.endswith("/query/kernel")]


@pytest.mark.parametrize("heads", ["kv", "query"])
@pytest.mark.parametrize("name", list(BUILD))
def test_half_the_heads_and_units_and_a_block_removed_equal_the_masked_model(name, heads):
    model = _model(name)
    masked, small = _shrink(model, heads)
    assert (type(small).__name__, type(small.backbone).__name__) == SMALL[name]
    x = _inputs()
    np.testing.assert_allclose(_out(small, x), _out(masked, x), atol=1e-4)
    assert not np.allclose(_out(small, x), _out(model, x), atol=1e-3)  # it was pruned
    backbone = small.backbone
    assert backbone.num_layers == LAYERS - 1 and _query_heads(backbone) == [2] * (LAYERS - 1)
    assert backbone.num_key_value_heads == (1 if heads == "kv" else 2)
    assert backbone.head_dim == D // 4  # whole heads went: the head size stays
    for key in KEPT[name]:
        assert getattr(backbone, key) == getattr(model.backbone, key), key
    assert kprune.count_params(small) == sum(int(np.prod(v.shape)) for v in small.weights)
    assert kprune.count_params(small) < 0.6 * kprune.count_params(model)


@pytest.mark.parametrize("name", list(BUILD))
def test_ffn_only_pruning_keeps_the_stock_class(name):
    model = _model(name)
    plan = kprune.plan_channels(model, {"channels": 0.5}, round_to=1)
    small = kprune.remove_channels(model, plan)
    assert type(small.backbone).__name__ == SMALL[name][1].removeprefix("Pruned")
    assert small.backbone.intermediate_dim == 16 and _query_heads(small.backbone) == [4] * LAYERS
    x = _inputs()
    np.testing.assert_allclose(_out(small, x), _out(kprune.mask_channels(model, plan), x), atol=1e-4)


def test_per_layer_widths_give_kprunes_mistral_subclass():
    # Global ranking keeps different widths per layer: a stock MistralBackbone cannot say them.
    model = _model("mistral")
    masked, small = _shrink(model, "query", global_ranking=True)
    backbone = small.backbone
    assert type(backbone).__name__ == "PrunedMistralBackbone"
    assert len(set(backbone.layer_intermediate_dims)) > 1
    assert backbone.sliding_window == 4 and backbone.head_dim == D // 4
    x = _inputs()
    np.testing.assert_allclose(_out(small, x), _out(masked, x), atol=1e-4)


def test_the_subclasses_refuse_widths_their_causal_lm_or_rope_cannot_use():
    with pytest.raises(ValueError, match=r"Argument `head_dim` of PrunedQwenBackbone .* head_dim=7, hidden_dim=32"):
        transformers.PrunedQwenBackbone(vocabulary_size=V, hidden_dim=D, head_dim=7, num_key_value_heads=1,
                                        layer_query_heads=[2], layer_intermediate_dims=[8])
    with pytest.raises(ValueError, match="`rope_scaling_long_factor` .* must hold head_dim // 2 = 4 factors"):
        transformers.PrunedPhi3Backbone(vocabulary_size=V, hidden_dim=D, head_dim=8, num_key_value_heads=1,
                                        layer_query_heads=[2], layer_intermediate_dims=[8],
                                        **{**SU, "rope_scaling_long_factor": [1.0, 1.0]})
    with pytest.raises(ValueError, match="must hold multiples of num_key_value_heads=2"):
        transformers.PrunedMistralBackbone(vocabulary_size=V, hidden_dim=D, head_dim=8, num_key_value_heads=2,
                                           layer_query_heads=[2, 3], layer_intermediate_dims=[8, 8])


FULL = [pytest.param(name, heads, marks=pytest.mark.full_matrix) for name in BUILD for heads in ("kv", "query")]


@pytest.mark.parametrize(("name", "heads"), FULL + [pytest.param("mistral", "global", marks=pytest.mark.full_matrix)])
def test_the_smaller_model_saves_as_a_preset_and_generates_the_masked_models_tokens(name, heads, tmp_path):
    # KerasHub 0.32's QwenCausalLM cannot generate with sliding-window attention on TensorFlow
    # (`if cache_update_index` on a symbolic tensor in qwen_attention.py), the dense model neither.
    model = _model(name, sliding=False) if name == "qwen" else _model(name)
    masked, small = _shrink(model, "query", True) if heads == "global" else _shrink(model, heads)
    backbone = small.backbone
    backbone.save_to_preset(str(tmp_path))
    loaded = keras_hub.models.Backbone.from_preset(str(tmp_path))
    assert type(loaded) is type(backbone) and loaded.get_config() == backbone.get_config()
    x = _inputs()
    np.testing.assert_array_equal(_out(loaded, x), _out(backbone, x))
    prompt = {"token_ids": np.concatenate([x["token_ids"][:, :4], np.zeros((2, SEQ - 4), "int32")], 1),
              "padding_mask": np.concatenate([np.ones((2, 4), "int32"), np.zeros((2, SEQ - 4), "int32")], 1)}
    tokens = []
    for lm in (masked, type(small)(backbone=loaded, preprocessor=None)):
        lm.compile(sampler="greedy")
        tokens.append(keras.ops.convert_to_numpy(lm.generate(prompt, stop_token_ids=None)["token_ids"]))
    np.testing.assert_array_equal(tokens[0], tokens[1])
    assert not np.array_equal(tokens[1][:, 4:], np.zeros_like(tokens[1][:, 4:]))  # it generated


@pytest.mark.parametrize(("name", "heads"), FULL)
def test_the_smaller_model_exports_to_a_verified_file_with_the_counted_macs(name, heads, tmp_path):
    model = _model(name)
    _, small = _shrink(model, heads)
    x = _inputs(4)
    shapes = {key: (SEQ,) for key in x}
    path = str(tmp_path / f"{name}.tflite")
    report = kprune.export_tflite(small, path, sample_inputs=x, measure_latency=False)
    assert report.verified
    macs = kprune.count_macs(small, shapes)
    assert report.macs == kprune.summary(path).macs == macs < kprune.count_macs(model, shapes)
