"""`kprune.prune_oneshot` on Sequential and Functional models: block-by-block
calibration against a NumPy replay, exclusions, ratios, data forms, errors."""

import keras
import numpy as np
import pytest
from _backend import numpy

import kprune
from kprune.llm.sparsegpt import sparsegpt
from kprune.sparsity.mask_math import target_zeros


def mlp(name="mlp"):
    inputs = keras.Input((16,), name="features")
    x = keras.layers.Dense(32, activation="relu", name="a")(inputs)
    y = keras.layers.Dense(32, name="b")(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.Dense(16, activation="tanh", name="c")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x), name=name)


@pytest.fixture
def data(rng):
    x = rng.normal(size=(40, 16)) * np.linspace(0.2, 3.0, 16)
    return x.astype("float32")


def weights(model):
    return {layer.name: (numpy(layer.kernel).astype(np.float64), numpy(layer.bias).astype(np.float64))
            for layer in model.layers if hasattr(layer, "kernel")}


def replay(w, x, prune):
    """The references' procedure in NumPy: each layer calibrated on the
    outputs of the layers before it, already pruned."""
    x = x.astype(np.float64)
    a = prune("a", w["a"][0], x)
    h = np.maximum(x @ a + w["a"][1], 0)
    b = prune("b", w["b"][0], h)
    h = h + h @ b + w["b"][1]
    c = prune("c", w["c"][0], h)
    return {"a": a, "b": b, "c": c}


def wanda_numpy(sparsity):
    def prune(name, kernel, x):
        scores = np.abs(kernel) * np.sqrt((x ** 2).mean(axis=0))[:, None]
        k = target_zeros(kernel.shape[0], sparsity)
        order = np.argsort(scores, axis=0, kind="stable")[:k]
        new = kernel.copy()
        np.put_along_axis(new, order, 0.0, axis=0)
        return new
    return prune


def sparsegpt_numpy(sparsity):
    def prune(name, kernel, x):
        return sparsegpt(kernel, 2 * x.T @ x / len(x), sparsity, blocksize=8)[0]
    return prune


@pytest.mark.parametrize("method, replayed, rtol", [("wanda", wanda_numpy(0.5), 0),
                                                    ("sparsegpt", sparsegpt_numpy(0.5), 1e-4)])
def test_each_layer_is_calibrated_on_the_pruned_layers_before_it(method, replayed, rtol, data):
    model = mlp()
    expected = replay(weights(model), data, replayed)
    report = kprune.prune_oneshot(model, 0.5, method=method, data=data, batch_size=16, blocksize=8, verbose=0)
    assert [layer.name for layer in report.layers] == ["a", "b", "c"]
    assert report.excluded == ["head"]
    for name, kernel in expected.items():
        got = numpy(model.get_layer(name).kernel)
        np.testing.assert_array_equal(got == 0, kernel == 0, err_msg=name)
        np.testing.assert_allclose(got, kernel, rtol=rtol, atol=1e-5 if rtol else 0, err_msg=name)
    assert (numpy(model.get_layer("head").kernel) != 0).all()


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("sparsity", [0.6, "2:4", "4:8"])
def test_exact_sparsity_and_patterns(method, sparsity, data):
    model = mlp()
    report = kprune.prune_oneshot(model, sparsity, method=method, data=data, blocksize=8, verbose=0)
    for name in ("a", "b", "c"):
        kernel = numpy(model.get_layer(name).kernel)
        if sparsity == 0.6:
            if method == "wanda":  # per output
                assert ((kernel == 0).sum(axis=0) == target_zeros(kernel.shape[0], 0.6)).all()
            elif method == "magnitude":  # per matrix
                assert (kernel == 0).sum() == target_zeros(kernel.size, 0.6)
            else:  # per block of 8 inputs
                assert (kernel == 0).sum() == 8 * target_zeros(8 * kernel.shape[1], 0.6) * kernel.shape[0] // 64
        else:
            n, m = (int(v) for v in sparsity.split(":"))
            groups = (kernel == 0).reshape(-1, m, kernel.shape[1]).sum(axis=1)
            assert (groups == n).all(), name
    if isinstance(sparsity, str):
        n, m = (int(v) for v in sparsity.split(":"))
        assert kprune.check_sparsity_m_by_n(model, n, m) == {
            "a/kernel": True, "b/kernel": True, "c/kernel": True, "head/kernel": False}  # the head is dense
    assert report.overall_sparsity == pytest.approx(0.6 if sparsity == 0.6 else 0.5, abs=0.01)


def test_exclude_and_explicit_ratios(data):
    model = mlp()
    report = kprune.prune_oneshot(model, 0.5, data=data, exclude=[], verbose=0)
    assert [layer.name for layer in report.layers] == ["a", "b", "c", "head"]
    model = mlp()
    report = kprune.prune_oneshot(model, 0.5, data=data, exclude=r"^(b|head)$", verbose=0)
    assert [layer.name for layer in report.layers] == ["a", "c"]
    model = mlp()
    report = kprune.prune_oneshot(model, 0.5, data=data, ratios={"a": 0.25, "c": "2:4"}, verbose=0)
    assert [(layer.name, layer.target) for layer in report.layers] == [("a", 0.25), ("b", 0.5), ("c", 0.5)]
    assert float((numpy(model.get_layer("a").kernel) == 0).mean()) == 0.25
    model = mlp()
    report = kprune.prune_oneshot(model, 0.5, data=data, ratios=[0.1, 0.2, 0.3], verbose=0)
    assert [layer.sparsity for layer in report.layers] == pytest.approx([0.125, 0.1875, 0.3125])
    with pytest.raises(ValueError, match=r"names no pruned layer or block: \['zzz'\]"):
        kprune.prune_oneshot(mlp(), 0.5, data=data, ratios={"zzz": 0.1}, verbose=0)
    with pytest.raises(ValueError, match="one sparsity per block"):
        kprune.prune_oneshot(mlp(), 0.5, data=data, ratios=[0.1], verbose=0)


def test_owl_gives_blocks_their_outlier_weighted_sparsity(data):
    model = mlp()
    report = kprune.prune_oneshot(model, 0.5, data=data, ratios="owl", owl_lambda=0.1, owl_threshold=2.0,
                                  verbose=0)
    ratios = list(report.outlier_ratios.values())
    targets = list(report.block_sparsity.values())
    assert len(set(ratios)) == 3
    assert np.mean(targets) == pytest.approx(0.5)
    assert max(targets) - min(targets) == pytest.approx(0.2)
    # More outliers, less sparsity.
    assert np.argsort(ratios).tolist() == np.argsort(targets)[::-1].tolist()
    for layer in report.layers:
        kernel = numpy(model.get_layer(layer.name).kernel)
        assert ((kernel == 0).sum(axis=0) == target_zeros(kernel.shape[0], layer.target)).all()


def test_data_forms(data):
    import tensorflow as tf

    expected = mlp()
    kprune.prune_oneshot(expected, 0.5, data=data, batch_size=8, verbose=0)
    forms = [
        [data],
        {"features": data},
        tf.data.Dataset.from_tensor_slices((data, np.zeros(len(data)))).batch(8),
        (data[i:i + 8] for i in range(0, len(data), 8)),
    ]
    for form in forms:
        keras.utils.set_random_seed(0)
        keras.backend.clear_session()
        model = mlp()
        kprune.prune_oneshot(model, 0.5, data=form, verbose=0)
        for name in ("a", "b", "c"):
            np.testing.assert_array_equal(numpy(model.get_layer(name).kernel),
                                          numpy(expected.get_layer(name).kernel))


def test_errors_name_the_argument(data):
    with pytest.raises(ValueError, match="Argument `method` must be one of"):
        kprune.prune_oneshot(mlp(), 0.5, method="obs", data=data)
    with pytest.raises(ValueError, match="Argument `data` is required"):
        kprune.prune_oneshot(mlp(), 0.5, method="wanda")
    with pytest.raises(ValueError, match="does not fit the inputs of model 'mlp'"):
        kprune.prune_oneshot(mlp(), 0.5, data={"tokens": data})
    with pytest.raises(ValueError, match="OWL's N:M variant"):
        kprune.prune_oneshot(mlp(), "2:4", data=data, ratios="owl")
    with pytest.raises(ValueError, match="no linear layer to prune"):
        kprune.prune_oneshot(mlp(), 0.5, data=data, exclude=".*")

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(data)
    with pytest.raises(ValueError, match="needs a Sequential or Functional model"):
        kprune.prune_oneshot(net, 0.5, data=data)


def test_magnitude_needs_no_data():
    model = mlp()
    report = kprune.prune_oneshot(model, 0.5, method="magnitude", verbose=0)
    assert report.overall_sparsity == 0.5 and report.peak_activation_bytes == 0


def test_sparse_fine_tune_keeps_the_zeros_and_the_pattern(data, rng):
    model = mlp()
    kprune.prune_oneshot(model, "2:4", method="sparsegpt", data=data, blocksize=8, verbose=0)
    zeros = {name: numpy(model.get_layer(name).kernel) == 0 for name in ("a", "b", "c")}
    before = {name: numpy(model.get_layer(name).kernel) for name in zeros}
    # In-place masks from `weight != 0`, never recomputed (with the callback too).
    assert kprune.llm.keep_zeros(model) is model
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(data, rng.normal(size=(len(data), 4)), batch_size=8, epochs=2, verbose=0,
              callbacks=[kprune.UpdatePruningStep()])
    tuned = kprune.strip_pruning(model)
    for name, mask in zeros.items():
        kernel = numpy(tuned.get_layer(name).kernel)
        np.testing.assert_array_equal(kernel == 0, mask, err_msg=name)
        assert not np.array_equal(kernel, before[name]), name  # it trained
    checked = kprune.check_sparsity_m_by_n(tuned, 2, 4)
    assert checked == {"a/kernel": True, "b/kernel": True, "c/kernel": True, "head/kernel": False}


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(method, data):
    expected = mlp()
    kprune.prune_oneshot(expected, 0.5, method=method, data=data, blocksize=8, verbose=0)
    keras.utils.set_random_seed(0)
    keras.backend.clear_session()
    model = mlp()
    # An interrupted run: the first block pruned, the others not yet.
    kprune.prune_oneshot(model, 0.5, method=method, data=data, blocksize=8, exclude=["b", "c", "head"], verbose=0)
    report = kprune.prune_oneshot(model, 0.5, method=method, data=data, blocksize=8, resume=True,
                                  measure_error=True, verbose=0)
    assert [layer.error is None for layer in report.layers] == [True, False, False]  # "a" skipped
    for name in ("a", "b", "c"):
        np.testing.assert_array_equal(numpy(model.get_layer(name).kernel), numpy(expected.get_layer(name).kernel))


def test_convolutions_are_pruned_as_patch_matrices(rng):
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    images = rng.normal(size=(24, 10, 10, 3)).astype("float32")
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        keras.utils.set_random_seed(0)
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        report = kprune.prune_oneshot(clone, 0.5, method=method, data=images, comparison="output",
                                      measure_error=True, blocksize=9, verbose=0)
        assert [layer.name for layer in report.layers] == ["conv1", "conv2"]
        assert [layer.shape for layer in report.layers] == [(27, 8), (72, 16)]
        for name in ("conv1", "conv2"):
            kernel = numpy(clone.get_layer(name).kernel)
            matrix = kernel.reshape(-1, kernel.shape[-1])
            if method == "sparsegpt":
                assert (matrix == 0).mean() == 0.5
            else:
                assert ((matrix == 0).sum(axis=0) == target_zeros(matrix.shape[0], 0.5)).all()
        errors[method] = [layer.error for layer in report.layers]
    assert all(s < min(w, m) for s, w, m in zip(errors["sparsegpt"], errors["wanda"], errors["magnitude"]))
