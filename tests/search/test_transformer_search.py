"""Budget searches on transformers (issue 25): per-layer heads and FFN units.

A tiny random KerasHub Llama 3 (grouped-query attention: 4 query heads, 2
key/value heads) and a functional ViT-like model (`MultiHeadAttention`):

* the search space counts heads as whole units (query heads a multiple of
  the key/value heads) and refuses per-layer key/value groups where KerasHub
  keeps one KV cache;
* the cost model predicts the parameters and MACs `count_params` and
  `count_macs` count on the smaller model;
* NetAdapt, simulated annealing and the other searches meet a params or MACs
  budget with a small data evaluator, and their plan removes to a smaller
  model of the stated class that equals the masked model;
* what cannot fit (a latency table, AMC's least-squares reconstruction of a
  KerasHub model) raises an error naming the search and the model.
"""

import keras
import numpy as np
import pytest

import kprune
from kprune.search.budget import Constraint
from kprune.search.space import SearchSpace

keras_hub = pytest.importorskip("keras_hub")

V, D, LAYERS, SEQ = 64, 32, 3, 10
PATCHES, PATCH, VD, HEADS, HD, MLP, CLASSES = 9, 12, 16, 4, 4, 32, 5
ATTENTION = [f"transformer_layer_{i}/self_attention" for i in range(LAYERS)]
FFN = [f"transformer_layer_{i}/feedforward_intermediate_dense" for i in range(LAYERS)]


def _llama3():
    model = keras_hub.models.Llama3CausalLM(backbone=keras_hub.models.Llama3Backbone(
        vocabulary_size=V, num_layers=LAYERS, num_query_heads=4, num_key_value_heads=2, hidden_dim=D,
        intermediate_dim=32), preprocessor=None)
    rng = np.random.default_rng(0)  # distinct weights (KerasHub seeds equal shapes alike)
    model.set_weights([rng.normal(0.0, 0.2, w.shape).astype("float32") for w in model.get_weights()])
    return model


def _tokens(n=8, seed=1):
    rng = np.random.default_rng(seed)
    return {"token_ids": rng.integers(0, V, (n, SEQ)).astype("int32"), "padding_mask": np.ones((n, SEQ), "int32")}


def _vit():
    x = keras.Input((PATCHES, PATCH))
    h = keras.layers.Dense(VD, name="patch_embedding")(x)
    for i in range(LAYERS):
        n = keras.layers.LayerNormalization(name=f"ln1_{i}")(h)
        h = keras.layers.Add(name=f"add1_{i}")([h, keras.layers.MultiHeadAttention(HEADS, HD, name=f"mha_{i}")(n, n)])
        n = keras.layers.LayerNormalization(name=f"ln2_{i}")(h)
        m = keras.layers.Dense(MLP, activation="gelu", name=f"fc1_{i}")(n)
        h = keras.layers.Add(name=f"add2_{i}")([h, keras.layers.Dense(VD, name=f"fc2_{i}")(m)])
    h = keras.layers.LayerNormalization(name="ln_final")(h)
    y = keras.layers.Dense(CLASSES, name="head")(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(x, y)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    return model


def _patches(n=16, seed=1):
    return np.random.default_rng(seed).normal(size=(n, PATCHES, PATCH)).astype("float32")


def _llama_evaluator(model, x):
    """Minus the cross-entropy of the pruned model against the dense model's next tokens."""
    y = np.argmax(model.predict(x, verbose=0), axis=-1)
    return kprune.search.negative_loss(x, y, keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def _vit_evaluator(model, x):
    """Minus the squared error of the pruned model's logits against the dense model's."""
    return kprune.search.negative_loss(x, model.predict(x, verbose=0), "mse")


def _out(model, x):
    return keras.ops.convert_to_numpy(model(x))


def _llama_widths(small):
    """Per layer: (query heads, FFN units) of a (smaller) Llama 3 from its kernels."""
    weights = {v.path: v for v in small.backbone.weights}
    heads = [int(weights[f"{a}/query/kernel"].shape[1]) for a in ATTENTION]
    units = [int(weights[f"{f}/kernel"].shape[1]) for f in FFN]
    return heads, units


def _check_removed(model, result, x):
    """The plan removes to a model equal to the masked one; returns the smaller model."""
    small = kprune.remove_channels(model, result.plan)
    masked = kprune.mask_channels(model, result.plan)
    assert np.max(np.abs(_out(small, x) - _out(masked, x))) <= 1e-4
    assert not np.allclose(_out(small, x), _out(model, x), atol=1e-3)  # it was pruned
    return small


# ------------------------------------------------------------------ the space


def test_heads_are_whole_units_and_query_heads_a_multiple_of_the_key_value_heads():
    vit = SearchSpace(_vit())
    assert vit.names == [name for i in range(LAYERS) for name in (f"mha_{i}", f"fc1_{i}")]
    for name, allowed in zip(vit.names, vit.allowed):
        # round_to=8 counts channels: heads are any whole number of them.
        assert allowed.tolist() == ([1, 2, 3, 4] if name.startswith("mha") else [8, 16, 24, 32])
    llama = SearchSpace(_llama3(), heads="query")
    assert llama.names == [name for pair in zip(ATTENTION, FFN) for name in pair]
    for name, allowed, group in zip(llama.names, llama.allowed, llama.groups):
        assert allowed.tolist() == ([2, 4] if name in ATTENTION else [8, 16, 24, 32])
        assert group.unit == ("query_head" if name in ATTENTION else "channel")
    # The narrowest plan drops one query head from each key/value group.
    plan = llama.plan(llama.min_widths)
    for entry in plan.groups:
        if entry["unit"] == "query_head":
            assert sorted(p // 2 for p in entry["pruned"]) == [0, 1]


def test_per_layer_key_value_groups_of_a_keras_hub_model_are_refused():
    model = _llama3()
    with pytest.raises(ValueError, match=r"A search cannot give the attention layers of model 'llama3_causal_lm' "
                                         r"\(Llama3CausalLM\) different numbers of key/value groups.*heads='query'"):
        SearchSpace(model)
    with pytest.raises(ValueError, match="different numbers of key/value groups"):
        kprune.netadapt(model, kprune.Budget(params=0.8), lambda m: 0.0, fine_tune=0, verbose=0)
    # Kept whole, the attention leaves the FFN units to search.
    assert SearchSpace(model, exclude=ATTENTION).names == FFN


@pytest.mark.parametrize("build", ["vit", pytest.param("llama3", marks=pytest.mark.full_matrix)])
def test_the_cost_model_predicts_the_counted_params_and_macs(build):
    model = _vit() if build == "vit" else _llama3()
    space = SearchSpace(model, heads="query")
    constraint = Constraint(space, kprune.Budget(params=0.5, macs=0.5))
    assert constraint.dense == {"params": kprune.count_params(model), "macs": kprune.count_macs(model)}
    rng = np.random.default_rng(3)
    for _ in range(2):
        widths = np.array([rng.choice(a) for a in space.allowed])
        small = kprune.remove_channels(model, space.plan(widths))
        assert constraint.resources(widths) == {"params": kprune.count_params(small),
                                                "macs": kprune.count_macs(small)}


# --------------------------------------------------------------- the searches


def test_netadapt_gives_a_llama3_per_layer_widths_under_a_params_budget():
    model, x = _llama3(), _tokens()
    budget = kprune.Budget(params=0.65)  # below what the FFN units alone give (0.696): heads must go too
    result = kprune.netadapt(model, budget, _llama_evaluator(model, x), fine_tune=0, heads="query",
                             initial_reduction=0.1, verbose=0)
    assert result.met and result.stopped == "budget met"
    small = _check_removed(model, result, x)
    heads, units = _llama_widths(small)
    assert heads == [result.widths[a] for a in ATTENTION] and units == [result.widths[f] for f in FFN]
    assert all(h % 2 == 0 for h in heads) and min(heads) < 4  # query heads per key/value group
    assert type(small).__name__ == "Llama3CausalLM"
    # The stock class says one width for all layers, and computes the head size from the heads.
    stock = len(set(heads)) == 1 and len(set(units)) == 1 and heads[0] == 4
    assert type(small.backbone).__name__ == ("Llama3Backbone" if stock else "PrunedLlama3Backbone")
    assert kprune.count_params(small) == result.resources["params"] <= result.targets["params"]
    assert result.targets["params"] == pytest.approx(0.65 * kprune.count_params(model))
    # NetAdapt's own model (its weights: no fine-tuning here) is the removed one.
    np.testing.assert_allclose(_out(result.model, x), _out(small, x), atol=1e-5)


@pytest.mark.full_matrix  # the default run's Llama 3 search is NetAdapt's (each rebuilds the model ~10 times)
def test_simulated_annealing_gives_a_llama3_per_layer_widths_under_a_macs_budget():
    model, x = _llama3(), _tokens()
    result = kprune.simulated_annealing(model, kprune.Budget(macs=0.7), _llama_evaluator(model, x),
                                        heads="query", max_evaluations=6, verbose=0)
    assert result.met
    small = _check_removed(model, result, x)
    heads, units = _llama_widths(small)
    assert heads == [result.widths[a] for a in ATTENTION] and units == [result.widths[f] for f in FFN]
    assert kprune.count_macs(small) == result.resources["macs"] <= result.targets["macs"]


SEARCHES = {
    "uniform": lambda model, budget, evaluate: kprune.search.uniform(model, budget, verbose=0),
    "netadapt": lambda model, budget, evaluate: kprune.netadapt(model, budget, evaluate, fine_tune=0,
                                                                initial_reduction=0.1, verbose=0),
    "simulated_annealing": lambda model, budget, evaluate: kprune.simulated_annealing(
        model, budget, evaluate, max_evaluations=8, verbose=0),
    "sensitivity": lambda model, budget, evaluate: kprune.sensitivity(
        model, evaluate, ratios=(0.25, 0.5, 0.75), budget=budget, verbose=0).allocation,
    "amc": lambda model, budget, evaluate: kprune.amc(model, budget, evaluate, episodes=3, warmup=2,
                                                      hidden=(8, 8), batch_size=4, verbose=0),
}


# Every search under a params budget, NetAdapt under a MACs budget too (the others' MACs runs: full_matrix).
CASES = [(m, k) if k == "params" or m == "netadapt" else pytest.param(m, k, marks=pytest.mark.full_matrix)
         for m in sorted(SEARCHES) for k in ("params", "macs")]


@pytest.mark.parametrize("method,kind", CASES)
def test_every_search_gives_a_vit_per_layer_heads_and_units_under_a_budget(method, kind):
    model, x = _vit(), _patches()
    budget = kprune.Budget(**{kind: 0.6})
    result = SEARCHES[method](model, budget, _vit_evaluator(model, x))
    assert result.met
    small = _check_removed(model, result, x)
    assert type(small) is type(model)  # Functional
    heads = {layer.name: layer.num_heads for layer in small.layers
             if isinstance(layer, keras.layers.MultiHeadAttention)}
    units = {layer.name: layer.units for layer in small.layers if layer.name.startswith("fc1_")}
    assert {**heads, **units} == result.widths
    count = kprune.count_params(small) if kind == "params" else kprune.count_macs(small)
    assert count == result.resources[kind] <= result.targets[kind]


def test_auto_compress_trains_a_vit_towards_its_widths_under_a_params_budget():
    model, x = _vit(), _patches()
    y = model.predict(x, verbose=0)
    model.compile(optimizer="adam", loss="mse")

    def train(m, epochs, callbacks):
        m.fit(x, y, epochs=epochs, batch_size=8, verbose=0, callbacks=callbacks)

    result = kprune.auto_compress(model, kprune.Budget(params=0.6), _vit_evaluator(model, x), train=train,
                                  num_iterations=1, sa_max_evaluations=3, admm_num_iterations=1,
                                  admm_training_epochs=1, verbose=0)
    assert result.met
    assert kprune.count_params(_check_removed(model, result, x)) <= result.targets["params"]


# ------------------------------------------------------ what does not fit


def test_a_latency_budget_on_a_transformer_names_the_search_and_the_model():
    with pytest.raises(ValueError, match=r"netadapt cannot meet a latency budget on model 'functional.*' "
                                         r"\(Functional\).*cannot time attention layers \(mha_0, mha_1, mha_2\)"
                                         r".*kprune.Budget\(params=...\)"):
        kprune.netadapt(_vit(), kprune.Budget(latency=0.5), lambda m: 0.0, fine_tune=0, verbose=0)
    with pytest.raises(ValueError, match=r"simulated_annealing cannot meet a latency budget on model "
                                         r"'llama3_causal_lm' \(Llama3CausalLM\).*transformer_layer_0/self_attention"):
        kprune.simulated_annealing(_llama3(), kprune.Budget(max_latency_ms=0.1), lambda m: 0.0, heads="query",
                                   verbose=0)


def test_amc_refuses_to_reconstruct_a_keras_hub_model():
    with pytest.raises(ValueError, match=r"amc cannot refit the layers of model 'llama3_causal_lm' "
                                         r"\(Llama3CausalLM\) with `reconstruct=`.*reconstruct=None"):
        kprune.amc(_llama3(), kprune.Budget(params=0.8), lambda m: 0.0, heads="query", reconstruct=_tokens())


# ----------------------------------------------------------- the evaluators


def test_token_accuracy_and_negative_loss_on_a_causal_lm_against_numpy():
    model, x = _llama3(), _tokens(4)
    logits = model.predict(x, verbose=0)
    y = np.random.default_rng(2).integers(0, V, (4, SEQ))
    assert kprune.search.accuracy(x, y)(model) == pytest.approx(np.mean(np.argmax(logits, -1) == y))
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    expected = np.mean(np.take_along_axis(log_p, y[..., None], -1))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert kprune.search.negative_loss(x, y, loss)(model) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match=r"Argument `y` must hold one label per output position of the model: 40"):
        kprune.search.accuracy(x, y[:, :3])(model)
