import glob

import keras
import numpy as np
import pytest
import tensorflow as tf

import kprune
from kprune.pruning import collect_wrappers


@pytest.mark.parametrize("update_freq", ["epoch", 2])
def test_pruning_summaries_log_sparsity(tmp_path, update_freq):
    model = kprune.prune_low_magnitude(
        keras.Sequential([keras.Input((6,)), keras.layers.Dense(10), keras.layers.Dense(3)]),
        pruning_schedule=kprune.ConstantSparsity(0.7, begin_step=0, frequency=1),
    )
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    y = np.zeros((32, 3), "float32")
    model.fit(
        x, y, batch_size=8, epochs=2, verbose=0,
        callbacks=[kprune.UpdatePruningStep(), kprune.PruningSummaries(str(tmp_path), update_freq=update_freq)],
    )
    files = glob.glob(str(tmp_path / "train" / "events*"))
    assert files
    scalars = {}
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag.startswith("sparsity/"):
                    scalars.setdefault(value.tag, []).append(tf.make_ndarray(value.tensor).item())
    expected = {f"sparsity/{w.name}/{v.name}" for w in collect_wrappers(model) for v, _ in w.pruned_weights}
    assert set(scalars) == expected
    for tag, values in scalars.items():
        assert len(values) == (2 if update_freq == "epoch" else 4)
        mask = {f"sparsity/{w.name}/{v.name}": m for w in collect_wrappers(model) for v, m in w.pruned_weights}[tag]
        assert values[-1] == pytest.approx(1.0 - float(np.mean(mask.numpy())), abs=1e-6)
        assert values[-1] == pytest.approx(0.7, abs=0.02)


def test_pruning_summaries_requires_log_dir():
    with pytest.raises(ValueError, match="Argument `log_dir` must be a non-empty path. Received: log_dir=''"):
        kprune.PruningSummaries("")
