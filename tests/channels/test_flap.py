"""FLAP (An et al., AAAI 2024) in kprune: per-group z-scores before global
ranking, heads and FFN units in one parameter budget, and bias compensation
(`b += mean(X)[pruned] @ W[pruned]`), against NumPy references; the
compensated masked and removed models agree and are closer to the dense model
than uncompensated ones, on a Dense model, a functional ViT and a tiny GPT-2."""

import keras
import numpy as np
import pytest

import kprune
from kprune.dependency.channel_graph import ChannelGraph

T, D = 5, 6


def _set_random(model, scale=0.5, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, scale, w.shape).astype("float32") for w in model.get_weights()])
    return model


def _mlp(widths=(12, 8, 4), use_bias=True):
    """x -> relu Dense widths[0] -> relu Dense widths[1] -> ... -> Dense 3 (the readers have biases)."""
    x = keras.Input((T, D))
    h = x
    for i, width in enumerate(widths):
        h = keras.layers.Dense(width, activation="relu", name=f"fc{i}")(h)
    return _set_random(keras.Model(x, keras.layers.Dense(3, name="out", use_bias=use_bias)(h)))


def _data(n=16, seed=1, shape=(T, D)):
    # Nonzero means: relu units then have means a bias can absorb.
    return (np.random.default_rng(seed).normal(size=(n,) + shape) + 0.5).astype("float32")


def _max_error(a, b):
    return float(np.max(np.abs(keras.ops.convert_to_numpy(a) - keras.ops.convert_to_numpy(b))))


def _mean_error(model, other, x):
    return float(np.mean((keras.ops.convert_to_numpy(model(x)) - keras.ops.convert_to_numpy(other(x))) ** 2))


# ----------------------------------------------------------------- z-scores


def _given_scores(table):
    """A criterion returning fixed scores per group producer."""
    def score(graph, group):
        return table[group.producers[0]]
    return score


def test_zscore_global_ranking_matches_a_numpy_reference():
    model = _mlp()
    rng = np.random.default_rng(3)
    # Groups on very different scales: the mean normalization and the z-score disagree.
    table = {"fc0": rng.gamma(2.0, 1.0, 12) * 100.0, "fc1": rng.normal(5.0, 0.1, 8),
             "fc2": rng.gamma(0.5, 1.0, 4)}
    plan = kprune.plan_channels(model, 0.5, importance=_given_scores(table), global_ranking=True,
                                normalize="zscore", round_to=1)
    z = {k: (s - s.mean()) / s.std(ddof=1) for k, s in table.items()}
    values = np.sort(np.concatenate(list(z.values())))
    threshold = values[int(np.floor(values.size * 0.5 + 0.5)) - 1]
    pruned = {g["producers"][0]: len(g["pruned"]) for g in plan.groups if not g["reason"]}
    assert pruned == {k: int((v <= threshold).sum()) for k, v in z.items()}
    for g in plan.groups:  # within a group the lowest go
        if not g["reason"]:
            s = table[g["producers"][0]]
            assert sorted(g["pruned"]) == sorted(np.argsort(s, kind="stable")[:len(g["pruned"])].tolist())
    default = kprune.plan_channels(model, 0.5, importance=_given_scores(table), global_ranking=True, round_to=1)
    assert {g["producers"][0]: len(g["pruned"]) for g in default.groups if not g["reason"]} != pruned


def _vit_block(heads=4, head_dim=2, mlp=16):
    x = keras.Input((T, 8))
    n = keras.layers.LayerNormalization(name="ln1")(x)
    h = keras.layers.Add()([x, keras.layers.MultiHeadAttention(heads, head_dim, name="mha")(n, n)])
    n = keras.layers.LayerNormalization(name="ln2")(h)
    m = keras.layers.Dense(8, name="fc2")(keras.layers.Dense(mlp, activation="relu", name="fc1")(n))
    return _set_random(keras.Model(x, keras.layers.Add()([h, m])))


def test_pooled_ranking_puts_heads_and_units_in_one_parameter_budget():
    model = _vit_block()
    graph = ChannelGraph(model)
    heads = next(g for g in graph.prunable_groups if g.unit == "head")
    units = next(g for g in graph.prunable_groups if g.unit == "channel")
    rng = np.random.default_rng(4)
    table = {"mha": rng.normal(size=4), "fc1": rng.normal(size=16)}
    plan = kprune.plan_channels(model, 0.4, importance=_given_scores(table), global_ranking="pooled",
                                normalize="zscore", round_to=1)
    # NumPy: z-scores, ascending, pruned until 40% of the pooled parameters.
    keys = np.concatenate([(s - s.mean()) / s.std(ddof=1) for s in table.values()])
    cost = np.concatenate([graph.unit_costs(heads), graph.unit_costs(units)])
    assert graph.unit_costs(heads)[0] == 4 * 8 * 2 + 3 * 2  # q, k, v, o rows and q, k, v biases
    order = np.argsort(keys, kind="stable")
    cut = int(np.searchsorted(np.cumsum(cost[order]), 0.4 * cost.sum(), side="right"))
    chosen = np.zeros(keys.size, bool)
    chosen[order[:cut]] = True
    pruned = {g["producers"][0]: len(g["pruned"]) for g in plan.groups if g["pruned"]}
    assert pruned == {"mha": int(chosen[:4].sum()), "fc1": int(chosen[4:].sum())}
    # A parameter budget shared by both kinds needs one fraction.
    with pytest.raises(ValueError, match="must be one fraction with global_ranking='pooled'"):
        kprune.plan_channels(model, {"heads": 0.5}, importance=_given_scores(table), global_ranking="pooled")


def test_normalize_is_checked():
    model = _mlp()
    with pytest.raises(ValueError, match=r"Argument `normalize` must be one of \[None, 'mean', 'zscore'\]"):
        kprune.plan_channels(model, 0.5, global_ranking=True, normalize="minmax")
    with pytest.raises(ValueError, match="Argument `normalize` applies to global ranking only"):
        kprune.plan_channels(model, 0.5, normalize="zscore")


def _flap_reference(model, x):
    """FLAP's `prune_flap` metric in NumPy for `_vit_block`: WIFV per input
    channel of the output projection (squared) and of fc2, z-scored per layer
    (`ddof=1`), averaged per head."""
    mha, fc1, fc2 = model.get_layer("mha"), model.get_layer("fc1"), model.get_layer("fc2")
    ln1, ln2 = model.get_layer("ln1"), model.get_layer("ln2")
    n = keras.ops.convert_to_numpy(ln1(x))
    context = _head_contexts(mha, n)  # (n, T, H, hd)
    h = x + keras.ops.convert_to_numpy(mha(n, n))
    m = np.maximum(keras.ops.convert_to_numpy(ln2(h)) @ fc1.kernel.numpy() + fc1.bias.numpy(), 0.0)
    w_o = mha.output_dense.kernel.numpy()
    heads, hd = w_o.shape[:2]
    attention = (context.reshape(-1, heads * hd).var(axis=0) * (w_o.reshape(heads * hd, -1) ** 2).sum(axis=1)) ** 2
    mlp = m.reshape(-1, m.shape[-1]).var(axis=0) * (fc2.kernel.numpy() ** 2).sum(axis=1)

    def standardize(v):
        return (v - v.mean()) / v.std(ddof=1)

    return standardize(attention).reshape(heads, hd).mean(axis=1), standardize(mlp)


def test_flap_scores_are_flaps_standardized_metric_and_rank_as_they_are():
    model, x = _vit_block(), _data(shape=(T, 8))
    graph = ChannelGraph(model)
    criterion = kprune.criteria.get("flap", data=x).bind(model)
    heads = next(g for g in graph.prunable_groups if g.unit == "head")
    units = next(g for g in graph.prunable_groups if g.unit == "channel")
    expected_heads, expected_units = _flap_reference(model, x)
    np.testing.assert_allclose(criterion(graph, heads), expected_heads, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(criterion(graph, units), expected_units, rtol=1e-4, atol=1e-6)
    # Global ranking keeps them (no second normalization): FLAP's pooled selection.
    plan = kprune.plan_channels(model, 0.6, importance="flap", data=x, global_ranking="pooled", round_to=1)
    keys = np.concatenate([expected_heads, expected_units])
    cost = np.concatenate([graph.unit_costs(heads), graph.unit_costs(units)])
    order = np.argsort(keys, kind="stable")
    chosen = order[:int(np.searchsorted(np.cumsum(cost[order]), 0.6 * cost.sum(), side="right"))]
    pruned = {g["producers"][0]: sorted(g["pruned"]) for g in plan.groups if g["producers"] and not g["reason"]}
    assert pruned == {"mha": sorted(c for c in chosen.tolist() if c < 4),
                      "fc1": sorted(c - 4 for c in chosen.tolist() if c >= 4)}
    assert pruned["mha"] and pruned["fc1"]  # heads and units compete
    with pytest.raises(ValueError, match="Argument `normalize` cannot be 'mean' with importance 'flap'"):
        kprune.plan_channels(model, 0.4, importance="flap", data=x, global_ranking=True, normalize="mean")


# ------------------------------------------------------------ compensation


def test_compensation_adds_the_pruned_inputs_mean_through_the_readers_kernel():
    model, x = _mlp(widths=(12,)), _data()
    plan = kprune.plan_channels(model, 0.5, round_to=1)
    (pruned,) = [g["pruned"] for g in plan.groups if g["pruned"]]
    fc0, out = model.get_layer("fc0"), model.get_layer("out")
    h = np.maximum(x @ fc0.kernel.numpy() + fc0.bias.numpy(), 0.0).reshape(-1, 12)
    expected = out.bias.numpy() + h.mean(axis=0)[pruned] @ out.kernel.numpy()[pruned]
    for result in (kprune.mask_channels(model, plan, compensate=x), kprune.remove_channels(model, plan, compensate=x)):
        np.testing.assert_allclose(result.get_layer("out").bias.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(kprune.mask_channels(model, plan).get_layer("out").bias.numpy(), out.bias.numpy())


def test_compensated_masked_and_removed_models_agree_and_are_closer_to_the_dense_model():
    model, x, held_out = _mlp(), _data(), _data(seed=2)
    plan = kprune.plan_channels(model, 0.5, importance="fluctuation", data=x, global_ranking=True,
                                normalize="zscore", round_to=1)
    masked = kprune.mask_channels(model, plan, compensate=x)
    small = kprune.remove_channels(model, plan, compensate=x)
    assert small.get_layer("fc0").units < 12
    assert _max_error(small(held_out), masked(held_out)) <= 1e-4
    # Removing what a compensated mask cut off keeps the compensated biases.
    assert _max_error(kprune.remove_channels(masked)(held_out), masked(held_out)) <= 1e-4
    plain = kprune.remove_channels(model, plan)
    assert _mean_error(small, model, held_out) < _mean_error(plain, model, held_out)


def test_a_reader_without_a_bias_raises_naming_it():
    model, x = _mlp(use_bias=False), _data()
    plan = kprune.plan_channels(model, 0.5, round_to=1)
    message = (r"Layer 'out' \(Dense\) reads pruned units but has no bias to absorb their mean "
               r"contribution \(`compensate=`\): build it with `use_bias=True`")
    with pytest.raises(ValueError, match=message):
        kprune.mask_channels(model, plan, compensate=x)
    with pytest.raises(ValueError, match=message):
        kprune.remove_channels(model, plan, compensate=x)


def test_compensation_without_a_plan_raises():
    model, x = _mlp(), _data()
    masked = kprune.mask_channels(model, kprune.plan_channels(model, 0.5, round_to=1))
    with pytest.raises(ValueError, match="Argument `compensate` needs a `plan`"):
        kprune.remove_channels(masked, compensate=x)


# ------------------------------------------------------------ transformers


def _head_contexts(mha, x):
    """NumPy attention: each head's context (n, T, H, hd), the output projection's input."""
    def project(dense):
        return np.einsum("ntd,dhk->nthk", x, dense.kernel.numpy()) + dense.bias.numpy()
    q, k, v = project(mha.query_dense), project(mha.key_dense), project(mha.value_dense)
    scores = np.einsum("nqhk,nshk->nhqs", q, k) / np.sqrt(q.shape[-1])
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("nhqs,nshk->nqhk", weights, v)


def test_a_heads_compensation_is_its_mean_context_and_replaces_the_value_bias_fold():
    x = keras.Input((T, 8))
    model = _set_random(keras.Model(x, keras.layers.MultiHeadAttention(4, 3, name="mha")(x, x)))
    data = _data(shape=(T, 8))
    plan = kprune.plan_channels(model, {"heads": 0.5}, round_to=1)
    (pruned,) = [g["pruned"] for g in plan.groups if g["pruned"]]
    mha = model.get_layer("mha")
    context = _head_contexts(mha, data)  # its mean holds the value bias
    w_o = mha.output_dense.kernel.numpy()  # (H, hd, out)
    expected = mha.output_dense.bias.numpy() + np.einsum(
        "hk,hko->o", context.mean(axis=(0, 1))[pruned], w_o[pruned])
    small = kprune.remove_channels(model, plan, compensate=data)
    np.testing.assert_allclose(small.get_layer("mha").output_dense.bias.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert _max_error(small(data), kprune.mask_channels(model, plan, compensate=data)(data)) <= 1e-4


def _vit(layers=2, heads=4, head_dim=4, mlp=32, d=16, patches=9, patch=12):
    """A functional ViT-like classifier (as tests/transformers/test_functional_vit.py)."""
    x = keras.Input((patches, patch))
    h = keras.layers.Dense(d, name="patch_embedding")(x)
    for i in range(layers):
        n = keras.layers.LayerNormalization(name=f"ln1_{i}")(h)
        h = keras.layers.Add()([h, keras.layers.MultiHeadAttention(heads, head_dim, name=f"mha_{i}")(n, n)])
        n = keras.layers.LayerNormalization(name=f"ln2_{i}")(h)
        m = keras.layers.Dense(mlp, activation="gelu", name=f"fc1_{i}")(n)
        h = keras.layers.Add()([h, keras.layers.Dense(d, name=f"fc2_{i}")(m)])
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization(name="ln_final")(h))
    return _set_random(keras.Model(x, keras.layers.Dense(5, name="head")(h)), scale=0.3)


def test_flap_on_a_functional_vit():
    model, x, held_out = _vit(), _data(shape=(9, 12)), _data(8, seed=2, shape=(9, 12))
    plan = kprune.plan_channels(model, 0.3, importance="flap", data=x, global_ranking="pooled", round_to=1)
    assert {g["unit"] for g in plan.groups if g["pruned"]} == {"head", "channel"}
    small = kprune.remove_channels(model, plan, compensate=x)
    masked = kprune.mask_channels(model, plan, compensate=x)
    assert _max_error(small(held_out), masked(held_out)) <= 1e-4
    plain = kprune.remove_channels(model, plan)
    assert _mean_error(small, model, held_out) < _mean_error(plain, model, held_out)


def test_flap_on_a_tiny_gpt2():
    keras_hub = pytest.importorskip("keras_hub")
    model = keras_hub.models.GPT2CausalLM(backbone=keras_hub.models.GPT2Backbone(
        vocabulary_size=64, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=32,
        max_sequence_length=16), preprocessor=None)
    _set_random(model, scale=0.2)
    rng = np.random.default_rng(1)
    x = {"token_ids": rng.integers(0, 64, (8, 10)).astype("int32"), "padding_mask": np.ones((8, 10), "int32")}
    plan = kprune.plan_channels(model, 0.3, importance="fluctuation", data=x, global_ranking="pooled",
                                normalize="zscore", round_to=1)
    small = kprune.remove_channels(model, plan, compensate=x)
    masked = kprune.mask_channels(model, plan, compensate=x)
    assert type(small).__name__ == "PrunedGPT2CausalLM"
    assert _max_error(small(x), masked(x)) <= 1e-4
    plain = kprune.remove_channels(model, plan)
    assert _mean_error(small, model, x) < _mean_error(plain, model, x)


def test_a_keras_hub_llama_without_biases_raises_naming_the_projection():
    keras_hub = pytest.importorskip("keras_hub")
    model = keras_hub.models.Llama3CausalLM(backbone=keras_hub.models.Llama3Backbone(
        vocabulary_size=32, num_layers=1, num_query_heads=4, num_key_value_heads=2, hidden_dim=16,
        intermediate_dim=16), preprocessor=None)
    x = {"token_ids": np.ones((2, 6), "int32"), "padding_mask": np.ones((2, 6), "int32")}
    plan = kprune.plan_channels(model, {"heads": 0.5}, round_to=1)
    with pytest.raises(ValueError, match=r"Layer 'transformer_layer_0/self_attention/attention_output' "
                                         r"\(EinsumDense\) reads pruned units but has no bias"):
        kprune.remove_channels(model, plan, compensate=x)
