"""Per-layer-type tests: every prunable layer type, block sparsity and M:N sparsity."""

import json

import keras
import numpy as np
import pytest
from keras import layers as L

import kprune
from kprune.sparsity.mask_math import target_zeros
from kprune.sparsity.prune import collect_wrappers

BATCH = 6  # fit with batch_size=2: 3 training steps


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _predict(model, x):
    return _np(model(x, training=False))


def _schedule(sparsity=0.5):
    return kprune.ConstantSparsity(sparsity, begin_step=0, frequency=1)


def _fit(model, x, y, steps=3):
    model.fit(
        x,
        y,
        batch_size=len(x[0] if isinstance(x, list) else x) // steps,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[kprune.UpdatePruningStep()],
    )


def _assert_no_kprune(model):
    """No kprune layer, constraint or config entry is left in `model`."""
    for layer in model._flatten_layers(include_self=True, recursive=True):
        assert not type(layer).__module__.startswith("kprune"), layer
        assert not isinstance(layer, kprune.PruneLowMagnitude), layer
    for v in model.weights:
        c = v.constraint
        assert c is None or not type(c).__module__.startswith("kprune"), (v.path, c)
    config = json.dumps(model.get_config(), default=str)
    assert "kprune" not in config
    assert "PruneLowMagnitude" not in config


def _assert_exact_sparsity(wrapper, sparsity=0.5):
    for variable, mask in wrapper.pruned_weights:
        m = _np(mask)
        v = _np(variable)
        assert m.shape == v.shape
        assert set(np.unique(m)) <= {0.0, 1.0}
        expected = target_zeros(m.size, sparsity)
        assert int((m == 0).sum()) == expected, variable.path
        assert int((v == 0).sum()) == expected, variable.path
        assert np.all(v[m == 0] == 0), variable.path


def _rand(rng, shape):
    return rng.standard_normal(shape).astype("float32")


# --------------------------------------------------------------------------
# One spec per prunable layer type: how to build a tiny model around it, its
# input data, and which of its variables must be pruned.


def _float_input(*shape):
    def make(rng):
        return _rand(rng, (BATCH, *shape))

    return keras.Input(shape), make


def _int_input(length, vocab):
    def make(rng):
        return rng.integers(0, vocab, size=(BATCH, length)).astype("int32")

    return keras.Input((length,), dtype="int32"), make


def _rnn_vars(layer):
    return [layer.cell.kernel, layer.cell.recurrent_kernel]


LAYER_SPECS = {
    "Dense": (
        lambda: _float_input(6),
        lambda: L.Dense(4, name="target"),
        lambda t: [t.kernel],
        ["target/kernel"],
    ),
    "EinsumDense": (
        lambda: _float_input(3, 6),
        lambda: L.EinsumDense("abc,cd->abd", output_shape=(3, 4), bias_axes="d", name="target"),
        lambda t: [t.kernel],
        ["target/kernel"],
    ),
    "Conv1D": (
        lambda: _float_input(6, 3),
        lambda: L.Conv1D(4, 3, name="target"),
        lambda t: [t.kernel],
        ["target/kernel"],
    ),
    "Conv2D": (
        lambda: _float_input(5, 5, 3),
        lambda: L.Conv2D(4, 3, name="target"),
        lambda t: [t.kernel],
        ["target/kernel"],
    ),
    "Conv3D": (
        lambda: _float_input(3, 3, 3, 2),
        lambda: L.Conv3D(3, 2, name="target"),
        lambda t: [t.kernel],
        ["target/kernel"],
    ),
    "Conv1DTranspose": (
        lambda: _float_input(5, 3),
        lambda: L.Conv1DTranspose(4, 3, name="target"),
        lambda t: [t.kernel],
        ["target/kernel"],
    ),
    "Conv2DTranspose": (
        lambda: _float_input(4, 4, 3),
        lambda: L.Conv2DTranspose(4, 3, name="target"),
        lambda t: [t.kernel],
        ["target/kernel"],
    ),
    "Conv3DTranspose": (
        lambda: _float_input(2, 2, 2, 2),
        lambda: L.Conv3DTranspose(3, 2, name="target"),
        lambda t: [t.kernel],
        ["target/kernel"],
    ),
    "DepthwiseConv1D": (
        lambda: _float_input(6, 3),
        lambda: L.DepthwiseConv1D(3, depth_multiplier=2, name="target"),
        lambda t: [t.kernel],
        ["target/kernel"],
    ),
    "DepthwiseConv2D": (
        lambda: _float_input(5, 5, 3),
        lambda: L.DepthwiseConv2D(3, depth_multiplier=2, name="target"),
        lambda t: [t.kernel],
        ["target/kernel"],
    ),
    "SeparableConv1D": (
        lambda: _float_input(6, 3),
        lambda: L.SeparableConv1D(4, 3, depth_multiplier=2, name="target"),
        lambda t: [t.depthwise_kernel, t.pointwise_kernel],
        ["target/depthwise_kernel", "target/pointwise_kernel"],
    ),
    "SeparableConv2D": (
        lambda: _float_input(5, 5, 3),
        lambda: L.SeparableConv2D(4, 3, depth_multiplier=2, name="target"),
        lambda t: [t.depthwise_kernel, t.pointwise_kernel],
        ["target/depthwise_kernel", "target/pointwise_kernel"],
    ),
    "Embedding": (
        lambda: _int_input(4, 10),
        lambda: L.Embedding(10, 4, name="target"),
        lambda t: [t.embeddings],
        ["target/embeddings"],
    ),
    "SimpleRNN": (
        lambda: _float_input(4, 3),
        lambda: L.SimpleRNN(4, name="target"),
        _rnn_vars,
        ["target/simple_rnn_cell/kernel", "target/simple_rnn_cell/recurrent_kernel"],
    ),
    "GRU": (
        lambda: _float_input(4, 3),
        lambda: L.GRU(4, name="target"),
        _rnn_vars,
        ["target/gru_cell/kernel", "target/gru_cell/recurrent_kernel"],
    ),
    "LSTM": (
        lambda: _float_input(4, 3),
        lambda: L.LSTM(4, name="target"),
        _rnn_vars,
        ["target/lstm_cell/kernel", "target/lstm_cell/recurrent_kernel"],
    ),
    "Bidirectional": (
        lambda: _float_input(4, 3),
        lambda: L.Bidirectional(L.LSTM(4, name="rnn"), name="target"),
        lambda t: _rnn_vars(t.forward_layer) + _rnn_vars(t.backward_layer),
        [
            "forward_rnn/lstm_cell/kernel",
            "forward_rnn/lstm_cell/recurrent_kernel",
            "backward_rnn/lstm_cell/kernel",
            "backward_rnn/lstm_cell/recurrent_kernel",
        ],
    ),
    "TimeDistributed": (
        lambda: _float_input(4, 3),
        lambda: L.TimeDistributed(L.Dense(4, name="inner"), name="target"),
        lambda t: [t.layer.kernel],
        ["inner/kernel"],
    ),
    "MultiHeadAttention": (
        lambda: _float_input(4, 6),
        lambda: L.MultiHeadAttention(num_heads=2, key_dim=3, name="target"),
        lambda t: [
            t._query_dense.kernel,
            t._key_dense.kernel,
            t._value_dense.kernel,
            t._output_dense.kernel,
        ],
        ["query/kernel", "key/kernel", "value/kernel", "attention_output/kernel"],
    ),
}

LAYER_IDS = list(LAYER_SPECS)


def _apply(layer, inp):
    if isinstance(layer, L.MultiHeadAttention) or (
        isinstance(layer, kprune.PruneLowMagnitude)
        and isinstance(layer.layer, L.MultiHeadAttention)
    ):
        return layer(inp, inp)  # self-attention
    return layer(inp)


def _build(spec_id, rng, layer=None):
    """A functional model `Input -> layer`, its inputs and regression targets."""
    make_input, make_layer, _, _ = LAYER_SPECS[spec_id]
    inp, make_x = make_input()
    layer = make_layer() if layer is None else layer
    model = keras.Model(inp, _apply(layer, inp))
    x = make_x(rng)
    y = _rand(rng, (BATCH, *model.output.shape[1:]))
    return model, x, y


def _check_pruned_set(wrapper, spec_id):
    _, _, expected_vars, expected_paths = LAYER_SPECS[spec_id]
    pruned = [v for v, _ in wrapper.pruned_weights]
    expected = expected_vars(wrapper.layer)
    assert [id(v) for v in pruned] == [id(v) for v in expected]
    assert len(pruned) == len(expected_paths)
    for v, suffix in zip(pruned, expected_paths):
        assert v.path.endswith(suffix), (v.path, suffix)
    assert len(wrapper.masks) == len(expected_paths)
    # Biases and other weights stay dense: they carry no mask constraint.
    pruned_ids = {id(v) for v in pruned}
    for v in wrapper.layer.weights:
        if id(v) not in pruned_ids:
            c = v.constraint
            assert c is None or not type(c).__module__.startswith("kprune"), v.path


def _train_strip_save(pruned, wrapper, x, y, tmp_path, type_name):
    """Fit 3 steps, then check exact sparsity, strip_pruning and a .keras round trip."""
    pruned.compile(optimizer="adam", loss="mse")
    _fit(pruned, x, y, steps=3)
    assert int(_np(wrapper.pruning_step)) == 3
    _assert_exact_sparsity(wrapper, 0.5)

    expected = _predict(pruned, x)
    stripped = kprune.strip_pruning(pruned)
    _assert_no_kprune(stripped)
    assert type(stripped.get_layer("target")).__name__ == type_name
    assert np.max(np.abs(_predict(stripped, x) - expected)) <= 1e-5

    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects
    assert np.max(np.abs(_predict(loaded, x) - expected)) <= 1e-5
    (loaded_wrapper,) = collect_wrappers(loaded)
    assert type(loaded_wrapper.layer).__name__ == type_name
    assert len(loaded_wrapper.pruned_weights) == len(wrapper.pruned_weights)
    for (_, m0), (_, m1) in zip(wrapper.pruned_weights, loaded_wrapper.pruned_weights):
        np.testing.assert_array_equal(_np(m0), _np(m1))
    assert int(_np(loaded_wrapper.pruning_step)) == 3

    stripped_path = str(tmp_path / "stripped.keras")
    stripped.save(stripped_path)
    reloaded = keras.models.load_model(stripped_path)
    assert np.max(np.abs(_predict(reloaded, x) - expected)) <= 1e-5


@pytest.mark.parametrize("spec_id", LAYER_IDS)
def test_layer_prune_train_strip_save(spec_id, rng, tmp_path):
    """Whole-model wrapping of `Input -> layer`, trained with UpdatePruningStep."""
    model, x, y = _build(spec_id, rng)
    pruned = kprune.prune_low_magnitude(model, pruning_schedule=_schedule(0.5))

    wrappers = collect_wrappers(pruned)
    assert len(wrappers) == 1
    (wrapper,) = wrappers
    assert type(wrapper.layer).__name__ == spec_id
    _check_pruned_set(wrapper, spec_id)
    # Wrapping alone does not change the outputs.
    np.testing.assert_allclose(_predict(pruned, x), _predict(model, x), atol=1e-5)
    _train_strip_save(pruned, wrapper, x, y, tmp_path, spec_id)


def test_multi_head_attention_two_inputs(rng, tmp_path):
    """Cross-attention (query and value from two model inputs), layer wrapped after
    being built; trained, stripped and saved."""
    mha = L.MultiHeadAttention(num_heads=2, key_dim=3, name="target")
    q_probe, v_probe = keras.Input((4, 6)), keras.Input((5, 6))
    mha(q_probe, v_probe)
    wrapper = kprune.prune_low_magnitude(mha, pruning_schedule=_schedule(0.5))
    q, v = keras.Input((4, 6)), keras.Input((5, 6))
    model = keras.Model([q, v], wrapper(q, v))
    _check_pruned_set(wrapper, "MultiHeadAttention")
    x = [_rand(rng, (BATCH, 4, 6)), _rand(rng, (BATCH, 5, 6))]
    y = _rand(rng, (BATCH, 4, 6))
    _train_strip_save(model, wrapper, x, y, tmp_path, "MultiHeadAttention")


def test_multi_head_attention_two_inputs_whole_model(rng):
    """Whole-model wrapping of a cross-attention model."""
    q, v = keras.Input((4, 6)), keras.Input((5, 6))
    model = keras.Model([q, v], L.MultiHeadAttention(2, 3, name="target")(q, v))
    pruned = kprune.prune_low_magnitude(model, pruning_schedule=_schedule(0.5))
    (wrapper,) = collect_wrappers(pruned)
    _check_pruned_set(wrapper, "MultiHeadAttention")
    x = [_rand(rng, (BATCH, 4, 6)), _rand(rng, (BATCH, 5, 6))]
    np.testing.assert_allclose(_predict(pruned, x), _predict(model, x), atol=1e-5)


@pytest.mark.parametrize("spec_id", LAYER_IDS)
def test_layer_wrapped_directly(spec_id, rng):
    """`prune_low_magnitude(layer)` inside a model built by the user; one-shot masks."""
    make_input, make_layer, _, _ = LAYER_SPECS[spec_id]
    layer = make_layer()
    if spec_id == "MultiHeadAttention":
        # MultiHeadAttention cannot be built from a single input shape: build it first.
        probe, _ = make_input()
        layer(probe, probe)
    wrapper = kprune.prune_low_magnitude(layer, pruning_schedule=_schedule(0.5))
    assert isinstance(wrapper, kprune.PruneLowMagnitude)
    assert wrapper.layer is layer
    model, x, _ = _build(spec_id, rng, layer=wrapper)
    _check_pruned_set(wrapper, spec_id)

    dense_out = _predict(model, x)
    kprune.update_masks(model, sparsity=0.5)
    _assert_exact_sparsity(wrapper, 0.5)
    sparse_out = _predict(model, x)
    assert not np.allclose(dense_out, sparse_out)

    stripped = kprune.strip_pruning(model)
    _assert_no_kprune(stripped)
    assert np.max(np.abs(_predict(stripped, x) - sparse_out)) <= 1e-5


# --------------------------------------------------------------------------
# Block sparsity


def _block_scores(w, block, pooling):
    """Independent reference: per-block scores and block grid of the last two axes."""
    r, c = block
    *lead, rows, cols = w.shape
    a = np.abs(w).reshape(-1, rows, cols)
    nr, nc = -(-rows // r), -(-cols // c)
    scores = np.zeros((a.shape[0], nr, nc))
    for k in range(a.shape[0]):
        for i in range(nr):
            for j in range(nc):
                tile = a[k, i * r : (i + 1) * r, j * c : (j + 1) * c]
                scores[k, i, j] = tile.max() if pooling == "MAX" else tile.mean()
    return scores


def _check_blocks(w_before, mask, w_after, block, pooling, sparsity=0.5):
    r, c = block
    *lead, rows, cols = mask.shape
    m = mask.reshape(-1, rows, cols)
    nr, nc = -(-rows // r), -(-cols // c)
    kept = np.zeros((m.shape[0], nr, nc), dtype=bool)
    for k in range(m.shape[0]):
        for i in range(nr):
            for j in range(nc):
                tile = m[k, i * r : (i + 1) * r, j * c : (j + 1) * c]
                assert np.all(tile == tile.flat[0]), f"block {(k, i, j)} is not uniform"
                kept[k, i, j] = tile.flat[0] == 1
    n_blocks = kept.size
    assert int((~kept).sum()) == target_zeros(n_blocks, sparsity)
    # The pruned blocks are the lowest-scoring ones.
    scores = _block_scores(w_before, block, pooling)
    assert scores[~kept].max() <= scores[kept].min() + 1e-7
    assert np.all(w_after[mask == 0] == 0)
    assert np.all(w_after[mask == 1] != 0)


def _single_layer_model(inp_shape, layer):
    inp = keras.Input(inp_shape)
    return keras.Model(inp, layer(inp))


BLOCK_CASES = [(2, 2), (1, 2)]
POOLINGS = ["AVG", "MAX"]


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("block", BLOCK_CASES)
@pytest.mark.parametrize(
    "in_dim,units",
    [(8, 6), (5, 7)],  # blocks tile exactly / edge blocks
    ids=["exact", "edge"],
)
def test_block_sparsity_dense(in_dim, units, block, pooling):
    model = _single_layer_model((in_dim,), L.Dense(units, name="target"))
    pruned = kprune.prune_low_magnitude(
        model, pruning_schedule=_schedule(0.5), block_size=block, block_pooling_type=pooling
    )
    (wrapper,) = collect_wrappers(pruned)
    assert wrapper.block_size == block and wrapper.block_pooling_type == pooling
    kernel = wrapper.layer.kernel
    before = _np(kernel).copy()
    kprune.update_masks(pruned, sparsity=0.5)
    _check_blocks(before, _np(wrapper.masks[0]), _np(kernel), block, pooling)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("block", BLOCK_CASES)
def test_block_sparsity_conv2d(block, pooling):
    model = _single_layer_model((5, 5, 4), L.Conv2D(6, 3, name="target"))
    pruned = kprune.prune_low_magnitude(
        model, pruning_schedule=_schedule(0.5), block_size=block, block_pooling_type=pooling
    )
    (wrapper,) = collect_wrappers(pruned)
    kernel = wrapper.layer.kernel
    assert tuple(kernel.shape) == (3, 3, 4, 6)
    before = _np(kernel).copy()
    kprune.update_masks(pruned, sparsity=0.5)
    mask = _np(wrapper.masks[0])
    _check_blocks(before, mask, _np(kernel), block, pooling)
    r, c = block
    assert int((mask == 0).sum()) == target_zeros(9 * (4 // r) * (6 // c), 0.5) * r * c


@pytest.mark.parametrize("pooling", POOLINGS)
def test_block_sparsity_during_training(pooling, rng, tmp_path):
    """Block masks computed by UpdatePruningStep during fit, kept after save/load."""
    model = _single_layer_model((5, 5, 4), L.Conv2D(6, 3, name="target"))
    pruned = kprune.prune_low_magnitude(
        model, pruning_schedule=_schedule(0.5), block_size=(2, 2), block_pooling_type=pooling
    )
    (wrapper,) = collect_wrappers(pruned)
    x = _rand(rng, (BATCH, 5, 5, 4))
    y = _rand(rng, (BATCH, 3, 3, 6))
    pruned.compile(optimizer="adam", loss="mse")
    _fit(pruned, x, y)
    kernel = _np(wrapper.layer.kernel)
    mask = _np(wrapper.masks[0])
    # Masks were computed from the kernel before the last step, so check
    # structure and count only.
    m = mask.reshape(9, 2, 2, 3, 2).transpose(0, 1, 3, 2, 4).reshape(9, 2, 3, 4)
    assert np.all((m == 0).all(-1) | (m == 1).all(-1))
    assert int((m[..., 0] == 0).sum()) == target_zeros(9 * 2 * 3, 0.5)
    assert np.all(kernel[mask == 0] == 0)

    path = str(tmp_path / "block.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    (lw,) = collect_wrappers(loaded)
    assert lw.block_size == (2, 2)
    assert lw.block_pooling_type == pooling
    np.testing.assert_array_equal(_np(lw.masks[0]), mask)


# --------------------------------------------------------------------------
# M:N sparsity


def _check_m_by_n(before, mask, after, axis, m=2, n=4):
    moved = np.moveaxis(mask, axis, -1)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // n, n)
    assert np.all(groups.sum(-1) == m), "every group of n must keep exactly m"
    if before is not None:
        b = np.abs(np.moveaxis(before, axis, -1)).reshape(groups.shape)
        kept_min = np.where(groups == 1, b, np.inf).min(-1)
        pruned_max = np.where(groups == 0, b, -np.inf).max(-1)
        assert np.all(pruned_max <= kept_min)
    assert np.all(after[mask == 0] == 0)


M_BY_N_CASES = {
    # id: (input shape, layer factory, input-channel axis of the kernel)
    "Dense": ((8,), lambda: L.Dense(3, name="target"), 0),
    "Conv2D": ((4, 4, 8), lambda: L.Conv2D(3, 3, name="target"), 2),
    # Transposed kernels are (kh, kw, out, in): groups run along the last axis.
    # 3 output channels: grouping along axis -2 would not even be possible.
    "Conv2DTranspose": ((3, 3, 8), lambda: L.Conv2DTranspose(3, 3, name="target"), 3),
}


@pytest.mark.parametrize("case", list(M_BY_N_CASES))
def test_m_by_n(case, rng):
    shape, make_layer, axis = M_BY_N_CASES[case]
    model = _single_layer_model(shape, make_layer())
    # The schedule's sparsity (0.9) is overridden by M:N (2 of 4 kept).
    pruned = kprune.prune_low_magnitude(
        model, pruning_schedule=_schedule(0.9), sparsity_m_by_n=(2, 4)
    )
    (wrapper,) = collect_wrappers(pruned)
    kernel = wrapper.layer.kernel
    before = _np(kernel).copy()
    kprune.update_masks(pruned)
    mask = _np(wrapper.masks[0])
    _check_m_by_n(before, mask, _np(kernel), axis)
    assert int((mask == 0).sum()) == mask.size // 2

    # And during training.
    x = _rand(rng, (BATCH, *shape))
    y = _rand(rng, (BATCH, *pruned.output.shape[1:]))
    pruned.compile(optimizer="adam", loss="mse")
    _fit(pruned, x, y)
    _check_m_by_n(None, _np(wrapper.masks[0]), _np(kernel), axis)


@pytest.mark.parametrize(
    "shape,make_layer",
    [
        ((6,), lambda: L.Dense(4, name="odd_layer")),
        ((4, 4, 6), lambda: L.Conv2D(4, 3, name="odd_layer")),
        ((3, 3, 6), lambda: L.Conv2DTranspose(8, 3, name="odd_layer")),
    ],
    ids=["Dense", "Conv2D", "Conv2DTranspose"],
)
def test_m_by_n_input_channels_not_multiple(shape, make_layer):
    # Whole-model wrapping.
    model = _single_layer_model(shape, make_layer())
    with pytest.raises(ValueError, match="odd_layer"):
        kprune.prune_low_magnitude(model, sparsity_m_by_n=(2, 4))
    # A single layer, built when the model is.
    keras.backend.clear_session()
    wrapped = kprune.prune_low_magnitude(make_layer(), sparsity_m_by_n=(2, 4))
    with pytest.raises(ValueError, match="odd_layer"):
        _single_layer_model(shape, wrapped)


def test_m_by_n_save_load_and_further_training(rng, tmp_path):
    inp = keras.Input((8,))
    h = L.Dense(8, activation="relu", name="d1")(inp)
    out = L.Dense(3, name="d2")(h)
    model = keras.Model(inp, out)
    pruned = kprune.prune_low_magnitude(
        model, pruning_schedule=_schedule(0.5), sparsity_m_by_n=(2, 4)
    )
    x = _rand(rng, (BATCH, 8))
    y = _rand(rng, (BATCH, 3))
    pruned.compile(optimizer="adam", loss="mse")
    _fit(pruned, x, y)
    for w in collect_wrappers(pruned):
        _check_m_by_n(None, _np(w.masks[0]), _np(w.layer.kernel), 0)
    expected = _predict(pruned, x)

    # Config round trip.
    for w in collect_wrappers(pruned):
        config = w.get_config()
        clone = kprune.PruneLowMagnitude.from_config(json.loads(json.dumps(config)))
        assert clone.sparsity_m_by_n == (2, 4)
        assert clone.block_size == (1, 1)

    path = str(tmp_path / "mbyn.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    assert np.max(np.abs(_predict(loaded, x) - expected)) <= 1e-5
    wrappers = collect_wrappers(loaded)
    assert len(wrappers) == 2
    for w in wrappers:
        assert w.sparsity_m_by_n == (2, 4)
        _check_m_by_n(None, _np(w.masks[0]), _np(w.layer.kernel), 0)

    # Further training of the loaded model keeps 2:4 (the mask computed at
    # step 1 is kept, as in tfmot, and pruned weights stay 0).
    before = [_np(w.layer.kernel).copy() for w in wrappers]
    loaded.compile(optimizer="adam", loss="mse")
    y2 = _rand(rng, (BATCH, 3))
    _fit(loaded, x, y2)
    for w, b in zip(wrappers, before):
        assert int(_np(w.pruning_step)) == 6
        _check_m_by_n(None, _np(w.masks[0]), _np(w.layer.kernel), 0)
        assert not np.array_equal(_np(w.layer.kernel), b)  # it did train
