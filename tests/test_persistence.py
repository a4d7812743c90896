"""Save mid-training, reload without custom_objects, resume: same result as never stopping."""

import json
import zipfile

import keras
import numpy as np
import pytest

import kprune
from kprune.masks import target_zeros
from kprune.pruning import collect_wrappers


def _model():
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(4),
        ]
    )


def _data():
    rng = np.random.default_rng(3)
    return rng.normal(size=(64, 8, 8, 4)).astype("float32"), rng.integers(0, 4, size=64)


def _pruned(**kwargs):
    model = kprune.prune_low_magnitude(
        _model(),
        pruning_schedule=kprune.PolynomialDecay(0.0, 0.8, begin_step=1, end_step=27, frequency=3),
        **kwargs,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _fit(model, epochs, initial_epoch=0):
    x, y = _data()
    model.fit(
        x, y, batch_size=8, epochs=epochs, initial_epoch=initial_epoch, shuffle=False,
        verbose=0, callbacks=[kprune.UpdatePruningStep()],
    )


def _state(model):
    return [
        (m.numpy().copy(), v.numpy().copy())
        for w in collect_wrappers(model)
        for v, m in w.pruned_weights
    ]


@pytest.mark.parametrize("kwargs", [{}, {"block_size": (1, 2)}, {"sparsity_m_by_n": (2, 4)}])
def test_resume_after_save_equals_uninterrupted(tmp_path, kwargs):
    straight = _pruned(**kwargs)
    _fit(straight, 4)

    first = _pruned(**kwargs)
    _fit(first, 2)  # 16 steps: stops between mask updates at 13 and 16->19
    path = tmp_path / "mid.keras"
    first.save(path)
    resumed = keras.models.load_model(path)  # no custom_objects
    assert [int(w.pruning_step.numpy()) for w in collect_wrappers(resumed)] == [16, 16, 16]
    for (m0, v0), (m1, v1) in zip(_state(first), _state(resumed)):
        np.testing.assert_array_equal(m0, m1)
        np.testing.assert_array_equal(v0, v1)
    _fit(resumed, 4, initial_epoch=2)

    for (m0, v0), (m1, v1) in zip(_state(straight), _state(resumed)):
        np.testing.assert_array_equal(m0, m1)
        np.testing.assert_allclose(v0, v1, rtol=1e-5, atol=1e-6)
    for w in collect_wrappers(resumed):
        assert int(w.pruning_step.numpy()) == 32
        for v, m in w.pruned_weights:
            m = m.numpy()
            if "sparsity_m_by_n" in kwargs:
                groups = np.moveaxis(m, -2, -1).reshape(-1, 4)
                assert (groups.sum(axis=1) == 2).all()
            elif "block_size" not in kwargs:
                assert int((m == 0).sum()) == target_zeros(m.size, 0.8)


def test_saved_config_keeps_every_argument(tmp_path):
    model = _pruned(sparsity_m_by_n=(2, 4))
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        config = json.loads(z.read("config.json"))
    layer = config["config"]["layers"][1]  # [0] is the InputLayer
    assert layer["registered_name"] == "kprune>PruneLowMagnitude"
    cfg = layer["config"]
    assert cfg["sparsity_m_by_n"] == [2, 4]
    assert cfg["block_size"] == [1, 1]
    assert cfg["block_pooling_type"] == "AVG"
    assert cfg["pruning_schedule"]["registered_name"] == "kprune>PolynomialDecay"
    loaded = keras.models.load_model(tmp_path / "m.keras")
    w = collect_wrappers(loaded)[0]
    assert w.sparsity_m_by_n == (2, 4)
    assert w.pruning_schedule == kprune.PolynomialDecay(0.0, 0.8, begin_step=1, end_step=27, frequency=3)


def test_loaded_model_requires_callback_too(tmp_path):
    model = _pruned()
    _fit(model, 1)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    x, y = _data()
    with pytest.raises(ValueError, match="UpdatePruningStep"):
        loaded.fit(x, y, verbose=0)


def test_stripped_model_saves_as_plain_keras(tmp_path):
    model = _pruned()
    _fit(model, 2)
    stripped = kprune.strip_pruning(model)
    stripped.save(tmp_path / "plain.keras")
    with zipfile.ZipFile(tmp_path / "plain.keras") as z:
        assert b"kprune" not in z.read("config.json")
    loaded = keras.models.load_model(tmp_path / "plain.keras")
    x, _ = _data()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
