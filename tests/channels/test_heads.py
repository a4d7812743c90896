"""Attention heads and FFN units of a functional transformer (issue 25).

A ViT-like Functional model (`MultiHeadAttention` with biases, LayerNorm,
residual `Add`s, a GELU MLP): heads are groups of their own, FFN units are
the MLP's channel groups, the residual stream is blocked by the norms. The
masked model and the removed one give the same outputs, a removed head's
value bias is folded into the output bias (checked against NumPy), and the
smaller model holds fewer heads.
"""

import keras
import numpy as np
import pytest

import kprune
from kprune.dependency.channel_graph import ChannelGraph
from kprune.registry.attention import fold_value_bias, head_spec

D, T, HEADS, HD, MLP = 16, 6, 4, 4, 32


def vit(layers=2, classes=3):
    x = keras.Input((T, D))
    h = x
    for i in range(layers):
        n = keras.layers.LayerNormalization(name=f"ln1_{i}")(h)
        a = keras.layers.MultiHeadAttention(HEADS, HD, name=f"mha_{i}")(n, n)
        h = keras.layers.Add(name=f"add1_{i}")([h, a])
        n = keras.layers.LayerNormalization(name=f"ln2_{i}")(h)
        m = keras.layers.Dense(MLP, activation="gelu", name=f"fc1_{i}")(n)
        m = keras.layers.Dense(D, name=f"fc2_{i}")(m)
        h = keras.layers.Add(name=f"add2_{i}")([h, m])
    y = keras.layers.Dense(classes, name="head")(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(x, y)
    rng = np.random.default_rng(0)  # biases too: the fold must matter
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    return model


def _data(n=4):
    return np.random.default_rng(1).normal(size=(n, T, D)).astype("float32")


def test_heads_and_ffn_units_are_groups_and_the_residual_stream_is_not():
    graph = ChannelGraph(vit())
    prunable = [(g.unit, g.producers, len(g.units)) for g in graph.prunable_groups]
    assert prunable == [("head", ["mha_0"], HEADS), ("channel", ["fc1_0"], MLP),
                        ("head", ["mha_1"], HEADS), ("channel", ["fc1_1"], MLP)]
    stream = graph.groups[0]
    assert stream.producers == ["mha_0", "fc2_0", "mha_1", "fc2_1"] and stream.blocked
    # A head is 4 query + 4 key + 4 value columns and their biases, and 4 output rows.
    heads = graph.prunable_groups[0]
    assert graph.unit_costs(heads).tolist() == [3 * (D * HD + HD) + HD * D] * HEADS


@pytest.mark.parametrize("sparsity", [{"heads": 0.5}, {"channels": 0.5}, 0.5])
def test_masked_and_removed_models_agree(sparsity):
    model = vit()
    plan = kprune.plan_channels(model, sparsity, round_to=1)
    masked = kprune.mask_channels(model, plan)
    removed = kprune.remove_channels(model, plan)
    x = _data()
    np.testing.assert_allclose(removed(x), masked(x), atol=1e-5)
    # Removing what the masked model no longer reads gives the same model.
    np.testing.assert_allclose(kprune.remove_channels(masked)(x), masked(x), atol=1e-5)
    heads = [removed.get_layer(f"mha_{i}").get_config()["num_heads"] for i in range(2)]
    units = [removed.get_layer(f"fc1_{i}").units for i in range(2)]
    prune_heads = not isinstance(sparsity, dict) or "heads" in sparsity
    prune_units = not isinstance(sparsity, dict) or "channels" in sparsity
    assert heads == [HEADS // 2 if prune_heads else HEADS] * 2
    assert units == [MLP // 2 if prune_units else MLP] * 2
    assert kprune.count_params(removed) < kprune.count_params(model)


def test_a_removed_heads_value_bias_is_folded_into_the_output_bias():
    model = vit(layers=1)
    mha = model.get_layer("mha_0")
    plan = kprune.plan_channels(model, {"heads": 0.5}, round_to=1)
    gone = [g for g in plan.groups if g["pruned"]][0]["pruned"]
    masked = kprune.mask_channels(model, plan)
    # NumPy: b_o + sum over removed heads of b_v[h] @ W_o[h].
    b_v, w_o, b_o = (keras.ops.convert_to_numpy(v) for v in
                     (mha.value_dense.bias, mha.output_dense.kernel, mha.output_dense.bias))
    expected = b_o + sum(b_v[h] @ w_o[h] for h in gone)
    np.testing.assert_allclose(masked.get_layer("mha_0").output_dense.bias.numpy(), expected, rtol=1e-5)
    # Without the fold the masked model would lose the constant: with it, the
    # attention output equals the dense one minus the removed heads' inputs.
    values = {id(v): keras.ops.convert_to_numpy(v) for v in mha.weights}
    fold_value_bias(values, head_spec(mha), [])
    assert np.array_equal(values[id(mha.output_dense.bias)], b_o)  # nothing removed, nothing added


def test_global_ranking_by_parameters_spends_the_budget_on_parameters():
    model = vit()
    graph = ChannelGraph(model)
    plan = kprune.plan_channels(model, 0.5, round_to=1, global_ranking="params")
    removed_cost = 0.0
    total = 0.0
    for group in graph.prunable_groups:
        costs = graph.unit_costs(group)
        entry = plan.groups[group.index]
        removed_cost += costs[entry["pruned"]].sum()
        total += costs.sum()
    # Heads and FFN units are ranked apart, each kind losing about half its parameters.
    assert 0.3 < removed_cost / total < 0.6


def test_head_sparsity_must_name_known_unit_kinds():
    with pytest.raises(ValueError, match=r"Argument `sparsity` must be a fraction or a dict with keys "
                       r"among \['channels', 'heads'\]. Received: sparsity=\{'hidden': 0.5\}"):
        kprune.plan_channels(vit(layers=1), {"hidden": 0.5})
    with pytest.raises(ValueError, match=r"Argument `heads` must be one of \('kv', 'query'\)"):
        kprune.plan_channels(vit(layers=1), 0.5, heads="all")


def test_heads_and_units_are_pruned_gradually_during_fit():
    model = vit()
    pruned = kprune.prune_channels(model, kprune.PolynomialDecay(0.0, 0.5, 0, 4, frequency=1), round_to=1)
    pruned.compile("adam", "mse")
    x, y = _data(16), np.zeros((16, 3), "float32")
    pruned.fit(x, y, epochs=2, batch_size=4, callbacks=[kprune.UpdatePruningStep()], verbose=0)
    stripped = kprune.strip_pruning(pruned)
    # A pruned head's query, key and value columns and output rows are all 0.
    mha = stripped.get_layer("mha_0")
    rows = np.abs(mha.output_dense.kernel.numpy()).sum(axis=(1, 2)) == 0
    assert rows.sum() == HEADS // 2
    assert not np.abs(mha.query_dense.kernel.numpy()[:, rows]).any()
    small = kprune.remove_channels(pruned)
    assert small.get_layer("mha_0").get_config()["num_heads"] == HEADS // 2
    assert small.get_layer("fc1_0").units == MLP // 2
    np.testing.assert_allclose(small(x), stripped(x), atol=1e-5)
