"""The layer-by-layer procedure: prune_layerwise and fine_tuner."""

import keras
import numpy as np
import pytest

import kprune
from kprune.channels.planning import keep_count
from kprune.dependency.channel_graph import ChannelGraph

L = keras.layers


def _model():
    x = keras.Input((8, 8, 3))
    a = L.ReLU()(L.BatchNormalization(name="stem_bn")(L.Conv2D(8, 3, padding="same", name="stem")(x)))
    b = L.Conv2D(6, 3, padding="same", activation="relu", name="r1")(a)
    b = L.Conv2D(8, 3, padding="same", name="r2")(b)
    a = L.Add(name="add")([a, b])
    c = L.Conv2D(10, 3, strides=2, activation="relu", name="c3")(a)
    y = L.Dense(3, name="head")(L.GlobalAveragePooling2D()(c))
    return keras.Model(x, y)


def _data(rng, n=48):
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    return x, (np.arange(n) % 3).astype("int32")


def _pruned_counts(plan):
    return {tuple(g["producers"]): (g["channels"], len(g["pruned"])) for g in plan.groups if g["producers"]}


def test_prunes_the_requested_channels_of_every_group_and_removal_matches_masking(rng):
    model = _model()
    x, y = _data(rng)
    tune = kprune.fine_tuner(x, y, keras.losses.SparseCategoricalCrossentropy(from_logits=True), epochs=1)
    kwargs = dict(importance="l1", fine_tune=tune, final_fine_tune=tune)
    small, plan = kprune.prune_layerwise(model, 0.5, **kwargs)
    masked, masked_plan = kprune.prune_layerwise(model, 0.5, remove=False, **kwargs)
    assert masked_plan.groups == plan.groups  # deterministic
    graph = ChannelGraph(model)
    for group in graph.prunable_groups:
        entry = plan.groups[group.index]
        assert len(entry["pruned"]) == len(group.units) - keep_count(len(group.units), 0.5, 1)
    counts = _pruned_counts(plan)
    assert counts[("r1",)] == (6, 3) and counts[("c3",)] == (10, 5)
    assert counts[("stem", "r2")] == (8, 4)  # the residual Add ties stem and r2: one group
    assert (small.get_layer("r1").filters, small.get_layer("c3").filters, small.get_layer("stem").filters) == (3, 5, 4)
    # The masked model (original shapes, pruned slices at 0) is the small model.
    assert masked.get_layer("r1").filters == 6
    np.testing.assert_allclose(small.predict(x, verbose=0), masked.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    again = kprune.remove_channels(masked, masked_plan)
    np.testing.assert_allclose(again.predict(x, verbose=0), small.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    # Fine-tuning changed the weights (and the input model is untouched).
    assert not np.allclose(small.get_layer("head").bias.numpy(), model.get_layer("head").bias.numpy())
    assert model.get_layer("r1").filters == 6


def test_each_group_is_followed_by_a_fine_tune_and_the_weights_come_back(rng):
    model = _model()
    seen = []

    def fine_tune(pruned):
        seen.append(pruned.get_layer("r1").filters)
        head = pruned.get_layer("head")
        head.bias.assign(np.full(head.bias.shape, float(len(seen)), "float32"))

    final = []

    def final_fine_tune(pruned):
        final.append(pruned.get_layer("c3").filters)
        assert pruned.get_layer("head").bias.numpy()[0] == len(seen)  # the last step's weights came back

    small, plan = kprune.prune_layerwise(model, 0.5, importance="l2", fine_tune=fine_tune,
                                         final_fine_tune=final_fine_tune)
    pruned_groups = [g for g in plan.groups if g["pruned"]]
    assert len(seen) == len(pruned_groups) == 3
    # Groups go in graph order: stem/r2 first (r1 still whole), then r1, then c3.
    assert seen == [6, 3, 3]
    assert final == [5]
    np.testing.assert_array_equal(small.get_layer("head").bias.numpy(), [3.0, 3.0, 3.0])


def test_fine_tuner_lowers_the_loss(rng):
    x, y = _data(rng)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = _model()
    before = float(loss(y, model.predict(x, verbose=0)))
    kprune.fine_tuner(x, y, loss, optimizer=keras.optimizers.Adam(1e-2), epochs=5)(model)
    assert float(loss(y, model.predict(x, verbose=0))) < before


def test_selection_sees_the_partly_pruned_model(rng):
    model = _model()
    widths = []

    def importance(graph, group):
        widths.append(int(np.count_nonzero(np.any(graph.model.get_layer("r1").kernel.numpy() != 0, axis=(0, 1, 2)))))
        return np.arange(len(group.units), dtype=float)

    kprune.prune_layerwise(model, 0.5, importance=importance)
    assert widths == [6, 6, 3]  # r1 lost 3 filters at step 2, which step 3 sees


def test_reconstruction_refits_the_readers_of_each_group(rng):
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(8, 3, activation="relu", name="c1"),
                              L.Conv2D(8, 3, activation="relu", name="c2"), L.Conv2D(6, 3, name="c3"),
                              L.GlobalAveragePooling2D()])
    x = rng.random((64, 8, 8, 3), dtype=np.float32)
    dense = model.predict(x, verbose=0)
    errors = {}
    for rec in (False, True):
        small, _ = kprune.prune_layerwise(model, 0.5, importance="thinet", data=x, reconstruct=rec)
        errors[rec] = float(np.mean((small.predict(x, verbose=0) - dense) ** 2))
    assert errors[True] < 0.5 * errors[False]


def test_nested_models_are_pruned_group_by_group(rng):
    inner = keras.Sequential([keras.Input((6, 6, 4)), L.Conv2D(8, 3, activation="relu", name="i1"),
                              L.Conv2D(6, 3, name="i2")], name="inner")
    x = keras.Input((8, 8, 3))
    h = inner(L.Conv2D(4, 3, activation="relu", name="c0")(x))
    model = keras.Model(x, L.Dense(2, name="head")(L.GlobalAveragePooling2D()(h)))
    calls = []
    small, plan = kprune.prune_layerwise(model, 0.5,
                                         fine_tune=lambda m: calls.append(m.get_layer("inner").layers[0].filters))
    masked, _ = kprune.prune_layerwise(model, 0.5, remove=False)
    assert calls == [8, 4, 4]  # c0, then i1, then i2
    assert [layer.filters for layer in small.get_layer("inner").layers] == [4, 3]
    data = rng.random((8, 8, 8, 3), dtype=np.float32)
    np.testing.assert_allclose(small.predict(data, verbose=0), masked.predict(data, verbose=0), rtol=1e-5, atol=1e-6)


def test_excluded_groups_stay_whole(rng):
    small, plan = kprune.prune_layerwise(_model(), 0.5, exclude=["c3"])
    assert small.get_layer("c3").filters == 10
    assert _pruned_counts(plan)[("c3",)] == (10, 0)
    assert [g["reason"] for g in plan.groups if g["producers"] == ["c3"]] == ["excluded"]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(fine_tune="yes"), TypeError, r"`fine_tune` must be None or a callable"),
        (dict(final_fine_tune=3), TypeError, r"`final_fine_tune` must be None or a callable"),
        (dict(reconstruct=True), ValueError, r"`reconstruct=True` refits layers on data"),
        (dict(importance="thinet"), ValueError, r"measures the model on data"),
        (dict(round_to=0), ValueError, r"Received: round_to=0"),
        (dict(exclude=["nope"]), ValueError, r"Layer 'nope'"),
    ],
)
def test_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        kprune.prune_layerwise(_model(), 0.5, **kwargs)


def test_fine_tuner_errors():
    with pytest.raises(ValueError, match=r"`loss` is required"):
        kprune.fine_tuner(np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match=r"`epochs` must be an integer >= 1. Received: epochs=0"):
        kprune.fine_tuner(np.zeros((2, 2)), np.zeros(2), "mse", epochs=0)
