"""check_sparsity_m_by_n on Keras models and .tflite files, against NumPy."""

import keras
import numpy as np
import pytest

import kprune
from kprune.sparsity.sparsity_check import is_m_by_n


def test_is_m_by_n_against_groups():
    w = np.array([[1, 0, 2, 0, 3, 4], [0, 0, 1, 1, 0, 5]], dtype="float32")
    # Groups of 4 along the last axis: [1 0 2 0][3 4] and [0 0 1 1][0 5].
    # m zeros in every n, as tfmot reads (m, n).
    assert is_m_by_n(w, 2, 4)
    assert not is_m_by_n(w, 3, 4)
    assert is_m_by_n(w, 1, 4)
    assert is_m_by_n(w.T, 2, 4, axis=0)  # the same groups along axis 0 of w.T
    assert not is_m_by_n(np.ones((2, 3)), 2, 4)  # a short group: 1 zero counted, 2 needed


def test_keras_wrapped_stripped_and_tflite(tmp_path):
    model = keras.Sequential([
        keras.Input((6, 6, 8)),
        keras.layers.Conv2D(8, 3, name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(4, name="head"),
    ])
    pruned = kprune.prune_low_magnitude(model, sparsity_m_by_n=(2, 4))
    assert kprune.check_sparsity_m_by_n(pruned, 2, 4) == {"conv/kernel": False, "head/kernel": False}
    kprune.update_masks(pruned)
    expected = {"conv/kernel": True, "head/kernel": True}
    assert kprune.check_sparsity_m_by_n(pruned, 2, 4) == expected
    stripped = kprune.strip_pruning(pruned)
    assert kprune.check_sparsity_m_by_n(stripped, 2, 4) == expected
    assert kprune.check_sparsity_m_by_n(stripped, 3, 4) == {"conv/kernel": False, "head/kernel": False}
    path = tmp_path / "m.tflite"
    kprune.export_tflite(stripped, str(path))
    checked = kprune.check_sparsity_m_by_n(str(path), 2, 4)
    assert len(checked) == 2 and all(checked.values())
    assert kprune.check_sparsity_m_by_n(path.read_bytes(), 2, 4) == checked
    assert not any(kprune.check_sparsity_m_by_n(str(path), 3, 4).values())


@pytest.mark.parametrize("args, message", [((0, 4), "Received: m=0, n=4"), ((4, 4), "1 <= m < n")])
def test_errors(args, message):
    with pytest.raises(ValueError, match=message):
        kprune.check_sparsity_m_by_n(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), *args)
    with pytest.raises(TypeError, match="Argument `model_or_tflite` must be a Keras model"):
        kprune.check_sparsity_m_by_n(3, 2, 4)
