"""NNI's config_list mapped onto kprune's channel arguments, and its errors."""

import keras
import pytest

import kprune
from kprune.channels import config_list
from kprune.dependency.channel_graph import ChannelGraph

L = keras.layers


def _model():
    x = keras.Input((10, 10, 3))
    a = L.ReLU()(L.Conv2D(16, 3, padding="same", name="conv1")(x))
    b = L.ReLU()(L.Conv2D(16, 3, padding="same", name="conv2")(a))
    b = L.Conv2D(16, 1, name="conv3")(b)
    a = L.Add()([a, b])
    d = L.DepthwiseConv2D(3, padding="same", name="dw")(a)
    y = L.Flatten()(L.MaxPooling2D(5)(L.Conv2D(24, 1, name="pw")(d)))
    y = L.Dense(32, activation="relu", name="fc1")(y)
    return keras.Model(x, L.Dense(10, name="fc3")(y))


GROUPS = [[("a", "Conv2D")], [("b", "Conv2D"), ("c", "Conv2D")], [("d", "Dense")]]
NAMES = ["a", "b", "c", "d", "head"]


def test_per_layer_sparsity_and_exclude():
    r = config_list.resolve(
        [{"sparsity": 0.5, "op_types": ["Conv2d"]}, {"sparsity_per_layer": 0.25, "op_names": ["c"]},
         {"exclude": True, "op_names": ["head"]}], GROUPS, NAMES)
    assert r["ratios"] == {"a": 0.5, "b": 0.5, "c": 0.25}
    assert r["exclude"] == ("d",)  # matched by no config: keeps its width, as in NNI
    assert r["global_ranking"] is False and r["total_sparsity"] is None


def test_later_configs_override_and_exclude_removes():
    r = config_list.resolve(
        [{"sparsity": 0.5, "op_types": ["default"]}, {"exclude": True, "op_partial_names": ["b"]}],
        GROUPS, NAMES)
    assert r["ratios"] == {"a": 0.5, "c": 0.5, "d": 0.5}
    assert r["exclude"] == ("b",)


def test_total_sparsity_is_a_global_pool_with_caps():
    r = config_list.resolve([{"total_sparsity": 0.3, "max_sparsity_per_layer": 0.6, "op_types": ["Conv2D"]}],
                            GROUPS, NAMES)
    assert (r["sparsity"], r["global_ranking"], r["total_sparsity"]) == (0.3, True, 0.3)
    assert r["max_ratios"] == {"a": 0.6, "b": 0.6, "c": 0.6}
    assert r["exclude"] == ("d",)


def test_selectors_intersect():
    r = config_list.resolve([{"sparsity": 0.5, "op_types": ["Conv2D"], "op_names": ["a", "d"]}], GROUPS, NAMES)
    assert r["ratios"] == {"a": 0.5}


@pytest.mark.parametrize("configs, message", [
    ({"sparsity": 0.5}, "must be a list of dicts"),
    ([{"sparsity": 0.5, "op_type": ["Conv2D"]}], "config_list\\[0\\] has unknown key 'op_type'"),
    ([{"sparsity": 0.5}], "selects no layer"),
    ([{"op_types": ["Conv2D"]}], "exactly one of 'sparsity'"),
    ([{"sparsity": 0.5, "total_sparsity": 0.5, "op_types": ["Conv2D"]}], "exactly one of"),
    ([{"sparsity": 1.5, "op_types": ["Conv2D"]}],
     "'sparsity'\\] must be a number in \\[0, 1\\). Received: sparsity=1.5"),
    ([{"sparsity": 0.5, "op_types": "Conv2D"}], "must be a list of strings"),
    ([{"exclude": True, "sparsity": 0.2, "op_names": ["a"]}], "an exclude config takes selectors only"),
    ([{"sparsity": 0.5, "max_sparsity_per_layer": 0.8, "op_types": ["Conv2D"]}],
     "caps the layers of a 'total_sparsity'"),
    ([{"total_sparsity": 0.5, "op_types": ["Conv2D"]}, {"total_sparsity": 0.2, "op_types": ["Dense"]}],
     "different 'total_sparsity'"),
    ([{"sparsity": 0.5, "op_names": ["nope"]}], "names 'nope', which is not a layer of the model"),
    ([{"sparsity": 0.5, "op_names": ["head"]}], "names 'head', whose output channels cannot be pruned"),
    ([{"sparsity": 0.5, "op_types": ["LSTM"]}], "matches no prunable layer"),
])
def test_errors(configs, message):
    with pytest.raises(ValueError, match=message):
        config_list.resolve(configs, GROUPS, NAMES)


def test_plan_channels_accepts_config_list_like_its_own_arguments():
    model = _model()
    configs = [{"sparsity": 0.5, "op_types": ["Conv2D"]}, {"sparsity": 0.25, "op_names": ["fc1"]},
               {"exclude": True, "op_names": ["fc3"]}]
    from_nni = kprune.plan_channels(model, config_list=configs, round_to=1)
    own = kprune.plan_channels(model, 0.0, round_to=1,
                               ratios={"conv1": 0.5, "conv2": 0.5, "conv3": 0.5, "pw": 0.5, "fc1": 0.25})
    assert from_nni.groups == own.groups
    pruned = {tuple(g["producers"]): len(g["pruned"]) for g in from_nni.groups}
    assert pruned[("conv1", "conv3")] == 8 and pruned[("fc1",)] == 8


def test_config_list_total_sparsity_ranks_globally():
    model = _model()
    plan = kprune.plan_channels(model, config_list=[{"total_sparsity": 0.5, "op_types": ["Conv2D", "Dense"]}],
                                round_to=1)
    own = kprune.plan_channels(model, 0.5, global_ranking=True, round_to=1)
    assert plan.groups == own.groups


def test_config_list_errors_in_plan_channels():
    model = _model()
    with pytest.raises(ValueError, match="Pass either `config_list` or `sparsity`"):
        kprune.plan_channels(model, 0.5, config_list=[{"sparsity": 0.5, "op_types": ["Conv2D"]}])
    with pytest.raises(ValueError, match="'max_sparsity_per_layer' caps layers in the searches"):
        kprune.plan_channels(model, config_list=[
            {"total_sparsity": 0.5, "max_sparsity_per_layer": 0.7, "op_types": ["Conv2D"]}])
    with pytest.raises(ValueError, match="Argument `sparsity` is required"):
        kprune.plan_channels(model)


def test_prune_channels_accepts_config_list():
    model = _model()
    pruned = kprune.prune_channels(model, config_list=[{"sparsity": 0.5, "op_names": ["fc1"]}], round_to=1)
    kprune.update_masks(pruned, sparsity=0.5)
    small = kprune.remove_channels(pruned)
    assert small.get_layer("fc1").units == 16
    assert small.get_layer("conv2").filters == 16  # matched by no config
    with pytest.raises(ValueError, match="differs from the final sparsity"):
        kprune.prune_channels(model, kprune.ConstantSparsity(0.3, 0),
                              config_list=[{"total_sparsity": 0.5, "op_types": ["Conv2D"]}])


def test_channel_arguments_reads_the_graph():
    graph = ChannelGraph(_model())
    args = config_list.channel_arguments(graph, [{"sparsity": 0.5, "op_types": ["Dense"]}])
    assert args["ratios"] == {"fc1": 0.5}  # fc3 writes the model output: not prunable
    assert args["exclude"] == ("conv1", "conv3", "conv2", "pw")
    # a depthwise convolution writes no channels of its own (it follows its input's group)
    with pytest.raises(ValueError, match="matches no prunable layer"):
        config_list.channel_arguments(graph, [{"sparsity": 0.5, "op_types": ["DepthwiseConv2D"]}])
