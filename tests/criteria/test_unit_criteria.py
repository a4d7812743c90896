"""The criteria of transformer units (issue 25) against NumPy references:
Minitron's activation, FLAP's fluctuation (FFN units and attention heads),
LLM-Pruner's element-wise Taylor, and the random baseline."""

import keras
import numpy as np
import pytest

import kprune
from kprune.criteria import catalog
from kprune.dependency.channel_graph import ChannelGraph
from kprune.utils import backends

T, D, I, H, HD = 5, 6, 8, 2, 3


def _mlp():
    x = keras.Input((T, D))
    h = keras.layers.Dense(I, activation="relu", name="up")(x)
    model = keras.Model(x, keras.layers.Dense(2, name="down")(h))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def _attention():
    x = keras.Input((T, D))
    model = keras.Model(x, keras.layers.MultiHeadAttention(H, HD, name="mha")(x, x))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def _data(n=7):
    return np.random.default_rng(1).normal(size=(n, T, D)).astype("float32")


def _scores(model, name, data, **kwargs):
    graph = ChannelGraph(model)
    criterion = catalog.get(name, data=data, **kwargs).bind(model)
    return criterion(graph, graph.prunable_groups[0])


def _hidden(model, x):
    up = model.get_layer("up")
    return np.maximum(x @ up.kernel.numpy() + up.bias.numpy(), 0.0)  # (n, T, I)


def test_activation_is_minitrons_l2_over_examples_of_the_mean_magnitude_over_tokens():
    model, x = _mlp(), _data()
    expected = np.sqrt((np.abs(_hidden(model, x)).mean(axis=1) ** 2).sum(axis=0))
    np.testing.assert_allclose(_scores(model, "activation", x), expected, rtol=1e-5)


def test_fluctuation_is_flaps_variance_times_squared_weight_norm():
    model, x = _mlp(), _data()
    hidden = _hidden(model, x).reshape(-1, I)
    w = model.get_layer("down").kernel.numpy()
    expected = hidden.var(axis=0) * (w ** 2).sum(axis=1)
    np.testing.assert_allclose(_scores(model, "fluctuation", x), expected, rtol=1e-4)


def _head_outputs(mha, x):
    """NumPy attention: each head's context (n, T, H, HD), the output projection's input."""
    q = np.einsum("ntd,dhk->nthk", x, mha.query_dense.kernel.numpy()) + mha.query_dense.bias.numpy()
    k = np.einsum("ntd,dhk->nthk", x, mha.key_dense.kernel.numpy()) + mha.key_dense.bias.numpy()
    v = np.einsum("ntd,dhk->nthk", x, mha.value_dense.kernel.numpy()) + mha.value_dense.bias.numpy()
    scores = np.einsum("nqhk,nshk->nhqs", q, k) / np.sqrt(HD)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("nhqs,nshk->nqhk", weights, v)


def test_head_criteria_read_the_output_projections_input_per_head():
    model, x = _attention(), _data()
    context = _head_outputs(model.get_layer("mha"), x)  # (n, T, H, HD)
    expected = np.sqrt((np.linalg.norm(context, axis=-1).mean(axis=1) ** 2).sum(axis=0))
    np.testing.assert_allclose(_scores(model, "activation", x), expected, rtol=1e-4)
    w_o = model.get_layer("mha").output_dense.kernel.numpy()  # (H, HD, D)
    flat = context.reshape(-1, H, HD)
    expected = (flat.var(axis=0) * (w_o ** 2).sum(axis=-1)).mean(axis=1)
    np.testing.assert_allclose(_scores(model, "fluctuation", x), expected, rtol=1e-4)


def test_element_taylor_sums_the_absolute_weight_times_summed_gradient_over_a_units_slices():
    model, x = _mlp(), _data()
    y = np.random.default_rng(2).normal(size=(len(x), T, 2)).astype("float32")
    loss = keras.losses.MeanSquaredError()
    variables = model.trainable_variables
    grads = backends.gradients(model, x, lambda out: keras.ops.mean(loss(y, out)), variables)
    g = {v.path: keras.ops.convert_to_numpy(gr) for v, gr in zip(variables, grads)}
    up, down = model.get_layer("up"), model.get_layer("down")
    expected = (np.abs(up.kernel.numpy() * g[up.kernel.path]).sum(axis=0)
                + np.abs(up.bias.numpy() * g[up.bias.path])
                + np.abs(down.kernel.numpy() * g[down.kernel.path]).sum(axis=1))
    np.testing.assert_allclose(_scores(model, "taylor_element", (x, y), loss=loss), expected, rtol=1e-4)


def test_random_scores_are_seeded_and_prune_like_any_criterion():
    model = _mlp()
    first = kprune.plan_channels(model, 0.5, importance="random", round_to=1)
    again = kprune.plan_channels(model, 0.5, importance="random", round_to=1)
    assert first.groups == again.groups and first.num_pruned == I // 2


@pytest.mark.parametrize("name", ["activation", "fluctuation"])
def test_activation_criteria_need_data(name):
    with pytest.raises(ValueError, match=f"Importance '{name}' measures the model on data"):
        kprune.plan_channels(_mlp(), 0.5, importance=name)


def _llama3():
    keras_hub = pytest.importorskip("keras_hub")
    model = keras_hub.models.Llama3CausalLM(backbone=keras_hub.models.Llama3Backbone(
        vocabulary_size=32, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=16,
        intermediate_dim=16), preprocessor=None)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0.0, 0.2, w.shape).astype("float32") for w in model.get_weights()])
    x = {"token_ids": rng.integers(0, 32, (3, 6)).astype("int32"), "padding_mask": np.ones((3, 6), "int32")}
    return model, x, rng.integers(0, 32, (3, 6)).astype("int32")


def test_the_criteria_score_every_head_and_ffn_unit_of_a_grouped_query_llama():
    model, x, y = _llama3()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for name, data in (("activation", x), ("fluctuation", x), ("taylor_element", (x, y))):
        scores = {}
        for heads in ("query", "kv"):
            graph = ChannelGraph(model, heads=heads)
            criterion = catalog.get(name, data=data, loss=loss).bind(model)
            scores[heads] = {g.unit: criterion(graph, g) for g in graph.prunable_groups if g.unit != "channel"}
            ffn = [criterion(graph, g) for g in graph.prunable_groups if g.unit == "channel"]
            assert len(ffn) == 2 and all(s is not None and s.shape == (16,) and (s > 0).all() for s in ffn)
        # A key/value group is read through its query heads' rows: its activation score is
        # theirs summed; its Taylor score adds its key and value rows.
        query, kv = scores["query"]["query_head"].reshape(2, 2).sum(axis=1), scores["kv"]["kv_group"]
        if name == "taylor_element":
            assert (kv > query).all()
        else:
            np.testing.assert_allclose(kv, query, rtol=1e-5, err_msg=name)
        plan = kprune.plan_channels(model, 0.5, importance=name, data=data, loss=loss, round_to=1)
        assert all(g["pruned"] for g in plan.groups if g["unit"] in ("kv_group", "channel") and not g["reason"])
        np.testing.assert_allclose(kprune.remove_channels(model, plan)(x), kprune.mask_channels(model, plan)(x),
                                   atol=1e-4)
