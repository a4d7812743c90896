"""tfmot's four pruning guides, ported mechanically to kprune, run on digits.

The guides' code (`tensorflow_model_optimization/g3doc/guide/pruning/`:
`pruning_with_keras`, `comprehensive_guide`, `pruning_for_on_device_inference`,
`pruning_with_sparsity_2_by_4`) is written once, in `benchmarks/tfmot_port.py`,
parameterised by the pruning module (`kprune` on Keras 3, or
`tfmot.sparsity.keras` on tf_keras); see its docstring for what changed from
the guides. These tests run it with kprune and check what it built.

The final per-layer sparsities are compared with tfmot's on the same steps.
TFMOT below was measured with tfmot 0.8.1 (tf_keras 2.21.0, TensorFlow
2.21.0) running the same code in tf_keras:

    pip install tf-keras tensorflow-model-optimization
    python benchmarks/bench_tfmot_guides.py

(results in benchmarks/results/tfmot_guides.json, under "tfmot"). Sparsities
are per pruned weight, in model order, as (inner layer type, weight, fraction
of zeros); the test compares exact zero counts.
"""

import os
import pathlib
import re
import sys

import keras
import numpy as np
import pytest

import kprune

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

pytest.importorskip("sklearn")
pytest.importorskip("tensorboard")

# The port lives beside the benchmark that runs it under tfmot too.
sys.path.insert(0, str(pathlib.Path(__file__).parents[2] / "benchmarks"))
import tfmot_port  # noqa: E402

PORT = tfmot_port.Port.kprune()

# tfmot 0.8.1 on the same data and steps (see the module docstring).
TFMOT = {
    # batch_size 29: end_step = ceil(1440 / 29) * 2 = 100, a turn of frequency 100.
    "pruning_with_keras_aligned": {
        "steps": 100,
        "sparsity": [("Conv2D", "kernel", 0.7962962985038757), ("Dense", "kernel", 0.800000011920929)],
    },
    # The guide's batch_size 128: end_step = 24 < frequency, so tfmot never prunes.
    "pruning_with_keras": {
        "steps": 24,
        "sparsity": [("Conv2D", "kernel", 0.0), ("Dense", "kernel", 0.0)],
    },
    "comprehensive_guide": {
        "fit_steps": 2, "fit_sparsity": [("Dense", "kernel", 0.0)],
        "loop_steps": 2, "loop_sparsity": [("Dense", "kernel", 0.0)],
        # model.summary() parameter counts of the wrapped layers.
        "params": {"whole_model": 822, "clone": 822, "functional": 412,
                   "sequential_first_layer": 822, "custom_layer": 843, "block": 822},
    },
    # batch_size 72: end_step = 20 batches * 5 epochs = 100; 6 epochs = 120 steps.
    "pruning_for_on_device_inference": {
        "steps": 120,
        "policy_error": None,
        "sparsity": [("Conv2D", "kernel", 0.75), ("Conv2D", "kernel", 0.75)],
    },
    "pruning_with_sparsity_2_by_4": {
        "steps": 24,
        "sparsity": [("Conv2D", "kernel", 0.0), ("Conv2D", "kernel", 0.5), ("Dense", "kernel", 0.5)],
    },
}


def assert_matches_tfmot(model, expected, steps):
    rows, seen = PORT.masks(model)
    assert seen == {steps}
    assert [(t, n) for t, n, _, _ in rows] == [(t, n) for t, n, _ in expected]
    for (t, n, ours, size), (_, _, theirs) in zip(rows, expected):
        assert round(ours * size) == round(theirs * size), (t, n, ours, theirs)


def tfmot_tags(model):
    """The tags tfmot's PruningSummaries writes for `model` (one mask per layer here)."""
    return {("metrics", f"{w.name}/{kind}:0/{what}") for w in PORT.wrappers(model)
            for kind, what in (("mask", "sparsity"), ("threshold", "threshold"))}


# ------------------------------------------------------------ pruning_with_keras
def test_pruning_with_keras():
    run = tfmot_port.pruning_with_keras(PORT, batch_size=29, export=True)  # steps: the guide's 128, see below
    expected = TFMOT["pruning_with_keras_aligned"]
    assert run["end_step"] == expected["steps"] == 100
    assert_matches_tfmot(run["model"], expected["sparsity"], expected["steps"])
    # PruningSummaries writes tfmot's tags (and kprune's own).
    tags = tfmot_port.event_tags(run["logdir"])
    assert tfmot_tags(run["model"]) <= tags
    assert {("train", f"sparsity/{w.name}/kernel") for w in PORT.wrappers(run["model"])} <= tags
    # The exported model is 80% zeros, compresses, and still classifies digits.
    kernels = [l.kernel for l in run["export"].layers if hasattr(l, "kernel")]
    assert [round(float(np.mean(keras.ops.convert_to_numpy(k) == 0)), 3) for k in kernels] == [0.796, 0.8]
    assert run["sizes"]["pruned_tflite"] < 0.5 * run["sizes"]["baseline"]
    assert run["sizes"]["quantized_tflite"] < run["sizes"]["pruned_tflite"]
    assert min(run["accuracy"]) > 0.5


def test_pruning_with_keras_guide_batch_size_keeps_the_final_sparsity_guarantee():
    # With the guide's batch_size=128, end_step = 12 * 2 = 24 is not a turn of
    # frequency=100: tfmot never prunes. kprune always makes end_step a turn
    # (deliberately), so the guide's 0.8 is applied before the last batch.
    run = tfmot_port.pruning_with_keras(PORT, batch_size=128, export=False)
    expected = TFMOT["pruning_with_keras"]
    assert run["end_step"] == expected["steps"] == 24
    assert all(s == 0.0 for _, _, s in expected["sparsity"])
    rows, steps = PORT.masks(run["model"])
    assert steps == {24}
    assert [round(ours * size) for _, _, ours, size in rows] == [round(0.8 * size) for *_, size in rows]


# ----------------------------------------------------------- comprehensive_guide
def test_comprehensive_guide():
    run = tfmot_port.comprehensive_guide(PORT)
    expected = TFMOT["comprehensive_guide"]
    for part in ("fit", "loop"):
        model, log_dir = run[part]
        assert_matches_tfmot(model, expected[f"{part}_sparsity"], expected[f"{part}_steps"])
        assert tfmot_tags(model) <= tfmot_port.event_tags(log_dir)
    assert run["loaded_layers"] == ["PruneLowMagnitude", "Flatten"]
    pruned_size, stripped_size = run["gzipped_sizes"]
    assert stripped_size < pruned_size
    # Parameter counts: tfmot's wrapper also holds one threshold per pruned
    # weight; otherwise the counts are the same (inner layer + masks + step),
    # and model.summary() shows them.
    assert sorted(run["summaries"]) == sorted(expected["params"])
    for key, tfmot_count in expected["params"].items():
        model, text = run["summaries"][key]
        wrapped = PORT.wrappers(model)
        assert len(wrapped) == 1 and wrapped[0].built, key
        assert wrapped[0].count_params() == tfmot_count - len(wrapped[0].pruned_weights), key
        assert f"{wrapped[0].count_params():,}" in text, key


# ----------------------------------------------- pruning_for_on_device_inference
def test_pruning_for_on_device_inference():
    run = tfmot_port.pruning_for_on_device_inference(PORT, batch_size=72, epochs=6)
    expected = TFMOT["pruning_for_on_device_inference"]
    # tfmot 0.8.1 accepts keepdims=False (the guide's text predates that).
    assert run["policy_error"] == expected["policy_error"]
    assert [(type(l).__name__, tuple(l.kernel_size)) for l in run["wrapped"]] == [("Conv2D", (1, 1))] * 2
    assert run["end_step"] == 100
    assert_matches_tfmot(run["model"], expected["sparsity"], expected["steps"])
    assert tfmot_tags(run["model"]) <= tfmot_port.event_tags(run["logdir"])
    assert min(run["tflite_bytes"]) > 0
    assert np.isfinite(run["accuracy"]).all()


def test_pruning_policy_rejects_what_xnnpack_cannot_run():
    def model(middle):
        return keras.Sequential([
            keras.Input((32, 32, 3)), keras.layers.ZeroPadding2D(1),
            keras.layers.Conv2D(8, 3, strides=2), middle,
            keras.layers.GlobalAveragePooling2D(keepdims=True), keras.layers.Flatten(),
            keras.layers.Dense(10),
        ])

    policy = kprune.PruneForLatencyOnXNNPack()
    with pytest.raises(ValueError, match=r"Layer 'big' \(Conv2D\) is not supported for the "
                                         "PruneForLatencyOnXNNPack pruning policy"):
        kprune.prune_low_magnitude(model(keras.layers.Conv2D(8, 3, padding="same", name="big")),
                                   pruning_policy=policy)
    no_start = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 1),
                                 keras.layers.GlobalAveragePooling2D()])
    with pytest.raises(ValueError, match="could not find a `Conv2D` 3x3 layer with stride 2x2"):
        kprune.prune_low_magnitude(no_start, pruning_policy=policy)
    with pytest.raises(ValueError, match="Argument `pruning_policy` applies to a whole"):
        kprune.prune_low_magnitude(keras.layers.Dense(2), pruning_policy=policy)
    with pytest.raises(TypeError, match="Received: pruning_policy='xnnpack'"):
        kprune.prune_low_magnitude(no_start, pruning_policy="xnnpack")


# ------------------------------------------------- pruning_with_sparsity_2_by_4
def test_pruning_with_sparsity_2_by_4():
    run = tfmot_port.pruning_with_sparsity_2_by_4(PORT, batch_size=128, epochs=2)
    assert f"{run['params']:,}" in run["summary"]
    expected = TFMOT["pruning_with_sparsity_2_by_4"]
    assert_matches_tfmot(run["pruned"], expected["sparsity"], expected["steps"])
    assert np.isfinite(run["accuracy"])
    # The guide's displays: the Dense kernel holds at most 2 nonzeros in every
    # 4, the 2:4 Conv2D exactly 2.
    assert run["dense_shape"] == (1024, 3136)
    assert (run["dense_pattern"].reshape(24, -1, 4).sum(-1) <= 2).all()
    assert run["conv_shape"] == (64, 5, 5, 32)
    assert (run["conv_pattern"].reshape(24, -1, 4).sum(-1) == 2).all()

    # cell 45: the guide's check_sparsity_m_by_n.py script, as a function.
    checked = kprune.check_sparsity_m_by_n(run["tflite_file"], 2, 4)
    layers = {re.sub(r"_\d+$", "", name.split("/")[-2]): ok for name, ok in checked.items()}
    # The first Conv2D reads 1 channel: its groups of 4 hold 1 weight each.
    assert layers == {"pruning_sparsity_0_5": True, "structural_pruning": True,
                      "structural_pruning_dense": True, "dense": False}
    model = run["model"]
    on_keras = kprune.check_sparsity_m_by_n(model, 2, 4)
    assert {name.split("/")[0]: ok for name, ok in on_keras.items()} == {
        "pruning_sparsity_0_5": True, "structural_pruning": True,
        "structural_pruning_dense": True, model.layers[-1].name: False}
    os.remove(run["tflite_file"])


# Sparsity of a Dense(10) kernel (100 weights) after each of 30 batches of
# `fit(batch_size=1)`, and `pruning_step` after them, measured with tfmot 0.8.1
# (`python benchmarks/bench_tfmot_guides.py`, "schedule_trace" under "tfmot"
# in benchmarks/results/tfmot_guides.json).
TFMOT_TRACES = {
    "polynomial": [0.0] * 9 + [0.7] * 10 + [0.8] * 11,
    # end_step 25 is not a turn of frequency 10: tfmot stays at 0.79; kprune
    # (deliberately) applies 0.8 before step 25.
    "polynomial_end_not_on_frequency": [0.0] * 9 + [0.63] * 10 + [0.79] * 11,
    "custom_python_if": [0.0] * 4 + [0.5] * 26,
}


def test_step_semantics_match_tfmot():
    """The port's schedule trace (the same code the benchmark runs under tfmot)
    run with kprune: the same sparsity after every batch as tfmot, but for the
    deliberate difference at an end_step that is not a turn of the frequency."""
    traces = tfmot_port.schedule_trace(PORT)
    for name, recorded in TFMOT_TRACES.items():
        expected = list(recorded)
        if name == "polynomial_end_not_on_frequency":
            expected[24:] = [0.8] * 6  # batch 24 is step 25 = end_step
        assert traces[name]["sparsity_after_batch"] == expected, name
        assert traces[name]["pruning_step"] == 30, name

