"""Sparse Structure Selection: residual branches, their scales, the proximal
step and the removal of zeroed blocks."""

import keras
import numpy as np
import pytest

import kprune

L = keras.layers


def _resnet():
    x = keras.Input((8, 8, 3))
    a = L.ReLU()(L.BatchNormalization(name="stem_bn")(L.Conv2D(8, 3, padding="same", name="stem")(x)))
    b = L.ReLU()(L.Conv2D(8, 3, padding="same", name="r1")(a))
    b = L.BatchNormalization(name="r2_bn")(L.Conv2D(8, 3, padding="same", name="r2")(b))
    a = L.ReLU()(L.Add(name="add1")([a, b]))
    p = L.Conv2D(12, 1, strides=2, name="proj")(a)
    c = L.Conv2D(12, 3, strides=2, padding="same", activation="relu", name="r3")(a)
    c = L.Conv2D(12, 3, padding="same", name="r4")(c)
    a = L.Add(name="add2")([p, c])
    d = L.Conv2D(12, 3, padding="same", activation="relu", name="r5")(a)
    a = L.Add(name="add3")([d, a])  # the branch is the first input here
    return keras.Model(x, L.Dense(4, name="head")(L.GlobalAveragePooling2D()(a)))


def test_residual_branches_finds_identity_and_projection_blocks():
    branches = kprune.residual_branches(_resnet())
    assert branches[1:] == [
        kprune.ResidualBranch("add2", 1, ["r3", "r4"]),  # the 1x1 projection is the shortcut
        kprune.ResidualBranch("add3", 0, ["r5"]),
    ]
    add1 = branches[0]
    assert (add1.add, add1.branch_index, len(add1.layers)) == ("add1", 1, 4)  # r1, its ReLU, r2, r2_bn
    assert add1.layers[0] == "r1" and add1.layers[-2:] == ["r2", "r2_bn"]


def test_an_add_of_two_independent_paths_is_not_a_residual_block():
    x = keras.Input((4, 4, 2))
    a = L.Conv2D(3, 1, name="a")(x)
    b = L.Conv2D(3, 1, name="b")(x)
    assert kprune.residual_branches(keras.Model(x, L.Add()([a, b]))) == []
    # A branch whose inner tensor leaves the block is not removable either.
    h = L.Conv2D(2, 1, name="h")(x)
    k = L.Conv2D(2, 1, name="k")(h)
    model = keras.Model(x, [L.Add()([x, k]), h])
    assert kprune.residual_branches(model) == []


def test_removed_blocks_equal_the_zero_scale_model(rng):
    model = _resnet()
    scaled = kprune.structure_selection(model)
    x = rng.normal(size=(16, 8, 8, 3)).astype("float32")
    # Scales of 1 leave the outputs unchanged.
    np.testing.assert_allclose(scaled.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    scaled.get_layer("add1_scale").scale.assign(0.0)
    scaled.get_layer("add2_scale").scale.assign(0.4)  # folded into r4
    scaled.get_layer("add3_scale").scale.assign(0.0)
    small = kprune.remove_branches(scaled)
    names = {layer.name for layer in small.layers}
    assert not names & {"r1", "r2", "r2_bn", "r5", "add1", "add3"}
    assert {"r3", "r4", "add2", "proj"} <= names
    assert not any(isinstance(layer, kprune.BranchScale) for layer in small.layers)
    np.testing.assert_allclose(small.predict(x, verbose=0), scaled.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    assert kprune.count_macs(small) < kprune.count_macs(model)


def test_a_scale_after_an_activation_stays_a_layer(rng):
    x = keras.Input((4, 4, 2))
    h = L.Conv2D(2, 1, activation="relu", name="h")(x)
    model = keras.Model(x, L.Add(name="add")([x, h]))
    scaled = kprune.structure_selection(model)
    scaled.get_layer("add_scale").scale.assign(0.5)
    small = kprune.remove_branches(scaled)
    assert any(isinstance(layer, kprune.BranchScale) for layer in small.layers)
    data = rng.normal(size=(4, 4, 4, 2)).astype("float32")
    np.testing.assert_allclose(small.predict(data, verbose=0), scaled.predict(data, verbose=0), rtol=1e-6)


def test_the_proximal_step_zeroes_scales_exactly(rng):
    scaled = kprune.structure_selection(_resnet())
    scaled.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, 32)
    # 4 steps with threshold 0.1 * 3 = 0.3 each: every scale reaches 0 unless
    # its gradient pushes it up by more than 0.3 per step.
    scaled.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[kprune.StructureSparsity(3.0)])
    assert kprune.branch_scales(scaled) == {"add1": 0.0, "add2": 0.0, "add3": 0.0}
    small = kprune.remove_branches(scaled)
    assert [layer.name for layer in small.layers if isinstance(layer, L.Add)] == []


def _sss_data(rng):
    x = rng.normal(size=(64, 8, 8, 3)).astype("float32")
    return x, (x[:, :, :, 0].mean(axis=(1, 2)) > 0).astype("int32")


def test_training_with_a_strong_penalty_removes_blocks_exactly(rng):
    x, y = _sss_data(rng)
    model = _resnet()
    scaled = kprune.structure_selection(model)
    scaled.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    scaled.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=[kprune.StructureSparsity(0.3)])
    scales = kprune.branch_scales(scaled)
    removed = [name for name, value in scales.items() if value == 0.0]
    assert removed  # the proximal step reaches exactly 0 during ordinary training
    small = kprune.remove_branches(scaled)
    adds = {layer.name for layer in small.layers if isinstance(layer, L.Add)}
    assert adds == set(scales) - set(removed)
    assert not any(isinstance(layer, kprune.BranchScale) for layer in small.layers)
    np.testing.assert_allclose(small.predict(x, verbose=0), scaled.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    assert kprune.count_macs(small) < kprune.count_macs(model)


def test_the_threshold_carries_the_optimizer_momentum(rng):
    x, y = _sss_data(rng)
    results = {}
    for momentum in (None, 0.0):
        keras.utils.set_random_seed(0)
        scaled = kprune.structure_selection(_resnet())
        scaled.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                       keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        callback = kprune.StructureSparsity(0.1, momentum=momentum)
        scaled.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[callback])  # 8 steps
        results[momentum] = (callback.threshold, sum(kprune.branch_scales(scaled).values()))
    # s_t = mu s_{t-1} + lr gamma: the accelerated threshold after 8 steps, and the plain one.
    np.testing.assert_allclose(results[None][0], 0.05 * 0.1 * (1 - 0.9**8) / (1 - 0.9), rtol=1e-6)
    np.testing.assert_allclose(results[0.0][0], 0.05 * 0.1, rtol=1e-6)
    assert results[None][1] < results[0.0][1] - 0.1  # the scales shrink faster


def test_gamma_zero_is_plain_training(rng):
    scaled = kprune.structure_selection(_resnet())
    scaled.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    scaled.fit(x, np.zeros(8), epochs=1, verbose=0, callbacks=[kprune.StructureSparsity(0.0)])
    assert kprune.branch_scales(scaled) == {"add1": 1.0, "add2": 1.0, "add3": 1.0}


def test_branch_scale_round_trips_through_saving(tmp_path):
    scaled = kprune.structure_selection(_resnet())
    path = tmp_path / "scaled.keras"
    scaled.save(path)
    loaded = keras.models.load_model(path)
    assert set(kprune.branch_scales(loaded)) == {"add1", "add2", "add3"}


def test_errors():
    with pytest.raises(ValueError, match=r"`gamma` must be a number >= 0. Received: gamma=-1"):
        kprune.StructureSparsity(-1)
    with pytest.raises(ValueError, match=r"`momentum` must be None or a number in \[0, 1\). Received: momentum=1"):
        kprune.StructureSparsity(0.1, momentum=1)
    x = keras.Input((4,))
    with pytest.raises(ValueError, match="has no residual branch"):
        kprune.structure_selection(keras.Model(x, L.Dense(2)(x)))
