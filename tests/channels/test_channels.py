"""Structured channel pruning: one test per topology, each asserting that the
removed model's outputs equal the masked model's."""

import json
import warnings

import keras
import numpy as np
import pytest

import kprune
from kprune.channels import oneshot as channels
from kprune.dependency.channel_graph import ChannelGraph

L = keras.layers


def _chain():
    x = keras.Input((12, 12, 3))
    y = L.Conv2D(16, 3, padding="same", name="c1")(x)
    y = L.BatchNormalization()(y)
    y = L.ReLU()(y)
    y = L.Conv2D(24, 3, name="c2")(y)
    y = L.GlobalAveragePooling2D()(y)
    return keras.Model(x, L.Dense(5, name="head")(y))


def _residual():
    x = keras.Input((12, 12, 3))
    a = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", name="stem")(x)))
    b = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", name="r1")(a)))
    b = L.BatchNormalization()(L.Conv2D(16, 3, padding="same", name="r2")(b))
    a = L.ReLU()(L.Add()([a, b]))
    c = L.Conv2D(16, 1, name="r3")(a)
    a = L.Add()([a, c])
    return keras.Model(x, L.Dense(4, name="head")(L.GlobalAveragePooling2D()(a)))


def _dense_concat():
    x = keras.Input((10, 10, 3))
    feats = [L.Conv2D(8, 3, padding="same", name="stem")(x)]
    for i in range(3):
        inp = feats[0] if len(feats) == 1 else L.Concatenate()(feats)
        y = L.ReLU()(L.BatchNormalization()(inp))
        feats.append(L.Conv2D(6, 3, padding="same", name=f"growth{i}")(y))
    y = L.Concatenate()(feats)
    y = L.Conv2D(12, 1, name="transition")(y)
    return keras.Model(x, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(y)))


def _inverted_residual():
    x = keras.Input((12, 12, 3))
    a = L.Conv2D(16, 3, padding="same", name="stem")(x)
    h = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(48, 1, name="expand")(a)))
    h = L.ReLU(6.0)(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same", name="dw")(h)))
    h = L.BatchNormalization()(L.Conv2D(16, 1, name="project")(h))
    a = L.Add()([a, h])
    h = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw2")(a)
    h = L.Conv2D(8, 1, name="out")(h)
    return keras.Model(x, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(h)))


def _squeeze_excitation():
    x = keras.Input((10, 10, 3))
    a = L.Activation("swish")(L.BatchNormalization()(L.Conv2D(24, 3, padding="same", name="conv")(x)))
    s = L.GlobalAveragePooling2D(keepdims=True)(a)
    s = L.Conv2D(6, 1, activation="relu", name="se_reduce")(s)
    s = L.Conv2D(24, 1, activation="sigmoid", name="se_expand")(s)
    a = L.Multiply()([a, s])
    return keras.Model(x, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(a)))


def _flatten_dense():
    return keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            L.Conv2D(12, 3, activation="relu", name="conv"),
            L.MaxPooling2D(),
            L.Flatten(),
            L.Dense(32, activation="relu", name="fc1"),
            L.Dense(16, activation="relu", name="fc2"),
            L.Dense(4, name="head"),
        ]
    )


def _multi_output():
    x = keras.Input((10, 10, 3))
    a = L.Conv2D(16, 3, activation="relu", name="trunk")(x)
    p = L.GlobalAveragePooling2D()(a)
    out1 = L.Dense(3, name="cls")(L.Dense(20, activation="relu", name="cls_hidden")(p))
    out2 = L.Dense(2, name="reg")(p)
    return keras.Model(x, [out1, out2])


def _conv1d():
    return keras.Sequential(
        [
            keras.Input((20, 4)),
            L.Conv1D(16, 3, activation="relu", name="c1"),
            L.Conv1D(16, 3, activation="relu", name="c2"),
            L.GlobalMaxPooling1D(),
            L.Dense(3, name="head"),
        ]
    )


def _nested():
    inner = keras.Sequential(
        [keras.Input((8, 8, 16)), L.Conv2D(16, 3, padding="same", activation="relu", name="inner_conv")],
        name="inner",
    )
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(16, 3, padding="same", name="outer_conv")(x)
    a = inner(a)
    return keras.Model(x, L.Dense(2, name="head")(L.GlobalAveragePooling2D()(a)))


def _grouped():
    x = keras.Input((8, 8, 3))
    a = L.ReLU()(L.Conv2D(16, 3, padding="same", name="stem")(x))
    g = L.BatchNormalization()(L.Conv2D(32, 3, padding="same", groups=4, name="grouped")(a))
    g = L.Conv2D(8, 1, groups=2, name="grouped2")(L.ReLU()(g))
    c = L.Conv2DTranspose(6, 3, strides=2, name="up")(L.ReLU()(g))
    return keras.Model(x, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(c)))


TOPOLOGIES = {
    "grouped_conv_transpose": _grouped,
    "chain": _chain,
    "residual": _residual,
    "concatenate": _dense_concat,
    "inverted_residual": _inverted_residual,
    "squeeze_excitation": _squeeze_excitation,
    "flatten_dense": _flatten_dense,
    "multi_output": _multi_output,
    "conv1d": _conv1d,
    "nested": _nested,
}


def _inputs(model, n=4):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, *model.input_shape[1:])).astype("float32")


def _outputs(model, x):
    out = model.predict(x, verbose=0)
    return out if isinstance(out, list) else [out]


@pytest.mark.parametrize("importance", ["l1", "l2", "fpgm"])
@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_remove_equals_masked(topology, importance):
    model = TOPOLOGIES[topology]()
    plan = channels.plan_channels(model, 0.5, importance=importance, round_to=1)
    assert plan.num_pruned > 0
    masked = channels.mask_channels(model, plan)
    removed = channels.remove_channels(masked)
    x = _inputs(model)
    for a, b in zip(_outputs(masked, x), _outputs(removed, x)):
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1e-4
    assert removed.count_params() < model.count_params()
    # Removing by plan gives the same model.
    by_plan = channels.remove_channels(model, plan)
    assert by_plan.count_params() == removed.count_params()
    for a, b in zip(_outputs(masked, x), _outputs(by_plan, x)):
        assert np.abs(a - b).max() <= 1e-4


def test_grouped_conv_prunes_the_same_rows_in_every_group():
    model = _grouped()
    plan = channels.plan_channels(model, 0.5, round_to=1)
    removed = channels.remove_channels(model, plan)
    grouped = removed.get_layer("grouped")
    # 16 inputs in 4 groups of 4 rows -> 8 inputs in 4 groups of 2; 32 filters -> 16.
    assert grouped.groups == 4 and tuple(grouped.kernel.shape) == (3, 3, 2, 16)
    assert removed.get_layer("stem").filters == 8
    assert tuple(removed.get_layer("grouped2").kernel.shape) == (1, 1, 8, 4)


def test_residual_branches_lose_the_same_channels():
    model = _residual()
    graph = ChannelGraph(model)
    group = next(g for g in graph.groups if "stem" in g.producers)
    assert group.producers == ["stem", "r2", "r3"]
    plan = channels.plan_channels(model, 0.25, round_to=1)
    removed = channels.remove_channels(model, plan)
    widths = {l.name: l.filters for l in removed.layers if isinstance(l, L.Conv2D)}
    assert widths["stem"] == widths["r2"] == widths["r3"] == 12
    assert widths["r1"] == 12  # its own group, 25% too


def test_flatten_maps_channels_with_keras_layout():
    model = _flatten_dense()
    plan = channels.plan_channels(model, 0.5, importance="l2", round_to=1)
    conv_entry = next(g for g in plan.groups if g["producers"] == ["conv"])
    pruned = set(conv_entry["pruned"])
    removed = channels.remove_channels(model, plan)
    fc1_old = model.get_layer("fc1").kernel.numpy()
    fc1_new = removed.get_layer("fc1").kernel.numpy()
    kept = [c for c in range(12) if c not in pruned]
    # Channel c of the 3x3x12 map is every 12th feature, starting at c.
    rows = [p * 12 + c for p in range(9) for c in kept]
    fc1_pruned = set(next(g for g in plan.groups if g["producers"] == ["fc1"])["pruned"])
    cols = [u for u in range(32) if u not in fc1_pruned]
    np.testing.assert_array_equal(fc1_new, fc1_old[rows][:, cols])


def test_outputs_and_inputs_are_never_pruned():
    model = _multi_output()
    plan = channels.plan_channels(model, 0.5, round_to=1)
    reasons = {tuple(g["producers"]): g["reason"] for g in plan.groups}
    assert reasons[("cls",)] == "model output"
    assert reasons[("reg",)] == "model output"
    removed = channels.remove_channels(model, plan)
    assert [o.shape[-1] for o in removed.outputs] == [3, 2]


def test_unknown_layer_blocks_its_group_and_says_why():
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, name="a")(x)
    b = L.Reshape((6, 48))(a)
    c = L.Conv2D(8, 3, name="c")(a)
    model = keras.Model(x, [L.GlobalAveragePooling1D()(b), L.Dense(2)(L.GlobalAveragePooling2D()(c))])
    plan = channels.plan_channels(model, 0.5, round_to=1)
    entry = next(g for g in plan.groups if g["producers"] == ["a"])
    assert entry["pruned"] == []
    assert "(Reshape): reshape changes the channel axis" in entry["reason"]
    entry_c = next(g for g in plan.groups if g["producers"] == ["c"])
    assert len(entry_c["pruned"]) == 4


def test_round_to_and_never_zero():
    model = _chain()
    plan = channels.plan_channels(model, 0.6, round_to=8)
    counts = {tuple(g["producers"]): g["channels"] - len(g["pruned"]) for g in plan.groups}
    assert counts[("c1",)] == 8 and counts[("c2",)] == 8
    plan = channels.plan_channels(model, 0.99, round_to=1)
    for g in plan.groups:
        assert g["channels"] - len(g["pruned"]) >= 1


def test_exclude_and_ratios():
    model = _chain()
    plan = channels.plan_channels(model, 0.5, exclude=["c1"], ratios={"c2": 0.25}, round_to=1)
    by = {tuple(g["producers"]): g for g in plan.groups}
    assert by[("c1",)]["pruned"] == [] and by[("c1",)]["reason"] == "excluded"
    assert len(by[("c2",)]["pruned"]) == 6
    plan = channels.plan_channels(model, 0.5, exclude=[L.BatchNormalization], round_to=1)
    assert {tuple(g["producers"]): g["reason"] for g in plan.groups}[("c1",)] == "excluded"
    with pytest.raises(ValueError, match="Layer 'nope'"):
        channels.plan_channels(model, 0.5, exclude=["nope"], round_to=1)


def test_global_ranking_prunes_the_requested_fraction():
    model = _chain()
    plan = channels.plan_channels(model, 0.5, global_ranking=True, round_to=1)
    prunable = [g for g in plan.groups if not g["reason"]]
    total = sum(g["channels"] for g in prunable)
    pruned = sum(len(g["pruned"]) for g in prunable)
    assert abs(pruned - total * 0.5) <= len(prunable)


def test_l1_prunes_the_smallest_filters():
    model = _chain()
    kernel = model.get_layer("c1").kernel
    value = kernel.numpy()
    value[..., [3, 7, 11]] *= 1e-3
    kernel.assign(value)
    plan = channels.plan_channels(model, 3 / 16, importance="l1", round_to=1)
    assert next(g for g in plan.groups if g["producers"] == ["c1"])["pruned"] == [3, 7, 11]


def test_bn_scale_uses_gamma():
    model = _chain()
    bn = next(l for l in model.layers if isinstance(l, L.BatchNormalization))
    gamma = np.ones(16, "float32")
    gamma[[0, 5]] = 0.01
    bn.gamma.assign(gamma)
    plan = channels.plan_channels(model, 2 / 16, importance="bn_scale", round_to=1)
    by = {tuple(g["producers"]): g for g in plan.groups}
    assert by[("c1",)]["pruned"] == [0, 5]
    assert by[("c2",)]["pruned"] == [] and "bn_scale" in by[("c2",)]["reason"]


def test_plan_is_data(tmp_path):
    model = _residual()
    plan = channels.plan_channels(model, 0.5, round_to=1)
    text = plan.to_json()
    assert json.loads(text)["groups"][1]["producers"] == ["stem", "r2", "r3"]
    again = channels.ChannelPlan.from_json(text)
    a = channels.remove_channels(model, again)
    b = channels.remove_channels(model, plan)
    x = _inputs(model)
    np.testing.assert_array_equal(a.predict(x, verbose=0), b.predict(x, verbose=0))
    assert "stem, r2, r3" in str(plan)
    with pytest.raises(ValueError, match="made for another model"):
        channels.remove_channels(_chain(), plan)


def test_removed_model_saves_and_loads(tmp_path):
    model = _inverted_residual()
    removed = channels.remove_channels(model, channels.plan_channels(model, 0.5, round_to=1))
    removed.save(tmp_path / "small.keras")
    loaded = keras.models.load_model(tmp_path / "small.keras")
    x = _inputs(model)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), removed.predict(x, verbose=0), atol=1e-6)


def test_remove_channels_on_unstructured_pruned_model():
    model = _chain()
    pruned = kprune.prune_low_magnitude(model)
    kprune.update_masks(pruned, sparsity=0.7)
    plan = channels.plan_channels(pruned, 0.5, round_to=1)
    masked = channels.mask_channels(pruned, plan)
    removed = channels.remove_channels(pruned, plan)
    x = _inputs(model)
    assert np.abs(masked.predict(x, verbose=0) - removed.predict(x, verbose=0)).max() <= 1e-4
    c2 = removed.get_layer("c2").kernel.numpy()
    assert (c2 == 0).mean() > 0.5  # unstructured zeros survive removal


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m: channels.plan_channels(m, 1.0), ValueError,
         "Argument `sparsity` must be in [0, 1). Received: sparsity=1.0"),
        (lambda m: channels.plan_channels(m, 0.5, importance="l3"), ValueError, "Received: importance='l3'"),
        (lambda m: channels.plan_channels(m, 0.5, round_to=0), ValueError,
         "Argument `round_to` must be an integer >= 1. Received: round_to=0"),
        (lambda m: channels.plan_channels(m, 0.5, ratios={"c1": 2.0}), ValueError, "Received: ratios['c1']=2.0"),
    ],
)
def test_plan_errors(call, error, message):
    with pytest.raises(error) as info:
        call(_chain())
    assert message in str(info.value)


def test_subclassed_model_is_rejected():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(3)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.ones((1, 4), "float32"))
    with pytest.raises(ValueError, match="subclassed models have no graph"):
        channels.plan_channels(net, 0.5, round_to=1)


@pytest.mark.parametrize("name", ["MobileNetV2", "ResNet50", "DenseNet121", "EfficientNetB0"])
def test_keras_applications_pruned_half_and_removed(name, record_property):
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)
    plan = channels.plan_channels(model, 0.5, round_to=1)
    prunable = [g for g in plan.groups if not g["reason"]]
    assert prunable and all(len(g["pruned"]) == g["channels"] // 2 for g in prunable)
    masked = channels.mask_channels(model, plan)
    removed = channels.remove_channels(masked)
    x = _inputs(model, 2)
    assert np.abs(masked.predict(x, verbose=0) - removed.predict(x, verbose=0)).max() <= 1e-4
    assert removed.count_params() < 0.6 * model.count_params()
    params = (kprune.count_params(model), kprune.count_params(removed))
    macs = (kprune.count_macs(model), kprune.count_macs(removed))
    assert params == (model.count_params(), removed.count_params())
    # Halving both sides of most convolutions cuts their MACs about 4x.
    assert macs[1] < 0.5 * macs[0]
    record_property("params_before_after", params)
    record_property("macs_before_after", macs)


def test_reshape_keeping_the_channel_axis_is_pass_through():
    x = keras.Input((6, 6, 3))
    a = L.Conv2D(8, 3, name="conv")(x)
    s = L.Reshape((1, 1, 8))(L.GlobalAveragePooling2D()(a))
    s = L.Conv2D(8, 1, activation="sigmoid", name="gate")(s)
    model = keras.Model(x, L.Dense(2, name="head")(L.Flatten()(L.Multiply()([a, s]))))
    plan = channels.plan_channels(model, 0.5, round_to=1)
    entry = next(g for g in plan.groups if g["producers"] == ["conv", "gate"])
    assert len(entry["pruned"]) == 4
    removed = channels.remove_channels(model, plan)
    assert removed.get_layer(index=3).target_shape == (1, 1, 4)
    masked = channels.mask_channels(model, plan)
    xs = _inputs(model)
    assert np.abs(masked.predict(xs, verbose=0) - removed.predict(xs, verbose=0)).max() <= 1e-4


def test_ratio_for_a_layer_that_cannot_be_pruned_names_it_and_says_why():
    x = keras.Input((6, 6, 3))
    a = L.Conv2D(8, 3, name="conv")(x)
    y = L.Lambda(lambda t: t * 2.0, name="double")(a)
    model = keras.Model(x, L.Dense(2, name="head")(L.Flatten()(y)))
    plan = channels.plan_channels(model, 0.5)
    entry = next(g for g in plan.groups if g["producers"] == ["conv"])
    assert entry["pruned"] == [] and "double (Lambda)" in entry["reason"]
    with pytest.raises(ValueError, match=r"Layer 'conv' \(in `ratios`\) cannot be channel-pruned: "
                                         r"its channels are tied to double \(Lambda\)"):
        channels.plan_channels(model, 0.5, ratios={"conv": 0.5})
    with pytest.raises(ValueError, match="Layer 'head' .* cannot be channel-pruned: .*model output"):
        channels.plan_channels(model, 0.5, ratios={"head": 0.5})


def _weights_equal(a, b):
    return len(a.weights) == len(b.weights) and all(
        np.array_equal(keras.ops.convert_to_numpy(u), keras.ops.convert_to_numpy(v))
        for u, v in zip(a.weights, b.weights)
    )


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: channels.remove_channels(m),
         "Model '{name}' has no pruned channel (every channel is still read by a nonzero weight), "
         "so remove_channels returns a copy of the same size. Cut channels off first"),
        (lambda m: channels.remove_channels(kprune.prune_channels(m)),  # masks never updated
         "Model '{name}' has no pruned channel"),
        (lambda m: channels.remove_channels(m, channels.plan_channels(m, 0.0)),
         "The plan prunes no channel of model '{name}', so remove_channels returns a copy of the "
         "same size. Make a plan that prunes channels first: kprune.plan_channels(model, sparsity)"),
        (lambda m: channels.remove_channels(m, channels.plan_channels(m, 0.1)),  # widths round to 8
         "groups of 8 channels or fewer stay whole"),
        (lambda m: channels.mask_channels(m, channels.plan_channels(m, 0.0)),
         "The plan prunes no channel of model '{name}', so mask_channels returns an unchanged copy."),
    ],
)
def test_a_call_that_removes_nothing_warns(call, message):
    model = _chain()
    with pytest.warns(UserWarning) as record:
        result = call(model)
    texts = [str(w.message) for w in record if "no pruned channel" in str(w.message)
             or "prunes no channel" in str(w.message)]
    assert len(texts) == 1 and message.format(name=model.name) in texts[0]
    # Attributed to the caller's line, not to kprune.
    assert next(w for w in record if str(w.message) == texts[0]).filename == __file__
    assert _weights_equal(result, model)


def test_calls_that_remove_channels_and_kprunes_own_callers_do_not_warn():
    from kprune.search.evaluation import MaskedCopy
    from kprune.search.space import SearchSpace

    model = _chain()
    plan = channels.plan_channels(model, 0.5, round_to=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        masked = channels.mask_channels(model, plan)
        assert channels.remove_channels(masked).count_params() < model.count_params()
        assert channels.remove_channels(model, plan).count_params() < model.count_params()
        # A search's working copy and a result that keeps every channel.
        MaskedCopy(SearchSpace(model))
        empty = channels.plan_channels(model, 0.0)
        assert _weights_equal(channels.reduced_copy(model, empty), model)
        assert _weights_equal(channels.masked_copy(model, empty), model)
    assert [str(w.message) for w in record if "channel" in str(w.message)] == []


def test_mask_channels_needs_a_plan():
    with pytest.raises(TypeError, match=r"Argument `plan` must be a kprune.ChannelPlan .*Received: plan=None"):
        channels.mask_channels(_chain(), None)
    with pytest.raises(TypeError, match=r"Received: plan=\{'groups': \[\]\} \(of type dict\)"):
        channels.remove_channels(_chain(), {"groups": []})
