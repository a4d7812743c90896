"""Export of models whose input is a dict (issue 25): KerasHub backbones and tasks.

`TFLiteConverter.from_keras_model` fails on them ("'NoneType' object is not
callable"); kprune converts them with Keras' own exporter at fixed input
shapes and LiteRT's builtin ops, then verifies the file in LiteRT as for any
model. A pruned Llama 3 (masked: its unread heads and units are removed on
the way) exports to a verified file whose MACs equal `count_macs` at the
same sequence length and whose weight matrices hold the Keras model's
parameters; quantization and the sparse encoding still apply.
"""

import numpy as np
import pytest

import kprune
from kprune.stats.summaries import summary

keras_hub = pytest.importorskip("keras_hub")

V, SEQ = 64, 12
SHAPES = {"token_ids": (SEQ,), "padding_mask": (SEQ,)}


def _llama3():
    task = keras_hub.models.Llama3CausalLM(backbone=keras_hub.models.Llama3Backbone(
        vocabulary_size=V, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
        intermediate_dim=32), preprocessor=None)
    rng = np.random.default_rng(0)
    task.set_weights([rng.normal(0.0, 0.1, w.shape).astype("float32") for w in task.get_weights()])
    return task


def _samples(n=4):
    rng = np.random.default_rng(1)
    return {"token_ids": rng.integers(0, V, (n, SEQ)).astype("int32"), "padding_mask": np.ones((n, SEQ), "int32")}


def _matrix_params(rows, types):
    return sum(r.params for r in rows if r.type in types)


def test_a_masked_llama_exports_smaller_and_verified_with_the_counted_macs(tmp_path):
    task = _llama3()
    masked = kprune.mask_channels(task, kprune.plan_channels(task, 0.5, round_to=1))
    path = str(tmp_path / "llama.tflite")
    report = kprune.export_tflite(masked, path, sample_inputs=_samples(), measure_latency=False)
    assert report.verified and report.channels_removed
    small = kprune.remove_channels(masked)
    file = summary(path)
    assert report.macs == file.macs == kprune.count_macs(small, SHAPES) < kprune.count_macs(task, SHAPES)
    # The weight matrices (FULLY_CONNECTED, the embedding's GATHER) hold the
    # Keras model's matrices; the file adds RoPE tables and scalars, and folds
    # the norms' scales into the next matrix.
    keras_matrices = sum(int(np.prod(v.shape)) for v in small.weights if len(v.shape) > 1)
    assert _matrix_params(file.rows, ("FULLY_CONNECTED", "GATHER")) == keras_matrices


def test_the_sparse_encoding_applies_to_dict_inputs(tmp_path):
    task = _llama3()
    kprune.prune_low_magnitude(task, pruning_policy=None)
    kprune.update_masks(task, sparsity=0.7)
    report = kprune.export_tflite(task, str(tmp_path / "sparse.tflite"), sample_inputs=_samples(),
                                  sparse_encoding=True, measure_latency=False)
    assert report.verified and report.sparse_encoding


@pytest.mark.full_matrix
def test_int8_quantization_calibrates_on_dict_samples(tmp_path):
    report = kprune.export_tflite(_llama3(), str(tmp_path / "int8.tflite"), representative_data=_samples(8),
                                  quantize="int8", measure_latency=False)
    assert report.verified and report.quantization == "int8"


def test_unknown_lengths_need_input_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"has inputs of unknown size .* Pass `input_shapes`"):
        kprune.export_tflite(_llama3(), str(tmp_path / "m.tflite"))
    report = kprune.export_tflite(_llama3(), str(tmp_path / "m.tflite"), input_shapes=SHAPES,
                                  measure_latency=False)
    assert report.verified and report.macs == kprune.count_macs(_llama3(), SHAPES)
