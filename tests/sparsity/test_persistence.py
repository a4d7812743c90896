"""Save mid-training, reload without custom_objects, resume: same result as never stopping."""

import json
import zipfile

import keras
import numpy as np
import pytest

import kprune
from kprune.sparsity.mask_math import target_zeros
from kprune.sparsity.prune import collect_wrappers


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
        for _, m in w.pruned_weights:
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


def _h5_datasets(group, prefix=""):
    import h5py

    for name, item in group.items():
        if isinstance(item, h5py.Dataset):
            yield f"{prefix}{name}", item
        else:
            yield from _h5_datasets(item, f"{prefix}{name}/")


def test_masks_are_saved_at_one_byte_per_weight(tmp_path):
    import h5py

    model = _pruned()
    _fit(model, 2)
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        z.extract("model.weights.h5", tmp_path)
    with h5py.File(tmp_path / "model.weights.h5") as f:
        masks = [d for _, d in _h5_datasets(f) if d.dtype == bool]
        assert sorted(d.shape for d in masks) == sorted(
            tuple(m.shape) for w in collect_wrappers(model) for _, m in w.pruned_weights
        )
        assert all(d.dtype.itemsize == 1 for d in masks)


def test_loads_files_written_with_float32_masks(tmp_path):
    """Files from kprune versions whose masks were float32 load into boolean masks."""
    import h5py

    model = _pruned()
    _fit(model, 2)
    model.save(tmp_path / "new.keras")
    # Rewrite the file as an earlier version wrote it: every mask as float32 0/1.
    with zipfile.ZipFile(tmp_path / "new.keras") as z:
        members = {name: z.read(name) for name in z.namelist()}
    (tmp_path / "w.h5").write_bytes(members["model.weights.h5"])
    with h5py.File(tmp_path / "w.h5", "r+") as f:
        converted = 0
        for path, d in list(_h5_datasets(f)):
            if d.dtype == bool:
                value = d[()].astype(np.float32)
                del f[path]
                f.create_dataset(path, data=value)
                converted += 1
        assert converted == 3
    members["model.weights.h5"] = (tmp_path / "w.h5").read_bytes()
    with zipfile.ZipFile(tmp_path / "old.keras", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)

    old = keras.models.load_model(tmp_path / "old.keras")
    for (m0, v0), (m1, v1) in zip(_state(model), _state(old)):
        assert m1.dtype == bool
        np.testing.assert_array_equal(m0, m1)
        np.testing.assert_array_equal(v0, v1)
    _fit(old, 3, initial_epoch=2)  # resumes
    for w in collect_wrappers(old):
        for v, m in w.pruned_weights:
            assert not np.any(v.numpy()[~m.numpy()])
