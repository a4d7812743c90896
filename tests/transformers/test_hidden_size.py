"""The hidden size (the residual stream) pruned on request: `plan_channels(..., hidden=f)` (issue 25).

* the smaller model is the stated class with the planned `hidden_dim`, and its
  weights are exactly the kept slices of the dense ones (embedding columns,
  LM-head rows, norm scales, q/k/v input rows, attention/FFN output columns);
  `count_params` is the formula of its widths;
* the plan warns once that the result is not output-equivalent;
  `hidden=None`/`0` changes nothing; families kprune cannot rebuild (BERT,
  Mistral) refuse;
* what is equivalent, precisely: (a) a stream that no normalization reads is
  an ordinary channel group, and removing its channels equals masking them;
  (b) with RMS norms (Llama), the smaller model equals the masked one once
  each norm's scale is multiplied by `sqrt(d/d')` and its epsilon by `d/d'`
  -- the only difference is the statistics over fewer channels;
* the criteria rank the stream: `"l2"` is the NumPy sum of the norms of every
  matrix's slices, `"activation"` finds the channels the norms silence;
* distillation from the dense model lowers the KL.

Presets and generation of every family are under `full_matrix`.
"""

import warnings

import keras
import numpy as np
import pytest

import kprune

keras_hub = pytest.importorskip("keras_hub")

V, D, LAYERS, HQ, HKV, HD, FFN, SEQ = 64, 32, 2, 4, 2, 8, 48, 10
WARNING = "NOT output-equivalent"


def _random(model, seed=0):
    rng = np.random.default_rng(seed)  # distinct weights (KerasHub seeds equal shapes alike)
    model.set_weights([rng.normal(0.0, 0.2, w.shape).astype("float32") for w in model.get_weights()])
    return model


def _llama3():
    return _random(keras_hub.models.Llama3CausalLM(backbone=keras_hub.models.Llama3Backbone(
        vocabulary_size=V, num_layers=LAYERS, num_query_heads=HQ, num_key_value_heads=HKV, hidden_dim=D,
        intermediate_dim=FFN), preprocessor=None))


def _qwen3():
    return _random(keras_hub.models.Qwen3CausalLM(backbone=keras_hub.models.Qwen3Backbone(
        vocabulary_size=V, num_layers=LAYERS, num_query_heads=HQ, num_key_value_heads=HKV, hidden_dim=D,
        intermediate_dim=FFN, head_dim=HD), preprocessor=None))


def _gemma():
    return _random(keras_hub.models.GemmaCausalLM(backbone=keras_hub.models.GemmaBackbone(
        vocabulary_size=V, num_layers=LAYERS, num_query_heads=HQ, num_key_value_heads=HKV, hidden_dim=D,
        intermediate_dim=2 * FFN, head_dim=HD), preprocessor=None))


def _gpt2():
    return _random(keras_hub.models.GPT2CausalLM(backbone=keras_hub.models.GPT2Backbone(
        vocabulary_size=V, num_layers=LAYERS, num_heads=HQ, hidden_dim=D, intermediate_dim=FFN,
        max_sequence_length=16), preprocessor=None))


BUILD = {"llama3": _llama3, "qwen3": _qwen3, "gemma": _gemma, "gpt2": _gpt2}
# (task class, backbone class) once a quarter of the hidden size is removed.
SMALL = {"llama3": ("Llama3CausalLM", "PrunedLlama3Backbone"), "qwen3": ("Qwen3CausalLM", "Qwen3Backbone"),
         "gemma": ("GemmaCausalLM", "GemmaBackbone"), "gpt2": ("PrunedGPT2CausalLM", "PrunedGPT2Backbone")}


def _inputs(n=2):
    rng = np.random.default_rng(1)
    return {"token_ids": rng.integers(0, V, (n, SEQ)).astype("int32"), "padding_mask": np.ones((n, SEQ), "int32")}


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _plan(model, sparsity=0.0, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return kprune.plan_channels(model, sparsity, **kwargs)


def _kept(plan):
    (entry,) = [g for g in plan.groups if g["unit"] == "hidden"]
    return np.setdiff1d(np.arange(entry["channels"]), entry["pruned"])


def _weights(model):
    return {v.path: _np(v) for v in model.weights}


@pytest.fixture(scope="module")
def llama():
    """`(dense, plan, small, masked)`: a quarter of a Llama 3's hidden size removed (l2)."""
    model = _llama3()
    plan = _plan(model, hidden=0.25, round_to=8)
    return model, plan, kprune.remove_channels(model, plan), kprune.mask_channels(model, plan)


def test_the_smaller_llama3_has_the_planned_hidden_size_and_the_kept_slices(llama):
    model, plan, small, _ = llama
    kept = _kept(plan)
    d = len(kept)
    assert d == 24 and plan.hidden
    assert (type(small).__name__, type(small.backbone).__name__) == SMALL["llama3"]
    assert small.backbone.hidden_dim == d and small.backbone.head_dim == HD
    assert small.backbone.layer_query_heads == [HQ] * LAYERS and small.backbone.num_key_value_heads == HKV
    dense, new = _weights(model), _weights(small)
    np.testing.assert_array_equal(new["token_embedding/embeddings"], dense["token_embedding/embeddings"][:, kept])
    np.testing.assert_array_equal(new["token_embedding/reverse_embeddings"],
                                  dense["token_embedding/reverse_embeddings"][kept])
    for i in range(LAYERS):
        block = f"transformer_layer_{i}/"
        for path, index in (("self_attention_layernorm/scale", np.s_[kept]),
                            ("self_attention/query/kernel", np.s_[kept]),
                            ("self_attention/value/kernel", np.s_[kept]),
                            ("self_attention/attention_output/kernel", np.s_[..., kept]),
                            ("feedforward_gate_dense/kernel", np.s_[kept]),
                            ("feedforward_output_dense/kernel", np.s_[:, kept])):
            np.testing.assert_array_equal(new[block + path], dense[block + path][index])
    final = "sequence_output_layernorm/scale"
    np.testing.assert_array_equal(new[final], dense[final][kept])
    block = 2 * d + d * HQ * HD + 2 * d * HKV * HD + HQ * HD * d + 3 * d * FFN  # norms, q, k, v, o, FFN
    assert kprune.count_params(small) == 2 * V * d + LAYERS * block + d
    x = _inputs()
    assert _np(small(x)).shape == (2, SEQ, V)
    assert not np.allclose(_np(small(x)), _np(model(x)), atol=1e-2)


def test_the_plan_warns_once_and_hidden_none_or_zero_changes_nothing():
    model = _llama3()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = kprune.plan_channels(model, 0.0, hidden=0.25)
        kprune.remove_channels(model, plan)
    said = [w for w in caught if WARNING in str(w.message)]
    assert len(said) == 1 and said[0].filename == __file__
    assert "distil" in str(said[0].message) and "sqrt(hidden_dim)" in str(said[0].message)
    default = kprune.plan_channels(model, 0.5, round_to=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no warning without `hidden`
        for hidden in (None, 0, 0.0):
            assert kprune.plan_channels(model, 0.5, round_to=1, hidden=hidden).to_json() == default.to_json()
    assert not default.hidden and all(g["unit"] != "hidden" for g in default.groups)
    small = kprune.remove_channels(model, default)
    assert small.backbone.hidden_dim == D
    with pytest.raises(ValueError, match=r"Argument `hidden` must be in \[0, 1\). Received: hidden=1.0"):
        kprune.plan_channels(model, 0.0, hidden=1.0)
    with pytest.raises(ValueError, match=r"unknown keys \['hidden'\].*hidden=0.25"):
        kprune.plan_channels(model, {"hidden": 0.25})


def test_a_hidden_plan_is_read_back_the_same_way(llama):
    model, plan, small, _ = llama
    again = kprune.ChannelPlan.from_json(plan.to_json())
    assert again.hidden and again.groups == plan.groups
    np.testing.assert_array_equal(_np(kprune.remove_channels(model, again)(_inputs())), _np(small(_inputs())))
    from kprune.dependency.channel_graph import ChannelGraph
    with pytest.raises(ValueError, match=r"ChannelGraph\(model, hidden=True\)"):
        plan.units(ChannelGraph(model))


def test_with_rms_norms_the_only_difference_from_the_masked_model_is_the_norm_statistics(llama):
    """RMSNorm over d' kept channels of a stream that is 0 on the others:
    x * rsqrt(S/d + eps) = sqrt(d/d') * x * rsqrt(S/d' + eps*d/d'). So the
    smaller Llama with every norm scale times sqrt(d/d') and epsilon times
    d/d' IS the masked model; as planned (kept slices), it is not."""
    model, plan, small, masked = llama
    x = _inputs()
    assert not np.allclose(_np(small(x)), _np(masked(x)), atol=1e-3)
    d_new = small.backbone.hidden_dim
    config = small.backbone.get_config()
    config["layer_norm_epsilon"] = config["layer_norm_epsilon"] * D / d_new
    backbone = type(small.backbone).from_config(config)
    for source, target in zip(small.backbone.weights, backbone.weights):
        factor = np.sqrt(D / d_new) if source.path.endswith("layernorm/scale") else 1.0
        target.assign(_np(source) * factor)
    compensated = keras_hub.models.Llama3CausalLM(backbone=backbone, preprocessor=None)
    np.testing.assert_allclose(_np(compensated(x)), _np(masked(x)), atol=1e-4)


def _vit(norms=True, patches=9, patch=12, d=16, heads=4, head_dim=4, mlp=32, layers=2, classes=5):
    def norm(h, name):
        return keras.layers.LayerNormalization(name=name)(h) if norms else h

    x = keras.Input((patches, patch))
    h = keras.layers.Dense(d, name="patch_embedding")(x)
    for i in range(layers):
        n = norm(h, f"ln1_{i}")
        a = keras.layers.MultiHeadAttention(heads, head_dim, name=f"mha_{i}")(n, n)
        h = keras.layers.Add(name=f"add1_{i}")([h, a])
        m = keras.layers.Dense(mlp, activation="gelu", name=f"fc1_{i}")(norm(h, f"ln2_{i}"))
        h = keras.layers.Add(name=f"add2_{i}")([h, keras.layers.Dense(d, name=f"fc2_{i}")(m)])
    h = norm(h, "ln_final")
    model = keras.Model(x, keras.layers.Dense(classes, name="head")(keras.layers.GlobalAveragePooling1D()(h)))
    return _random(model, 2)


def _patches(n=8):
    return np.random.default_rng(3).normal(size=(n, 9, 12)).astype("float32")


def test_a_functional_vit_loses_a_quarter_of_its_hidden_size_and_saves(tmp_path):
    model = _vit()
    plan = _plan(model, hidden=0.25, round_to=1)
    kept, d = _kept(plan), 12
    small = kprune.remove_channels(model, plan)
    assert type(small) is type(model) and len(kept) == d
    assert small.get_layer("patch_embedding").units == d
    dense, new = _weights(model), _weights(small)
    for path, index in (("patch_embedding/kernel", np.s_[:, kept]), ("ln1_0/gamma", np.s_[kept]),
                        ("ln1_0/beta", np.s_[kept]), ("mha_0/query/kernel", np.s_[kept]),
                        ("mha_1/attention_output/kernel", np.s_[..., kept]),
                        ("mha_1/attention_output/bias", np.s_[kept]), ("fc1_1/kernel", np.s_[kept]),
                        ("fc2_0/bias", np.s_[kept]), ("ln_final/gamma", np.s_[kept]), ("head/kernel", np.s_[kept])):
        np.testing.assert_array_equal(new[path], dense[path][index])
    block = 2 * 2 * d + 3 * (d * 16 + 16) + 16 * d + d + d * 32 + 32 + 32 * d + d
    assert kprune.count_params(small) == 12 * d + d + 2 * block + 2 * d + d * 5 + 5
    x = _patches()
    path = str(tmp_path / "vit.keras")
    small.save(path)
    np.testing.assert_allclose(_np(keras.saving.load_model(path)(x)), _np(small(x)), atol=1e-6)
    # LayerNorm subtracts the mean over the channels: no rescaling makes it the masked model's.
    assert not np.allclose(_np(small(x)), _np(kprune.mask_channels(model, plan)(x)), atol=1e-3)


def test_a_stream_no_normalization_reads_is_an_ordinary_channel_group_and_removal_is_exact():
    model = _vit(norms=False)
    with pytest.raises(ValueError, match="no normalization reads its channels.*Received: hidden=0.25"):
        kprune.plan_channels(model, 0.0, hidden=0.25)
    plan = kprune.plan_channels(model, {"channels": 0.25}, round_to=1)
    (stream,) = [g for g in plan.groups if "patch_embedding" in g["producers"]]
    # A stream that is the output of a plain Functional model keeps its width (its interface).
    x = keras.Input((6, 4))
    h = keras.layers.Dense(8, name="embed")(x)
    ends_in_stream = keras.Model(x, keras.layers.LayerNormalization()(h))
    with pytest.raises(ValueError, match="its channels cannot be pruned: model output"):
        kprune.plan_channels(ends_in_stream, 0.0, hidden=0.25)
    assert stream["unit"] == "channel" and len(stream["pruned"]) == 4
    small = kprune.remove_channels(model, plan)
    assert small.get_layer("patch_embedding").units == 12
    x = _patches()
    np.testing.assert_allclose(_np(small(x)), _np(kprune.mask_channels(model, plan)(x)), atol=1e-5)


@pytest.mark.parametrize("name", ["qwen3", "gemma", "gpt2"])
def test_qwen3_gemma_and_gpt2_are_rebuilt_with_the_planned_hidden_size(name):
    model = BUILD[name]()
    plan = _plan(model, hidden=0.25, round_to=8)
    kept = _kept(plan)
    small = kprune.remove_channels(model, plan)
    assert (type(small).__name__, type(small.backbone).__name__) == SMALL[name]
    assert small.backbone.hidden_dim == len(kept) == 24
    dense, new = _weights(model), _weights(small)
    np.testing.assert_array_equal(new["token_embedding/embeddings"], dense["token_embedding/embeddings"][:, kept])
    model_axis = 1 if name == "gemma" else 0  # Gemma's query kernel is (heads, d, head_dim)
    for path in (p for p in dense if p.endswith("/query/kernel")):
        np.testing.assert_array_equal(new[path], np.take(dense[path], kept, model_axis))
    if name == "gpt2":
        np.testing.assert_array_equal(new["position_embedding/embeddings"],
                                      dense["position_embedding/embeddings"][:, kept])
    assert _np(small(_inputs())).shape == (2, SEQ, V)


def test_bert_and_mistral_are_refused_by_name_and_mask():
    # Mistral has a builder, but its family does not build a new hidden size.
    mistral = keras_hub.models.MistralBackbone(vocabulary_size=V, num_layers=LAYERS, num_query_heads=HQ,
                                               num_key_value_heads=HKV, hidden_dim=D, intermediate_dim=FFN)
    with pytest.raises(ValueError, match=r"Argument `hidden` .*\(MistralBackbone: 32 -> 24\)"):
        kprune.remove_channels(mistral, _plan(mistral, hidden=0.25))
    backbone = _random(keras_hub.models.BertBackbone(vocabulary_size=V, num_layers=LAYERS, num_heads=HQ,
                                                     hidden_dim=D, intermediate_dim=FFN, max_sequence_length=16))
    plan = _plan(backbone, hidden=0.25)
    with pytest.raises(ValueError, match=r"Argument `hidden` .*'bert_backbone' \(BertBackbone: 32 -> 24\).*"
                                         r"LlamaBackbone"):
        kprune.remove_channels(backbone, plan)
    x = {**_inputs(), "segment_ids": np.zeros((2, SEQ), "int32")}
    masked = kprune.mask_channels(backbone, plan)
    assert np.all(_np(masked(x)["sequence_output"])[..., np.setdiff1d(np.arange(D), _kept(plan))] == 0)


def test_l2_sums_the_norms_of_every_matrix_that_reads_or_writes_the_stream():
    model = _llama3()
    plan = _plan(model, hidden=0.25, importance="l2")
    scores = np.zeros(D)
    for v in model.weights:
        value = _np(v).astype(np.float64)
        if value.ndim >= 2:  # every matrix has one axis of size D (V=64, FFN=48, heads x head_dim 4x8)
            axis = value.shape.index(D)
            scores += np.sqrt((np.moveaxis(value, axis, 0).reshape(D, -1) ** 2).sum(axis=1))
    (entry,) = [g for g in plan.groups if g["unit"] == "hidden"]
    assert entry["pruned"] == sorted(np.argsort(scores, kind="stable")[:8].tolist())


def test_activation_prunes_the_channels_the_norms_silence():
    model = _llama3()
    silenced = [1, 5, 9, 13, 17, 21, 25, 29]
    for v in model.weights:
        if v.path.endswith("layernorm/scale"):
            value = _np(v)
            value[silenced] = 1e-3
            v.assign(value)
    activation = _plan(model, hidden=0.25, importance="activation", data=_inputs(8))
    l2 = _plan(model, hidden=0.25, importance="l2")
    assert [g["pruned"] for g in activation.groups if g["unit"] == "hidden"] == [silenced]
    assert [g["pruned"] for g in l2.groups if g["unit"] == "hidden"] != [silenced]  # scales are not weighed


def test_distillation_from_the_dense_model_lowers_the_kl():
    model = _llama3()
    small = kprune.remove_channels(model, _plan(model, hidden=0.25))
    x = _inputs(16)
    y = np.roll(x["token_ids"], -1, axis=1)

    def kl():
        p = _np(keras.ops.softmax(model(x)))
        log_q = _np(keras.ops.log_softmax(small(x)))
        return float(np.mean(np.sum(p * (np.log(p) - log_q), axis=-1)))

    before = kl()
    trainer = kprune.distiller(small, model, temperature=1.0, alpha=0.0)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trainer.fit(x, y, epochs=4, batch_size=16, verbose=0)
    assert kl() < 0.6 * before  # here: 0.015 -> 0.007


@pytest.mark.full_matrix
@pytest.mark.parametrize("name", list(BUILD))
def test_the_smaller_model_saves_as_a_preset_and_generates(name, tmp_path):
    model = BUILD[name]()
    small = kprune.remove_channels(model, _plan(model, hidden=0.25))
    small.backbone.save_to_preset(str(tmp_path))
    loaded = keras_hub.models.Backbone.from_preset(str(tmp_path))
    assert type(loaded) is type(small.backbone) and loaded.hidden_dim == 24
    x = _inputs()
    np.testing.assert_array_equal(_np(loaded(x)), _np(small.backbone(x)))
    prompt = {"token_ids": np.concatenate([x["token_ids"][:, :4], np.zeros((2, SEQ - 4), "int32")], 1),
              "padding_mask": np.concatenate([np.ones((2, 4), "int32"), np.zeros((2, SEQ - 4), "int32")], 1)}
    tokens = []
    for lm in (small, type(small)(backbone=loaded, preprocessor=None)):
        lm.compile(sampler="greedy")
        tokens.append(_np(lm.generate(prompt, stop_token_ids=None)["token_ids"]))
    np.testing.assert_array_equal(tokens[0], tokens[1])
    np.testing.assert_array_equal(tokens[0][:, :4], x["token_ids"][:, :4])
