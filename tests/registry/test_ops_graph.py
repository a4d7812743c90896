"""Functional models with `keras.ops` calls between layers, through every entry point."""

import os

import keras
import numpy as np
import pytest
from keras import layers as L
from keras import ops

import kprune
from kprune._internal import functional
from kprune.dependency.channel_graph import ChannelGraph
from kprune.registry import ops as ops_rules


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _ops_model():
    """Elementwise ops with constants (hard-swish), between tensors (a gate),
    a reduction (squeeze-excite), `GetItem` on a non-channel axis, a
    channel-axis concatenation and a broadcast of a one-channel tensor."""
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(16, 3, padding="same", name="conv_a")(x)
    a = L.BatchNormalization(name="bn_a")(a)
    a = a * ops.relu6(a + 3.0) / 6.0  # hard-swish
    se = ops.mean(a, axis=[1, 2], keepdims=True)  # reduction over space
    se = L.Conv2D(4, 1, activation="relu", name="se_reduce")(se)
    se = L.Conv2D(16, 1, activation="sigmoid", name="se_expand")(se)
    a = a * se  # between tensors: ties se_expand to conv_a
    b = L.Conv2D(16, 3, padding="same", name="conv_b")(a)
    gate = L.Conv2D(1, 1, activation="sigmoid", name="spatial_gate")(b)
    b = b * gate  # one channel broadcast: ties nothing
    c = ops.concatenate([a, b], axis=-1)
    c = L.Conv2D(24, 3, strides=2, padding="same", name="conv_c")(c)
    row = c[:, 0]  # GetItem over the height axis keeps the channels
    pooled = ops.max(row, axis=1)
    return keras.Model(x, L.Dense(5, name="head")(pooled))


def _data(rng, n=6):
    return rng.standard_normal((n, 8, 8, 3)).astype("float32")


def test_op_rules_for_each_kind():
    model = _ops_model()
    kinds = {type(n.operation).__name__: ops_rules.channel_spec(n).kind
             for n in functional.nodes(model) if not functional.is_layer(n.operation)}
    assert kinds["Add"] == "pass"  # with a constant
    assert kinds["Multiply"] == "merge"  # between tensors
    assert kinds["Mean"] == "pass"  # over space
    assert kinds["GetItem"] == "pass"
    assert kinds["Concatenate"] == "concat"
    assert kinds["Max"] == "pass"


@pytest.mark.parametrize("build, reason", [
    (lambda x: ops.mean(x, axis=-1), "reduces the channel axis"),
    (lambda x: x[..., :4], "selects along the channel axis"),
    (lambda x: ops.reshape(x, (-1, 4, 32)), "no channel rule for keras.ops operation Reshape"),
    (lambda x: x * np.arange(8, dtype="float32"), "varies along channels"),
    (lambda x: ops.softmax(x), "softmax mixes channels"),
])
def test_ops_that_move_or_mix_channels_block_with_a_reason(build, reason):
    inp = keras.Input((4, 8))
    h = L.Dense(8, name="producer")(inp)
    model = keras.Model(inp, L.Dense(2, name="head")(L.Flatten()(build(h))))
    plan = kprune.plan_channels(model, 0.5, round_to=1)
    entry = next(g for g in plan.groups if g["producers"] == ["producer"])
    assert entry["pruned"] == []
    assert reason in entry["reason"]


def test_scalar_constant_passes_channels_and_prunes():
    inp = keras.Input((4, 8))
    h = L.Dense(8, name="producer")(inp)
    out = L.Dense(2, name="head")(ops.tanh(h * 0.5 + np.ones((1, 1, 1), "float32")))
    plan = kprune.plan_channels(keras.Model(inp, out), 0.5, round_to=1)
    entry = next(g for g in plan.groups if g["producers"] == ["producer"])
    assert len(entry["pruned"]) == 4 and entry["reason"] is None


def test_graph_ties_channels_through_ops():
    graph = ChannelGraph(_ops_model())
    by_producer = {tuple(g.producers): g for g in graph.groups}
    # `a * se` ties the squeeze-excite expansion to conv_a's channels.
    assert ("conv_a", "se_expand") in by_producer
    assert by_producer[("conv_a", "se_expand")].blocked is None
    # The one-channel gate broadcasts and stays a group of its own.
    assert ("conv_b",) in by_producer and by_producer[("conv_b",)].blocked is None


def test_removal_equals_masking_with_ops(rng):
    model = _ops_model()
    for v in model.weights:  # BN statistics away from their defaults
        if "moving_variance" in v.path:
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
    plan = kprune.plan_channels(model, 0.5, round_to=1)
    assert plan.num_pruned >= 8 + 8 + 12
    masked = kprune.mask_channels(model, plan)
    small = kprune.remove_channels(masked)
    assert small.get_layer("conv_a").filters == 8
    assert small.get_layer("se_expand").filters == 8
    assert small.get_layer("conv_b").filters == 8
    assert small.get_layer("conv_c").filters == 12
    x = _data(rng)
    np.testing.assert_allclose(_np(small(x)), _np(masked(x)), atol=1e-5)
    assert kprune.count_macs(small) < kprune.count_macs(model)


def test_unstructured_pipeline_keeps_ops(rng, tmp_path):
    model = _ops_model()
    x, y = _data(rng, 8), np.arange(8) % 5
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.5, 0, frequency=1))
    kinds = [type(n.operation).__name__ for n in functional.nodes(pruned)]
    assert "GetItem" in kinds and "Concatenate" in kinds
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    stripped = kprune.strip_pruning(pruned)
    np.testing.assert_allclose(_np(stripped(x)), _np(pruned(x)), atol=1e-6)
    s = kprune.summary(stripped)
    assert s.macs == kprune.count_macs(model) and s.params == kprune.count_params(model)
    assert 0.4 < s.sparsity < 0.6
    report = kprune.export_tflite(stripped, os.fspath(tmp_path / "ops.tflite"), measure_latency=False)
    assert report.verified


def test_channel_pruning_during_fit_with_ops(rng):
    model = _ops_model()
    x, y = _data(rng, 8), np.arange(8) % 5
    pruned = kprune.prune_channels(model, kprune.ConstantSparsity(0.5, 0, frequency=1), round_to=1)
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    small = kprune.remove_channels(pruned)
    np.testing.assert_allclose(_np(small(x)), _np(kprune.strip_pruning(pruned)(x)), atol=1e-5)
    assert small.get_layer("conv_a").filters == 8


def test_matmul_op_macs():
    a = keras.Input((6, 8))
    q = L.Dense(8, name="q")(a)
    k = L.Dense(8, name="k")(a)
    scores = ops.matmul(q, ops.transpose(k, (0, 2, 1)))  # (6, 6), K = 8
    model = keras.Model(a, scores)
    assert kprune.count_macs(model) == 2 * 6 * 8 * 8 + 6 * 6 * 8
