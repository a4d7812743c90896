"""Gradual channel pruning: prune_channels, UpdatePruningStep, update_masks, save/load/resume."""

import keras
import numpy as np
import pytest
from keras import layers as L

import kprune
from kprune.channels.channel_masks import update_channel_masks
from kprune.channels.planning import keep_count
from kprune.dependency.channel_graph import ChannelGraph


def _residual(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((8, 8, 1))
    h = L.ReLU()(L.BatchNormalization(name="bn1")(L.Conv2D(32, 3, padding="same", name="c1")(x)))
    r = L.BatchNormalization(name="bn2")(L.Conv2D(32, 3, padding="same", name="c2")(h))
    h = L.ReLU()(L.Add()([h, r]))
    h = L.ReLU()(L.Conv2D(64, 3, strides=2, padding="same", name="c3")(h))
    y = L.Dense(10, name="head")(L.Flatten()(h))
    return keras.Model(x, y)


def _data(n=128, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, n)


def _compile(model):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _wrapper(model, name):
    return model.get_layer(f"prune_channels_{name}")


def test_wraps_every_layer_that_holds_slices_of_a_prunable_group():
    pruned = kprune.prune_channels(_residual())
    wrapped = sorted(w.layer.name for w in pruned.layers if isinstance(w, kprune.PruneChannels))
    # c1/c2/bn1/bn2 share the residual group, c3 feeds head; head's outputs are the model's.
    assert wrapped == ["bn1", "bn2", "c1", "c2", "c3", "head"]
    assert _wrapper(pruned, "head").masks[0].shape == (16 * 64, 10)


def test_gradual_schedule_reaches_exact_channel_counts_and_couples_branches():
    x, y = _data()
    schedule = kprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=8, frequency=2)
    pruned = _compile(kprune.prune_channels(_residual(), schedule, round_to=1))
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(kprune.channel_sparsity(self.model)["c3"][0])

    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0,
               callbacks=[kprune.UpdatePruningStep(), Watch()])
    # Sparsity only grows, follows the schedule at its turns and ends at 50%.
    assert seen == sorted(seen) and seen[0] < 32 and seen[-1] == 32
    # Batch b (0-based) is step b + 1, as in tfmot.
    turns = [64 - keep_count(64, float(schedule(s)[1]), 1) if bool(schedule(s)[0]) else None for s in range(1, 17)]
    last = 0
    for batch, count in enumerate(seen):
        last = turns[batch] if turns[batch] is not None else last
        assert count == last, (batch, count, turns)
    sparsity = kprune.channel_sparsity(pruned)
    assert sparsity["c1"] == sparsity["c2"] == (16, 32)
    # The residual Add: both branches lose the same channels, BN gammas too.
    dead1 = set(np.flatnonzero(keras.ops.convert_to_numpy(_wrapper(pruned, "bn1").layer.gamma) == 0).tolist())
    k1 = keras.ops.convert_to_numpy(_wrapper(pruned, "c1").layer.kernel)
    k2 = keras.ops.convert_to_numpy(_wrapper(pruned, "c2").layer.kernel)
    zero1 = set(np.flatnonzero(~np.any(k1.reshape(-1, 32), axis=0)).tolist())
    zero2 = set(np.flatnonzero(~np.any(k2.reshape(-1, 32), axis=0)).tolist())
    assert zero1 == zero2 == dead1 and len(zero1) == 16


def test_removal_after_training_equals_the_masked_model():
    x, y = _data()
    pruned = _compile(kprune.prune_channels(_residual(), kprune.ConstantSparsity(0.5, 0, frequency=4)))
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    small = kprune.remove_channels(pruned)
    assert not kprune.sparsity.prune.collect_wrappers(small)
    widths = {l.name: l.filters for l in small.layers if isinstance(l, L.Conv2D)}
    assert widths == {"c1": 16, "c2": 16, "c3": 32}
    assert np.abs(small.predict(x, verbose=0) - pruned.predict(x, verbose=0)).max() <= 1e-4
    assert kprune.count_macs(small) < 0.4 * kprune.count_macs(_residual())


def test_save_load_and_resume(tmp_path):
    x, y = _data()
    schedule = kprune.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=16, frequency=4)
    pruned = _compile(kprune.prune_channels(_residual(), schedule, importance="l1", round_to=4))
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    before = kprune.channel_sparsity(pruned)
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    wrapper = _wrapper(loaded, "c3")
    assert (wrapper.importance, wrapper.round_to) == ("l1", 4)
    assert int(wrapper.pruning_step.numpy()) == 8
    assert kprune.channel_sparsity(loaded) == before
    assert np.abs(loaded.predict(x, verbose=0) - pruned.predict(x, verbose=0)).max() <= 1e-5
    # Resume: the step continues from 8 and the schedule's end is reached.
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    assert int(_wrapper(loaded, "c3").pruning_step.numpy()) == 16
    assert kprune.channel_sparsity(loaded)["c3"] == (48, 64)
    assert kprune.channel_sparsity(loaded)["c3"][0] > before["c3"][0]


def test_one_shot_update_masks_and_pruned_weights_stay_zero():
    x, y = _data()
    pruned = kprune.prune_channels(_residual(), kprune.ConstantSparsity(0.5, begin_step=1), round_to=1)
    kprune.update_masks(pruned, sparsity=0.25)
    assert kprune.channel_sparsity(pruned)["c3"] == (16, 64)
    # Training keeps the masked channels at exactly zero (the mask constraint).
    kernel = keras.ops.convert_to_numpy(_wrapper(pruned, "c3").layer.kernel).reshape(-1, 64)
    dead = set(np.flatnonzero(~np.any(kernel, axis=0)).tolist())
    # Training then follows the schedule (50% at step 1, the first batch).
    _compile(pruned).fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    kernel = keras.ops.convert_to_numpy(_wrapper(pruned, "c3").layer.kernel).reshape(-1, 64)
    now = set(np.flatnonzero(~np.any(kernel, axis=0)).tolist())
    assert dead <= now and len(now) == 32


def test_mask_writer_writes_what_the_wrappers_write_one_by_one():
    # The callback writes all masks in one call (`mask_writer`); the result
    # equals the one-by-one path's, masks and weights, at two sparsities.
    from kprune.channels.channel_masks import mask_writer

    models = [kprune.prune_channels(_residual(), round_to=1) for _ in range(2)]
    wrappers = [[w for w in m.layers if isinstance(w, kprune.PruneChannels)] for m in models]
    writer = mask_writer(wrappers[1])
    for sparsity in (0.25, 0.5):
        update_channel_masks(models[0], sparsity, wrappers[0])
        update_channel_masks(models[1], sparsity, wrappers[1], writer=writer)
        for a, b in zip(models[0].weights, models[1].weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert kprune.channel_sparsity(models[1])["c3"] == (32, 64)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the writer is a tf.function on TensorFlow only")
def test_mask_writer_is_traced_when_training_begins_not_at_a_pruning_turn():
    # UpdatePruningStep builds the channel state (graph, writer) in
    # on_train_begin and runs the writer once there, so the first pruning
    # turn does not trace; later fit calls reuse the same writer.
    from kprune.channels import channel_masks

    x, y = _data(32)
    schedule = kprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=4, frequency=2)
    pruned = _compile(kprune.prune_channels(_residual(), schedule, round_to=1))
    weights = [keras.ops.convert_to_numpy(w) for w in pruned.weights]
    callback = kprune.UpdatePruningStep()
    callback.set_model(pruned)
    callback.on_train_begin()
    writer = channel_masks._CHANNEL_STATE[pruned][2]
    assert writer._function.experimental_get_tracing_count() == 1
    # Warming wrote the masks as they were: nothing changed.
    for before, w in zip(weights, pruned.weights):
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(w))
    for _ in range(2):
        pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    assert channel_masks._CHANNEL_STATE[pruned][2] is writer
    assert writer._function.experimental_get_tracing_count() == 1
    assert kprune.channel_sparsity(pruned)["c3"] == (32, 64)


def test_plan_of_wrapped_model_matches_plan_of_plain_model():
    model = _residual()
    pruned = kprune.prune_channels(model, round_to=1)
    plan = update_channel_masks(pruned, 0.5)
    plain = kprune.plan_channels(model, 0.5, round_to=1)
    assert plan.groups == plain.groups


def test_exclude_and_ratios():
    pruned = kprune.prune_channels(
        _residual(), kprune.ConstantSparsity(0.5, 0), exclude=["c3"], ratios={"c1": 0.25}, round_to=1
    )
    kprune.update_masks(pruned, sparsity=0.5)
    sparsity = kprune.channel_sparsity(pruned)
    # c3 keeps its 64 filters but reads 8 fewer input channels.
    assert sparsity["c1"] == (8, 32) and sparsity["c3"] == (0, 64)
    kernel = keras.ops.convert_to_numpy(_wrapper(pruned, "c3").layer.kernel)
    assert int((~np.any(kernel.transpose(2, 0, 1, 3).reshape(32, -1), axis=1)).sum()) == 8


def test_bn_scale_prunes_channels_with_small_gamma():
    model = _residual()
    gamma = np.linspace(1.0, 2.0, 32).astype("float32")
    gamma[[3, 7, 11, 19]] = 0.01
    model.get_layer("bn1").gamma.assign(gamma)
    model.get_layer("bn2").gamma.assign(np.ones(32, "float32"))
    pruned = kprune.prune_channels(model, importance="bn_scale", round_to=1)
    kprune.update_masks(pruned, sparsity=4 / 32)
    gamma = keras.ops.convert_to_numpy(_wrapper(pruned, "bn1").layer.gamma)
    assert set(np.flatnonzero(gamma == 0).tolist()) == {3, 7, 11, 19}


def test_mobilenet_v2_channel_pruning_trains_and_removes():
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=4, alpha=0.35)
    pruned = kprune.prune_channels(model, kprune.ConstantSparsity(0.5, 0, frequency=1))
    pruned.compile("sgd", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 32, 32, 3), dtype=np.float32), rng.integers(0, 4, 8)
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    small = kprune.remove_channels(pruned)
    assert np.abs(small.predict(x, verbose=0) - pruned.predict(x, verbose=0)).max() <= 1e-4
    convs = [l for l in small.layers if isinstance(l, L.Conv2D) and l.name != "Conv_1"]
    # round_to=8 by default: every pruned width is a multiple of 8.
    original = {l.name: l.filters for l in model.layers if isinstance(l, L.Conv2D)}
    assert all(l.filters % 8 == 0 for l in convs if l.filters != original[l.name])
    assert kprune.count_macs(small) < 0.6 * kprune.count_macs(model)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m: kprune.prune_channels(m, importance="taylor"), ValueError, "use kprune.plan_channels"),
        (lambda m: kprune.prune_channels(m, round_to=0), ValueError, "Received: round_to=0"),
        (lambda m: kprune.prune_channels(m, exclude=["nope"]), ValueError, "Layer 'nope'"),
        (lambda m: kprune.prune_channels(kprune.prune_channels(m)), ValueError, "already has kprune wrappers"),
        (lambda m: kprune.prune_channels("m"), TypeError, "Argument `model` must be a Keras model"),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(_residual())


@pytest.mark.parametrize("importance", ["thinet", "lasso", "hessian", "taylor", "apoz"])
def test_data_criteria_are_refused_with_the_reason_and_the_alternatives(importance):
    with pytest.raises(ValueError) as info:
        kprune.prune_channels(_residual(), importance=importance)
    message = str(info.value)
    assert f"Received: importance='{importance}' ('{importance}' is a data criterion" in message
    assert "kprune.plan_channels" in message and "kprune.prune_layerwise" in message


def test_model_without_prunable_group_is_refused():
    x = keras.Input((4,))
    model = keras.Model(x, L.Dense(3)(x))
    with pytest.raises(ValueError, match="no channel group that can be pruned"):
        kprune.prune_channels(model)


def test_fit_without_callback_is_refused():
    x, y = _data(16)
    pruned = _compile(kprune.prune_channels(_residual()))
    with pytest.raises(ValueError, match="UpdatePruningStep"):
        pruned.fit(x, y, verbose=0)


def test_graph_reads_through_wrappers():
    model = _residual()
    plain = ChannelGraph(model)
    wrapped = ChannelGraph(kprune.prune_channels(model))
    assert [(g.producers, len(g.units), g.blocked) for g in plain.groups] == [
        (g.producers, len(g.units), g.blocked) for g in wrapped.groups
    ]
