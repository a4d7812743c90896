"""Pruning policies: PruningPolicy and PruneForLatencyOnXNNPack (tfmot's checks)."""

import keras
import pytest
from keras import layers as L

import kprune
from kprune.sparsity.prune import collect_wrappers


def _stem(x):
    x = L.ZeroPadding2D(1)(x)
    x = L.Conv2D(8, 3, strides=2)(x)
    return L.ReLU()(x)


def _functional(middle):
    inp = keras.Input((32, 32, 3))
    x = middle(_stem(inp))
    x = L.GlobalAveragePooling2D(keepdims=True)(x)
    return keras.Model(inp, L.Dense(4)(L.Flatten()(x)))


def _wrapped(model, policy):
    pruned = kprune.prune_low_magnitude(model, pruning_policy=policy)
    return sorted(w.layer.name for w in collect_wrappers(pruned))


def test_residual_with_keras_ops_add_is_supported_and_only_1x1_convs_are_wrapped():
    def middle(x):
        y = L.Conv2D(8, 1, name="pw1")(x)
        y = L.BatchNormalization()(y)
        y = L.DepthwiseConv2D(3, padding="same")(y)
        y = L.Activation("relu6")(y)
        y = L.Conv2D(8, 1, name="pw2")(y)
        return x + y  # a keras.ops node, tfmot's TFOpLambda

    assert _wrapped(_functional(middle), kprune.PruneForLatencyOnXNNPack()) == ["pw1", "pw2"]


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: L.Conv2D(8, 1, strides=2, name="bad"), "Conv2D"),
        (lambda: L.DepthwiseConv2D(3, strides=2, padding="same", name="bad"), "DepthwiseConv2D"),
        (lambda: L.Activation("tanh", name="bad"), "Activation"),
        (lambda: L.MaxPooling2D(name="bad"), "MaxPooling2D"),
    ],
)
def test_unsupported_layer_between_start_and_end_is_named(make, name):
    model = _functional(lambda x: make()(x))
    with pytest.raises(ValueError, match=rf"Layer 'bad' \({name}\) is not supported for the "
                                         r"PruneForLatencyOnXNNPack pruning policy"):
        kprune.prune_low_magnitude(model, pruning_policy=kprune.PruneForLatencyOnXNNPack())


def test_model_without_global_average_pooling_is_refused():
    inp = keras.Input((32, 32, 3))
    model = keras.Model(inp, L.Conv2D(4, 1)(_stem(inp)))
    with pytest.raises(ValueError, match="could not find a `GlobalAveragePooling2D` layer"):
        kprune.prune_low_magnitude(model, pruning_policy=kprune.PruneForLatencyOnXNNPack())


def test_start_needs_zero_padding_and_three_channels():
    model = keras.Sequential([keras.Input((32, 32, 4)), L.ZeroPadding2D(1), L.Conv2D(8, 3, strides=2),
                              L.GlobalAveragePooling2D(keepdims=True)])
    with pytest.raises(ValueError, match="3 input channels"):
        kprune.prune_low_magnitude(model, pruning_policy=kprune.PruneForLatencyOnXNNPack())


def test_unbuilt_and_subclassed_models_are_refused():
    policy = kprune.PruneForLatencyOnXNNPack()
    with pytest.raises(ValueError, match="needs a built model"):
        policy.ensure_model_supports_pruning(keras.Sequential([L.Dense(2)]))

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed models are not supported"):
        policy.ensure_model_supports_pruning(Sub())


def test_custom_policy_contract():
    with pytest.raises(NotImplementedError, match="must implement `allow_pruning"):
        kprune.PruningPolicy().allow_pruning(L.Dense(2))
