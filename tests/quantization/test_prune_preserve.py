"""PQAT keeps every zero, in the Keras model and in the int8 file: unstructured, 2:4, channel-pruned."""

import keras
import numpy as np
import pytest
from _qat_models import compile_classifier, small_cnn
from ai_edge_litert.interpreter import Interpreter

import kprune
from kprune.quantization import (
    Default8BitPrunePreserveQuantizeScheme,
    QuantizeWrapper,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
)

COMPUTE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _np(x):
    return keras.ops.convert_to_numpy(x)


def kernels(model):
    """`{layer name: kernel}` of the quantized (or plain) layers with kernels."""
    out = {}
    for layer in model.layers:
        inner = layer.layer if isinstance(layer, QuantizeWrapper) else layer
        if hasattr(inner, "kernel"):
            out[inner.name] = _np(inner.kernel)
    return out


def file_kernel_zeros(path):
    """Zero counts of the int8 weight tensors of the file's compute ops, in op order."""
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    zeros = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in COMPUTE_OPS:
            weight = interpreter.get_tensor(op["inputs"][1])
            assert weight.dtype == np.int8
            zeros.append(int(np.sum(weight == 0)))
    return zeros


def pqat(model):
    return quantize_apply(quantize_annotate_model(model), Default8BitPrunePreserveQuantizeScheme())


@pytest.fixture(scope="module")
def pruned(digits):
    keras.utils.set_random_seed(2)
    x, y, _, _ = digits
    model = compile_classifier(small_cnn())
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    wrapped = kprune.prune_low_magnitude(model)
    kprune.update_masks(wrapped, sparsity=0.5)
    return kprune.strip_pruning(wrapped)


def fine_tune(model, digits, epochs=1):
    x, y, _, _ = digits
    compile_classifier(model, 1e-3).fit(x[:640], y[:640], epochs=epochs, batch_size=64, verbose=0)
    return model


def test_pqat_keeps_every_zero_and_qat_does_not(pruned, digits, tmp_path):
    before = kernels(pruned)
    zeros = {name: k == 0 for name, k in before.items()}
    assert all(z.mean() == pytest.approx(0.5, abs=0.01) for z in zeros.values())
    kept = fine_tune(pqat(pruned), digits)
    after = kernels(kept)
    for name, z in zeros.items():
        np.testing.assert_array_equal(after[name] == 0, z, err_msg=name)  # exactly the same zeros
        assert not np.array_equal(after[name], before[name])  # and the rest trained
    lost = kernels(fine_tune(quantize_model(pruned), digits))
    assert sum(int(np.sum(lost[n] == 0)) for n in zeros) < sum(int(z.sum()) for z in zeros.values())
    # The int8 file has the same zeros (BatchNormalization folded in keeps them).
    path = str(tmp_path / "pqat.tflite")
    report = kprune.export_tflite(kept, path, measure_latency=False)
    assert report.verified
    assert file_kernel_zeros(path) == [int(z.sum()) for z in zeros.values()]
    assert report.sparsity == pytest.approx(sum(int(z.sum()) for z in zeros.values()) / report.params, abs=0.01)


def test_pqat_keeps_two_of_four(digits, tmp_path):
    keras.utils.set_random_seed(3)
    model = small_cnn(bn=False)
    model.build((None, 8, 8, 1))

    def two_of_four(layer):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.name != "conv":
            return kprune.prune_low_magnitude(layer, sparsity_m_by_n=(2, 4))
        return layer

    wrapped = keras.models.clone_model(model, clone_function=two_of_four)
    kprune.update_masks(wrapped)
    stripped = kprune.strip_pruning(wrapped)
    kept = fine_tune(pqat(stripped), digits)
    on_keras = kprune.check_sparsity_m_by_n(kept, 2, 4)
    assert [ok for name, ok in sorted(on_keras.items()) if "pw" in name or "logits" in name] == [True, True]
    path = str(tmp_path / "two_of_four.tflite")
    assert kprune.export_tflite(kept, path, measure_latency=False).verified
    in_file = {name.split("/")[1]: ok for name, ok in kprune.check_sparsity_m_by_n(path, 2, 4).items()}
    assert in_file["quant_pw_1"] and in_file["quant_logits_1"]


@pytest.fixture(scope="module")
def channel_masked(pruned):
    return kprune.mask_channels(pruned, kprune.plan_channels(pruned, 0.25, round_to=4))


def test_pqat_keeps_pruned_channels(channel_masked, digits, tmp_path):
    dead = {name: np.all(k == 0, axis=tuple(range(k.ndim - 1))) for name, k in kernels(channel_masked).items()}
    assert any(d.any() for d in dead.values())
    kept = fine_tune(pqat(channel_masked), digits)
    for name, k in kernels(kept).items():
        assert np.all(k[..., dead[name]] == 0), name  # whole output channels stay zero
    path = str(tmp_path / "masked.tflite")
    report = kprune.export_tflite(kept, path, measure_latency=False)
    assert report.verified and report.quantization == "int8 (QAT ranges)"
    assert file_kernel_zeros(path) == [int(np.sum(k == 0)) for k in kernels(kept).values()]


def test_pqat_keeps_the_zeros_of_a_channel_removed_model(channel_masked, digits, tmp_path):
    # Channels removed, then pruned again: PQAT keeps the new zeros.
    removed = kprune.remove_channels(channel_masked)
    masked = channel_masked
    assert removed.count_params() < masked.count_params()
    wrapped = kprune.prune_low_magnitude(removed)
    kprune.update_masks(wrapped, sparsity=0.6)
    stripped = kprune.strip_pruning(wrapped)
    zeros = {name: k == 0 for name, k in kernels(stripped).items()}
    kept = fine_tune(pqat(stripped), digits)
    for name, k in kernels(kept).items():
        np.testing.assert_array_equal(k == 0, zeros[name], err_msg=name)
    path = str(tmp_path / "removed.tflite")
    assert kprune.export_tflite(kept, path, measure_latency=False).verified
    assert file_kernel_zeros(path) == [int(z.sum()) for z in zeros.values()]


def test_pqat_model_saves_its_masks(pruned, digits, tmp_path):
    model = pqat(pruned)
    zeros = {name: k == 0 for name, k in kernels(model).items()}
    path = tmp_path / "pqat.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    kept = fine_tune(loaded, digits)
    for name, k in kernels(kept).items():
        np.testing.assert_array_equal(k == 0, zeros[name], err_msg=name)
    config = loaded.get_layer("quant_conv").quantize_config
    assert type(config.quantize_config).__name__ == "PrunePreserveQuantizeConfig"  # fused, and still PQAT
