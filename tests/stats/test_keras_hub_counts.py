"""KerasHub models counted and pruned (issue 23): tiny random configs of Llama 3
(grouped-query attention, untied LM head), Gemma (tied embeddings, head-first
attention kernels), GPT-2 and BERT.

* `kprune.count_macs` equals the exported TFLite file's count (FULLY_CONNECTED
  and activation x activation BATCH_MATMUL), attention matmuls included;
* an attention layer and an FFN against the hand formula;
* `prune_low_magnitude` prunes every matrix -- the untied LM head
  (`ReversibleEmbedding.reverse_embeddings`) included -- to exactly
  round(n * 0.7) zeros, and `kprune.summary` says which rows are pruned.

KerasHub presets download, so the models are built from configs. Dict-input
KerasHub models go to TFLite's converter wrapped in a Functional model with
one fixed-length `Input` per key (`_functional`), as tests/sparsity/test_subclassed.py
and benchmarks/bench_keras_hub.py do: the converter fails on their dict
inputs.
"""

import warnings

import keras
import numpy as np
import pytest

import kprune
from kprune._internal import functional
from kprune.sparsity.mask_math import target_zeros
from kprune.sparsity.prune import pruned_layers

keras_hub = pytest.importorskip("keras_hub")

V, SEQ, D, I, HQ, HKV = 128, 12, 32, 64, 4, 2
HD = D // HQ
SPARSITY = 0.7


def _llama3(tie=False):
    backbone = keras_hub.models.Llama3Backbone(
        vocabulary_size=V, num_layers=2, num_query_heads=HQ, num_key_value_heads=HKV,
        hidden_dim=D, intermediate_dim=I, tie_word_embeddings=tie)
    return keras_hub.models.Llama3CausalLM(backbone=backbone, preprocessor=None)


def _gemma():
    # Gemma's `intermediate_dim` is the sum of its two gates' widths.
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=V, num_layers=2, num_query_heads=HQ, num_key_value_heads=HKV,
        hidden_dim=D, intermediate_dim=2 * I, head_dim=HD)
    return keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=None)


def _gpt2():
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=V, num_layers=2, num_heads=2, hidden_dim=D, intermediate_dim=I,
        max_sequence_length=SEQ)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def _bert():
    return keras_hub.models.BertBackbone(
        vocabulary_size=V, num_layers=2, num_heads=2, hidden_dim=D, intermediate_dim=I,
        max_sequence_length=SEQ)


BUILD = {"llama3": _llama3, "gemma": _gemma, "gpt2": _gpt2, "bert": _bert}
# Export takes ~5 s a model: Llama 3 (the model) runs by default.
EXPORTED = [name if name == "llama3" else pytest.param(name, marks=pytest.mark.full_matrix)
            for name in BUILD]


def _functional(task, seq=SEQ):
    """`task` called on one fixed-length int32 `Input` per input key."""
    keys = sorted(task.input)
    inputs = [keras.Input((seq,), dtype="int32", name=k) for k in keys]
    return keras.Model(inputs, task(dict(zip(keys, inputs))))


def _randomize(model):
    """Distinct random weights. KerasHub's seeded initializers give equally
    shaped kernels equal values (Llama's key and value), and the converter
    then computes them once: the file would hold fewer ops than the model."""
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0.0, 0.1, size=w.shape).astype(w.dtype) for w in model.get_weights()])


def _samples(model, n=4):
    rng = np.random.default_rng(1)
    values = {"token_ids": rng.integers(0, V, (n, SEQ)), "padding_mask": np.ones((n, SEQ)),
              "segment_ids": np.zeros((n, SEQ))}
    return [values[t.name].astype("int32") for t in model.inputs]


def _rows(model):
    return kprune.stats.layer_stats(model)


@pytest.mark.parametrize("name", EXPORTED)
def test_macs_equal_the_exported_file(name, tmp_path):
    model = _functional(BUILD[name]())
    _randomize(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # every layer traced
        macs = kprune.count_macs(model)
    path = str(tmp_path / f"{name}.tflite")
    report = kprune.export_tflite(model, path, sample_inputs=_samples(model),
                                  measure_latency=False, sparse_encoding=False)
    assert report.verified
    file = kprune.summary(path)
    assert macs == file.macs == report.macs
    # Attention score and context matmuls: BATCH_MATMULs of activations in the
    # file; `keras.ops.einsum` rows in Keras (inside MultiHeadAttention's
    # record for GPT-2 and BERT: 2 per layer, heads x T x T x head_dim each).
    matmuls = sum(r.macs for r in file.rows if r.type == "BATCH_MATMUL")
    heads, head_dim = (HQ, HD) if name in ("llama3", "gemma") else (2, D // 2)
    assert matmuls == 2 * 2 * heads * SEQ * SEQ * head_dim
    if name in ("llama3", "gemma"):
        assert matmuls == sum(r.macs for r in _rows(model) if r.type == "Einsum")
    # The LM head: one FULLY_CONNECTED over the vocabulary (tied: reading the
    # GATHER's table, whose parameters count with the GATHER).
    if name != "bert":
        lm_head = [r for r in file.rows if r.type == "FULLY_CONNECTED" and r.macs == SEQ * D * V]
        assert len(lm_head) == 1
        assert lm_head[0].params == (V * D if name == "llama3" else 0)


def test_llama3_attention_and_ffn_macs_match_the_formula():
    rows = _rows(_functional(_llama3()))
    macs = {r.name: r.macs for r in rows if r.type != "Einsum"}
    block = "transformer_layer_0"
    # Grouped-query attention: Hkv key/value heads, Hq query heads.
    assert macs[f"{block}/self_attention/query"] == SEQ * D * HQ * HD
    assert macs[f"{block}/self_attention/key"] == SEQ * D * HKV * HD
    assert macs[f"{block}/self_attention/value"] == SEQ * D * HKV * HD
    assert macs[f"{block}/self_attention/attention_output"] == SEQ * HQ * HD * D
    # Q K^T and A V over the keys repeated to Hq heads.
    scores = [r.macs for r in rows if r.type == "Einsum" and r.name.startswith(f"{block}/")]
    assert scores == [HQ * SEQ * SEQ * HD] * 2
    # SwiGLU FFN: gate and up (D -> I), down (I -> D).
    for dense in ("feedforward_gate_dense", "feedforward_intermediate_dense", "feedforward_output_dense"):
        assert macs[f"{block}/{dense}"] == SEQ * D * I
    # The LM head: the second call of the token embedding, reverse=True.
    assert [(r.params, r.macs) for r in rows if r.name == "token_embedding"] == [
        (2 * V * D, 0), (0, SEQ * D * V)]
    attention = 2 * SEQ * D * HQ * HD + 2 * SEQ * D * HKV * HD + 2 * HQ * SEQ * SEQ * HD
    ffn = 3 * SEQ * D * I
    assert kprune.count_macs(_functional(_llama3())) == 2 * (attention + ffn) + SEQ * D * V


def test_gemma_attention_and_ffn_macs_match_the_formula():
    rows = _rows(_functional(_gemma()))
    block = "decoder_block_0"
    inside = {r.name[len(block) + 1:]: r.macs for r in rows if r.name.startswith(f"{block}/")}
    # Head-first kernels (heads, hidden, head_dim); the query reshaped to
    # (Hkv, Hq / Hkv) groups for the two einsums.
    assert inside["attention/query"] == SEQ * D * HQ * HD
    assert inside["attention/key"] == inside["attention/value"] == SEQ * D * HKV * HD
    assert inside["attention/attention_output"] == SEQ * HQ * HD * D
    assert sorted(m for n, m in inside.items() if n.startswith("attention/einsum")) == [
        HQ * SEQ * SEQ * HD] * 2
    assert inside["ffw_gating"] == inside["ffw_gating_2"] == inside["ffw_linear"] == SEQ * D * I
    # Tied embeddings: the table (once) is the LM head.
    assert [(r.params, r.macs) for r in rows if r.name == "token_embedding"] == [
        (V * D, 0), (0, SEQ * D * V)]


def test_unknown_sequence_length_counts_one_token():
    """A KerasHub task's own inputs have no fixed length: counted for one
    token (unknown axes count 1), as the wrapped model of length 1."""
    task = _llama3()
    assert kprune.count_macs(task) == kprune.count_macs(_functional(task, seq=1)) > 0


def test_counting_leaves_the_model_as_it_was():
    task = _llama3()
    model = _functional(task)
    layers = [model] + functional.sublayers(model)
    nodes = [(len(layer._inbound_nodes), len(layer._outbound_nodes)) for layer in layers]
    names = [keras.layers.Add().name]
    assert kprune.count_macs(model) > 0
    names.append(keras.layers.Add().name)
    assert [(len(layer._inbound_nodes), len(layer._outbound_nodes)) for layer in layers] == nodes
    # Keras' name counters: the operations of the trace took no names.
    first = 0 if names[0] == "add" else int(names[0].rpartition("_")[2])
    assert names[1] == f"add_{first + 1}"
    assert not any("compute_output_spec" in vars(layer) for layer in layers)


def _matrices(model):
    """Paths of the model's trainable matrices (biases of shape (heads,
    head_dim) aside): what magnitude pruning must reach."""
    return {v.path for v in model.trainable_weights if len(v.shape) >= 2 and "bias" not in v.name}


def _check_pruned(model):
    pruned = {}
    for target in pruned_layers(model):
        for variable, mask in target.pruned_weights:
            w = keras.ops.convert_to_numpy(variable.value)
            keep = keras.ops.convert_to_numpy(mask)
            assert (w == 0).sum() == (~keep).sum() == target_zeros(w.size, SPARSITY), variable.path
            pruned[variable.path] = w
    assert set(pruned) == _matrices(model)
    return pruned


@pytest.mark.full_matrix  # ~8 s: the train step of a CausalLM traces slowly
def test_llama3_every_matrix_and_the_lm_head_pruned_while_training():
    keras.utils.set_random_seed(0)
    task = _llama3()
    assert not task.backbone.token_embedding.tie_weights  # Llama 3's default
    kprune.prune_low_magnitude(task, pruning_schedule=kprune.ConstantSparsity(SPARSITY, 0, frequency=1))
    task.compile(optimizer=keras.optimizers.Adam(1e-2),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, V, (8, SEQ)).astype("int32")
    x = {"token_ids": tokens, "padding_mask": np.ones_like(tokens)}
    task.fit(x, np.roll(tokens, -1, axis=1), batch_size=4, epochs=1, verbose=0, shuffle=False,
             callbacks=[kprune.UpdatePruningStep()])
    pruned = _check_pruned(task)
    head = task.backbone.token_embedding.reverse_embeddings
    assert head.path in pruned and (pruned[head.path] == 0).sum() == target_zeros(V * D, SPARSITY)
    # The summary: every row with a matrix says "yes", at the target.
    rows = [r for r in _rows(task) if r.pruned]
    assert {r.pruned for r in rows} == {"yes"}
    assert {r.name for r in rows} >= {"token_embedding", "transformer_layer_1/self_attention/key"}
    embedding = next(r for r in rows if r.name == "token_embedding")
    assert (embedding.params, embedding.params - embedding.nonzero) == (
        2 * V * D, 2 * target_zeros(V * D, SPARSITY))
    assert "pruned" in str(kprune.summary(task)).splitlines()[1]


@pytest.mark.parametrize("name", list(BUILD))
def test_every_matrix_pruned_to_the_target(name):
    model = BUILD[name]()
    kprune.prune_low_magnitude(model, pruning_schedule=kprune.ConstantSparsity(SPARSITY, 0))
    kprune.update_masks(model, sparsity=SPARSITY)
    pruned = _check_pruned(model)
    if name == "llama3":  # the untied LM head, the largest matrix of a real Llama
        head = model.backbone.token_embedding.reverse_embeddings
        assert (pruned[head.path] == 0).sum() == target_zeros(V * D, SPARSITY)
    assert {r.pruned for r in _rows(model) if r.pruned} == {"yes"}


class _NoEmbeddings(kprune.PruningPolicy):
    """SparseGPT's and Wanda's choice: embeddings and the LM head stay dense."""

    def allow_pruning(self, layer):
        return not isinstance(layer, keras.layers.Embedding)

    def ensure_model_supports_pruning(self, model):
        pass


def test_summary_shows_what_is_left_dense():
    task = _llama3()
    kprune.prune_low_magnitude(task, pruning_policy=_NoEmbeddings())
    kprune.update_masks(task, sparsity=SPARSITY)
    status = {r.name: r.pruned for r in _rows(task) if r.pruned}
    assert status.pop("token_embedding") == "no"
    assert set(status.values()) == {"yes"}
    line = next(line for line in str(kprune.summary(task)).splitlines()
                if line.startswith("token_embedding ") and line.split()[2] != "0")
    assert line.split()[-1] == "no" and line.split()[-3] == "0.0%"
