"""`prune_oneshot` on tiny random KerasHub models (Llama 3 with GQA, Gemma,
Qwen 3): every method, unstructured and 2:4; then the pruned model as an
ordinary Keras model (sparse fine-tune keeps the zeros, .keras file, preset,
verified TFLite file)."""

import keras
import numpy as np
import pytest
from _backend import numpy

import kprune
from kprune._internal.functional import sublayers
from kprune.registry import keras_layers
from kprune.sparsity.mask_math import target_zeros

keras_hub = pytest.importorskip("keras_hub")

V, SEQ, D, I, HQ, HKV, HD = 96, 12, 32, 64, 4, 2, 8


def llama3(dtype=None):
    backbone = keras_hub.models.Llama3Backbone(
        vocabulary_size=V, num_layers=2, num_query_heads=HQ, num_key_value_heads=HKV, hidden_dim=D,
        intermediate_dim=I, dtype=dtype)
    return keras_hub.models.Llama3CausalLM(backbone=backbone, preprocessor=None)


def gemma():
    return keras_hub.models.GemmaBackbone(
        vocabulary_size=V, num_layers=2, num_query_heads=HQ, num_key_value_heads=HKV, hidden_dim=D,
        intermediate_dim=2 * I, head_dim=HD)


def qwen3():
    return keras_hub.models.Qwen3Backbone(
        vocabulary_size=V, num_layers=2, num_query_heads=HQ, num_key_value_heads=HKV, hidden_dim=D,
        intermediate_dim=I, head_dim=HD)


BUILD = {"llama3": llama3, "gemma": gemma, "qwen3": qwen3}


def randomize(model, seed=0):
    """Distinct weights: KerasHub's seeded initializers give equally shaped
    kernels equal values (Llama's key and value)."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, 0.2, size=w.shape).astype(w.dtype) for w in model.get_weights()])


@pytest.fixture
def tokens(rng):
    return rng.integers(0, V, size=(12, SEQ)).astype("int32")


def linear_matrices(model):
    """`{name: (d_in, d_out) array}` of every linear layer."""
    found = {}
    for layer in sublayers(model):
        view = keras_layers.linear_view(layer)
        if view is not None:
            found[view.variable.path.rsplit("/", 1)[0]] = numpy(view.matrix(view.variable.value))
    return found


# By default each family, each method and each pattern runs at least once
# (SparseGPT on every family: its shared Hessians follow each block's wiring);
# `pytest -m full_matrix` runs the rest of family x method x pattern.
REDUCED = {("llama3", "sparsegpt", "2:4"), ("llama3", "magnitude", 0.5), ("gemma", "sparsegpt", 0.5),
           ("gemma", "wanda", "2:4"), ("qwen3", "wanda", 0.5), ("qwen3", "sparsegpt", "2:4")}
CASES = [case if case in REDUCED else pytest.param(*case, marks=pytest.mark.full_matrix)
         for case in ((f, m, s) for f in BUILD for m in ("magnitude", "wanda", "sparsegpt") for s in (0.5, "2:4"))]


@pytest.mark.parametrize("family, method, sparsity", CASES)
def test_every_linear_layer_of_the_blocks_is_pruned(family, method, sparsity, tokens):
    model = BUILD[family]()
    randomize(model)
    embeddings = {v.path: numpy(v) for v in model.weights if "embedding" in v.path}
    report = kprune.prune_oneshot(model, sparsity, method=method, data=tokens, blocksize=16, verbose=0)
    matrices = linear_matrices(model)
    assert sorted(layer.name for layer in report.layers) == sorted(matrices)
    assert len(matrices) == 14 and report.excluded == []
    assert list(report.block_sparsity) == [f"{'decoder_block' if family == 'gemma' else 'transformer_layer'}_{i}"
                                           for i in range(2)]
    for name, matrix in matrices.items():
        zeros = matrix == 0
        if sparsity == "2:4":
            assert (zeros.reshape(-1, 4, matrix.shape[1]).sum(axis=1) == 2).all(), name
        elif method == "wanda":
            assert (zeros.sum(axis=0) == target_zeros(matrix.shape[0], 0.5)).all(), name
        else:
            assert zeros.mean() == 0.5, name
    if sparsity == "2:4":
        checked = kprune.check_sparsity_m_by_n(model, 2, 4)
        assert {k for k, ok in checked.items() if not ok} == {k for k in checked if "embedding" in k}
    for path, value in embeddings.items():  # embeddings and the LM head stay dense
        np.testing.assert_array_equal(numpy(next(v for v in model.weights if v.path == path)), value)
    inputs = {"token_ids": tokens[:2], "padding_mask": np.ones_like(tokens[:2])}
    assert np.isfinite(numpy(model(inputs))).all()
    if method == "sparsegpt":
        assert all(layer.damping == 0.01 and layer.error is None for layer in report.layers)


def test_sparsegpt_reconstructs_better_than_wanda_and_wanda_than_magnitude(tokens):
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        model = llama3()
        randomize(model)
        report = kprune.prune_oneshot(model, 0.5, method=method, data=tokens, measure_error=True,
                                      comparison="output", verbose=0)
        errors[method] = np.array([layer.error for layer in report.layers])
    assert (errors["sparsegpt"] < errors["wanda"]).all()
    assert np.mean(errors["wanda"]) < np.mean(errors["magnitude"])


def test_bfloat16_model_statistics_in_float(tokens):
    model = llama3(dtype="bfloat16")
    randomize(model)
    report = kprune.prune_oneshot(model, 0.5, method="sparsegpt", data=tokens, blocksize=16, measure_error=True,
                                  verbose=0)
    assert all(layer.sparsity == 0.5 for layer in report.layers)
    assert all(0 < layer.error < 1 for layer in report.layers)
    assert {v.dtype for v in model.weights if v.path.endswith("query/kernel")} == {"bfloat16"}


def test_owl_on_a_causal_lm(tokens):
    model = llama3()
    randomize(model)
    report = kprune.prune_oneshot(model, 0.6, data={"token_ids": tokens, "padding_mask": np.ones_like(tokens)},
                                  ratios="owl", owl_threshold=3.0, verbose=0)
    assert set(report.outlier_ratios) == {"transformer_layer_0", "transformer_layer_1"}
    assert np.mean(list(report.block_sparsity.values())) == pytest.approx(0.6)
    assert report.overall_sparsity == pytest.approx(0.6, abs=0.02)


@pytest.mark.full_matrix  # ~10 s: the train step of a CausalLM traces slowly (test_oneshot.py has a fast one)
def test_sparse_fine_tune_of_a_causal_lm_keeps_the_zeros(tokens):
    task = llama3()
    randomize(task)
    kprune.prune_oneshot(task, "2:4", method="sparsegpt", data=tokens, blocksize=16, verbose=0)
    zeros = {name: m == 0 for name, m in linear_matrices(task).items()}
    kprune.llm.keep_zeros(task)
    task.compile(optimizer=keras.optimizers.Adam(1e-2),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = {"token_ids": tokens, "padding_mask": np.ones_like(tokens)}
    before = linear_matrices(task)
    task.fit(x, np.roll(tokens, -1, axis=1), batch_size=4, epochs=1, verbose=0, shuffle=False)
    kprune.strip_pruning(task)
    after = linear_matrices(task)
    for name in zeros:
        np.testing.assert_array_equal(after[name] == 0, zeros[name], err_msg=name)
        assert not np.allclose(after[name], before[name]), name  # it trained
    checked = kprune.check_sparsity_m_by_n(task, 2, 4)
    assert all(ok for k, ok in checked.items() if "embedding" not in k)


def test_pruned_causal_lm_counts_saves_reloads_and_exports(tokens, tmp_path):
    task = llama3()
    randomize(task)
    kprune.prune_oneshot(task, "2:4", method="sparsegpt", data=tokens, blocksize=16, verbose=0)
    zeros = {name: m == 0 for name, m in linear_matrices(task).items()}
    rows = {r.name: r for r in kprune.stats.layer_stats(task)}
    query = rows["transformer_layer_0/self_attention/query"]
    assert query.params - query.nonzero == D * HQ * HD // 2
    linear_params = sum(m.size for m in linear_matrices(task).values())
    assert kprune.count_params(task) - kprune.count_params(task, nonzero=True) == linear_params // 2
    x = {"token_ids": tokens[:4], "padding_mask": np.ones_like(tokens[:4])}
    expected = numpy(task(x))
    task.save(tmp_path / "pruned.keras")
    loaded = keras.models.load_model(tmp_path / "pruned.keras")
    np.testing.assert_allclose(numpy(loaded(x)), expected, rtol=1e-5, atol=1e-5)
    task.backbone.save_to_preset(str(tmp_path / "preset"))
    backbone = keras_hub.models.Backbone.from_preset(str(tmp_path / "preset"))
    for name, matrix in linear_matrices(backbone).items():
        np.testing.assert_array_equal(matrix == 0, zeros[name], err_msg=name)
    keys = sorted(task.input)
    inputs = [keras.Input((SEQ,), dtype="int32", name=k) for k in keys]
    functional = keras.Model(inputs, task(dict(zip(keys, inputs))))
    report = kprune.export_tflite(functional, str(tmp_path / "pruned.tflite"),
                                  sample_inputs=[x[k] for k in keys], measure_latency=False)
    assert report.verified
