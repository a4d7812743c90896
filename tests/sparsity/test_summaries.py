import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kprune
from kprune.sparsity.prune import collect_wrappers


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


def _events(log_dir):
    scalars = {}
    for path in glob.glob(os.path.join(str(log_dir), "**", "events*"), recursive=True):
        sub = os.path.relpath(os.path.dirname(path), str(log_dir))
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars.setdefault((sub, value.tag), []).append((event.step, tf.make_ndarray(value.tensor).item()))
    return scalars


def test_pruning_summaries_write_tfmot_tags(tmp_path):
    class TwoWeights(keras.layers.Dense, kprune.PrunableLayer):
        def get_prunable_weights(self):
            return [self.kernel, self.bias]

    model = kprune.prune_low_magnitude(
        keras.Sequential([keras.Input((6,)), keras.layers.Dense(10, name="a"), TwoWeights(4, name="b")]),
        pruning_schedule=kprune.ConstantSparsity(0.5, begin_step=0, frequency=1),
    )
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    model.fit(x, np.zeros((16, 4), "float32"), batch_size=8, epochs=2, verbose=0,
              callbacks=[kprune.UpdatePruningStep(), kprune.PruningSummaries(str(tmp_path))])
    scalars = _events(tmp_path)
    tfmot = {tag for sub, tag in scalars if sub == "metrics"}
    assert tfmot == {
        "prune_low_magnitude_a/mask:0/sparsity", "prune_low_magnitude_a/threshold:0/threshold",
        "prune_low_magnitude_b/mask:0/sparsity", "prune_low_magnitude_b/threshold:0/threshold",
        "prune_low_magnitude_b/mask_1:0/sparsity", "prune_low_magnitude_b/threshold_1:0/threshold",
    }
    # As tfmot: written at the beginning of each epoch, at the optimizer's iteration.
    a = collect_wrappers(model)[0]
    assert [s for s, _ in scalars[("metrics", "prune_low_magnitude_a/mask:0/sparsity")]] == [0, 2]
    assert [v for _, v in scalars[("metrics", "prune_low_magnitude_a/mask:0/sparsity")]] == [0.0, 0.5]
    # Before any update the threshold is 0; afterwards the smallest kept magnitude.
    thresholds = [v for _, v in scalars[("metrics", "prune_low_magnitude_a/threshold:0/threshold")]]
    assert thresholds[0] == 0.0
    kept = np.abs(a.layer.kernel.numpy())[a.masks[0].numpy() == 1]
    pruned = np.abs(a.layer.kernel.numpy())[a.masks[0].numpy() == 0]
    assert thresholds[1] > 0.0 and not np.any(pruned > 0)
    from kprune.sparsity.pruning_callbacks import pruning_scalars

    assert pruning_scalars(model)[1]["prune_low_magnitude_a/threshold:0/threshold"] == pytest.approx(kept.min())
    assert ("train", "sparsity/prune_low_magnitude_b/bias") in scalars
