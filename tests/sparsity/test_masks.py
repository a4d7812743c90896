import numpy as np
import pytest

from kprune.sparsity import mask_math as masks


@pytest.mark.parametrize("shape", [(7,), (33, 17), (3, 3, 5, 7), (1000,)])
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.55, 0.9, 0.999])
def test_magnitude_mask_exact_count(rng, shape, sparsity):
    w = rng.normal(size=shape).astype(np.float32)
    keep = masks.magnitude_mask(w, sparsity)
    n = w.size
    zeros = int(np.floor(n * sparsity + 0.5))
    assert keep.shape == w.shape and keep.dtype == bool
    assert int((~keep).sum()) == zeros
    if zeros and zeros < n:
        # Every pruned magnitude is <= every kept magnitude.
        assert np.abs(w[~keep]).max() <= np.abs(w[keep]).min()


def test_magnitude_mask_ties_break_by_position():
    w = np.array([0.5, 0.1, 0.1, 0.1, 0.1, 0.9], np.float32)
    keep = masks.magnitude_mask(w, 0.5)  # 3 zeros among four equal 0.1s
    assert keep.tolist() == [True, False, False, False, True, True]


def test_magnitude_mask_all_equal_is_deterministic():
    w = np.ones((10, 10), np.float32)
    a = masks.magnitude_mask(w, 0.3)
    b = masks.magnitude_mask(w.copy(), 0.3)
    assert (a == b).all()
    assert (~a).ravel().tolist()[:30] == [True] * 30
    assert int((~a).sum()) == 30


def test_magnitude_mask_uses_absolute_value():
    w = np.array([-5.0, 0.1, -0.2, 4.0], np.float32)
    assert masks.magnitude_mask(w, 0.5).tolist() == [True, False, False, True]


@pytest.mark.parametrize("shape", [(8, 12), (9, 13), (3, 3, 10, 6), (2, 5, 7)])
@pytest.mark.parametrize("block", [(1, 2), (2, 2), (4, 1), (3, 5)])
@pytest.mark.parametrize("pooling", ["AVG", "MAX"])
def test_block_mask_blocks_are_uniform_and_count_exact(rng, shape, block, pooling):
    w = rng.normal(size=shape).astype(np.float32)
    keep = masks.block_mask(w, 0.5, block, pooling)
    r, c = block
    *lead, rows, cols = shape
    k = keep.reshape(-1, rows, cols)
    n_blocks = 0
    pruned_blocks = 0
    for i in range(k.shape[0]):
        for a in range(0, rows, r):
            for b in range(0, cols, c):
                tile = k[i, a : a + r, b : b + c]
                assert tile.all() or not tile.any(), "block not uniform"
                n_blocks += 1
                pruned_blocks += int(not tile.any())
    assert pruned_blocks == int(np.floor(n_blocks * 0.5 + 0.5))


def test_block_mask_scores_by_pooling():
    w = np.array([[0.0, 1.0, 0.4, 0.4]], np.float32)
    # AVG: block0 = 0.5, block1 = 0.4 -> block1 pruned. MAX: 1.0 vs 0.4 -> block1 pruned.
    assert masks.block_mask(w, 0.5, (1, 2), "AVG").tolist() == [[True, True, False, False]]
    w = np.array([[0.0, 0.9, 0.5, 0.5]], np.float32)
    # AVG: 0.45 vs 0.5 -> block0 pruned; MAX: 0.9 vs 0.5 -> block1 pruned.
    assert masks.block_mask(w, 0.5, (1, 2), "AVG").tolist() == [[False, False, True, True]]
    assert masks.block_mask(w, 0.5, (1, 2), "MAX").tolist() == [[True, True, False, False]]


def test_block_mask_edge_blocks_average_only_real_entries():
    # Columns 0-1 form a full block (avg 0.3); column 2 is an edge block (avg 0.4).
    w = np.array([[0.3, 0.3, 0.4]], np.float32)
    assert masks.block_mask(w, 0.5, (1, 2), "AVG").tolist() == [[False, False, True]]


@pytest.mark.parametrize("shape, axis", [((8, 5), 0), ((3, 3, 16, 4), -2), ((3, 3, 4, 12), -1)])
@pytest.mark.parametrize("m_by_n", [(2, 4), (1, 4), (3, 4), (1, 2)])
def test_m_by_n_mask(rng, shape, axis, m_by_n):
    m, n = m_by_n
    w = rng.normal(size=shape).astype(np.float32)
    keep = masks.m_by_n_mask(w, m_by_n, axis)
    groups = np.moveaxis(keep, axis, -1).reshape(-1, n)
    assert (groups.sum(axis=1) == n - m).all()  # m zeros in every n (tfmot)
    wg = np.abs(np.moveaxis(w, axis, -1)).reshape(-1, n)
    for g, kg in zip(wg, groups):
        assert g[~kg].max() <= g[kg].min()


def test_m_by_n_ties_prune_lower_index_first():
    w = np.ones((4, 1), np.float32)
    assert masks.m_by_n_mask(w, (2, 4), 0).ravel().tolist() == [False, False, True, True]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: masks.block_mask(np.ones((4, 4)), 0.5, (0, 2)), "Received: block_size=(0, 2)"),
        (lambda: masks.block_mask(np.ones((4, 4)), 0.5, (2,)), "Argument `block_size` must be a tuple"),
        (lambda: masks.block_mask(np.ones((4, 4)), 0.5, (1, 2), "MEAN"), "Received: block_pooling_type='MEAN'"),
        (lambda: masks.block_mask(np.ones(4), 0.5, (1, 2)), "rank >= 2"),
        (lambda: masks.m_by_n_mask(np.ones((4, 4)), (4, 4), 0), "Received: sparsity_m_by_n=(4, 4)"),
        (lambda: masks.m_by_n_mask(np.ones((4, 4)), (5, 4), 0), "1 <= M < N"),
        (lambda: masks.m_by_n_mask(np.ones((6, 4)), (2, 4), 0), "multiple of 4"),
    ],
)
def test_mask_errors(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)


def _reference_mask(w, sparsity):
    """Brute force: sort by (|w|, position) and prune the first round(n*s)."""
    a = np.abs(w).ravel()
    order = np.lexsort((np.arange(a.size), a))
    keep = np.ones(a.size, bool)
    keep[order[: masks.target_zeros(a.size, sparsity)]] = False
    return keep.reshape(w.shape)


def test_magnitude_mask_matches_brute_force_with_zeros_and_ties(rng):
    for trial in range(300):
        n = int(rng.integers(1, 60))
        w = rng.normal(size=n).astype(np.float32)
        w[rng.random(n) < rng.random()] = 0.0  # already-pruned entries
        if trial % 3 == 0:
            w = np.round(w, 1)  # many ties
        s = float(rng.random() * 0.999)
        np.testing.assert_array_equal(masks.magnitude_mask(w, s), _reference_mask(w, s))


@pytest.mark.parametrize("new_sparsity", [0.5, 0.8, 0.9])
def test_re_pruning_keeps_earlier_zeros_pruned(rng, new_sparsity):
    w = rng.normal(size=(64, 32)).astype(np.float32)
    first = masks.magnitude_mask(w, 0.5)
    second = masks.magnitude_mask(w * first, new_sparsity)
    assert not (second & ~first).any()  # a pruned entry is never revived
    assert int((~second).sum()) == masks.target_zeros(w.size, new_sparsity)


def _reference_block_mask(w, sparsity, block, pooling):
    """The earlier implementation: pad, tile, score, stable sort of the scores."""
    r, c = block
    a = np.abs(np.asarray(w, dtype=np.float32))
    *lead, rows, cols = a.shape
    nr, nc = -(-rows // r), -(-cols // c)
    padded = np.zeros((int(np.prod(lead, dtype=np.int64)), nr * r, nc * c), np.float32)
    padded[:, :rows, :cols] = a.reshape(-1, rows, cols)
    tiles = padded.reshape(-1, nr, r, nc, c)
    if pooling == "MAX":
        scores = tiles.max(axis=(2, 4))
    else:
        counts = np.zeros((nr * r, nc * c), np.float32)
        counts[:rows, :cols] = 1.0
        scores = tiles.sum(axis=(2, 4)) / counts.reshape(nr, r, nc, c).sum(axis=(1, 3))
    keep = _reference_mask(scores, sparsity)
    keep = np.repeat(np.repeat(keep, r, axis=1), c, axis=2)[:, :rows, :cols]
    return keep.reshape(a.shape)


def _reference_m_by_n(w, m_by_n, axis):
    m, n = m_by_n
    moved = np.moveaxis(np.abs(w), axis, -1)
    order = np.argsort(moved.reshape(-1, n), axis=1, kind="stable")
    keep = np.ones((moved.size // n, n), bool)
    np.put_along_axis(keep, order[:, :m], False, axis=1)
    return np.moveaxis(keep.reshape(moved.shape), -1, axis)


@pytest.mark.parametrize("shape", [(64, 48), (300, 700), (3, 3, 130, 257), (2, 1, 1030, 9)])
@pytest.mark.parametrize("block", [(1, 2), (4, 4), (3, 5), (1, 128)])
@pytest.mark.parametrize("pooling", ["AVG", "MAX"])
def test_block_mask_matches_reference(rng, shape, block, pooling):
    w = rng.normal(size=shape).astype(np.float32)
    w[rng.random(shape) < 0.3] = 0.0
    for sparsity in (0.3, 0.9):
        np.testing.assert_array_equal(
            masks.block_mask(w, sparsity, block, pooling), _reference_block_mask(w, sparsity, block, pooling)
        )
    ties = np.round(w, 0)  # many equal block scores
    np.testing.assert_array_equal(
        masks.block_mask(ties, 0.5, block, pooling), _reference_block_mask(ties, 0.5, block, pooling)
    )


@pytest.mark.parametrize("shape, axis", [((512, 300), 0), ((3, 3, 64, 40), 2), ((3, 3, 40, 64), -1), ((4096,), 0)])
@pytest.mark.parametrize("m_by_n", [(2, 4), (1, 8), (3, 16)])
def test_m_by_n_mask_matches_reference(rng, shape, axis, m_by_n):
    w = rng.normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(masks.m_by_n_mask(w, m_by_n, axis), _reference_m_by_n(w, m_by_n, axis))
    ties = np.round(w, 0)
    ties[rng.random(shape) < 0.2] = -0.0
    np.testing.assert_array_equal(masks.m_by_n_mask(ties, m_by_n, axis), _reference_m_by_n(ties, m_by_n, axis))


def test_magnitude_mask_nan_is_pruned_last():
    w = np.array([np.nan, 1.0, np.inf, 0.0, np.nan], np.float32)
    assert masks.magnitude_mask(w, 0.4).tolist() == [True, False, True, False, True]
    assert masks.magnitude_mask(w, 0.6).tolist() == [True, False, False, False, True]
    assert masks.magnitude_mask(w, 0.8).tolist() == [False, False, False, False, True]


# ------------------------------------------- selection on the weights' device


def _device_case(rng, n, kind, dtype):
    w = rng.standard_normal(n).astype(np.float32)
    if kind == "ties":
        w = np.round(w, 1)
    elif kind == "nan_inf":
        w[rng.random(n) < 0.1] = np.nan
        w[rng.random(n) < 0.05] = -np.nan
        w[rng.random(n) < 0.1] = -np.inf
    elif kind == "signed_zeros":
        w[rng.random(n) < 0.5] = 0.0
        w[rng.random(n) < 0.3] = -0.0
    return w.astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("kind", ["normal", "ties", "nan_inf", "signed_zeros"])
def test_device_selection_matches_the_numpy_selection(rng, dtype, kind):
    # keras.ops on the current backend against kprune.sparsity.smallest (NumPy),
    # whose contract the NumPy reference test in test_selection.py checks.
    import keras
    import ml_dtypes

    from kprune.sparsity import smallest as selection
    from kprune.sparsity import smallest_device

    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype
    for n in (1, 7, 1000, 70001):
        w = _device_case(rng, n, kind, np_dtype)
        for k in sorted({0, 1, n // 2, int(0.9 * n), n - 1, n}):
            keep, nonzero = smallest_device.select_smallest_on_device(w, k)
            expected = selection.select_smallest(w, k)
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(keep), expected.keep)
            assert bool(keras.ops.convert_to_numpy(nonzero)) is expected.pruned_nonzero


def test_weights_on_an_accelerator_get_the_same_masks(rng, monkeypatch):
    # Masks of weights on a GPU/TPU are computed there; this machine has none,
    # so the device path is chosen by hand and compared with the host path.
    import keras

    import kprune
    from kprune.utils import backends

    layers = [kprune.PruneLowMagnitude(keras.layers.Dense(64)) for _ in range(2)]
    w = rng.standard_normal((48, 64)).astype(np.float32)
    w[:, 3] = w[0, 3]  # ties
    for layer in layers:
        layer.build((None, 48))
        layer.layer.kernel.assign(w)
    layers[0].update_masks(0.7)
    monkeypatch.setattr(backends, "on_accelerator", lambda variable: True)
    layers[1].update_masks(0.7)
    for a, b in zip(layers[0].weights, layers[1].weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert int((keras.ops.convert_to_numpy(layers[1].layer.kernel) == 0).sum()) == round(0.7 * w.size)


@pytest.mark.parametrize("mask_dtype", ["bool", "float32"])
def test_mask_product_equals_apply_mask_on_this_backend(rng, mask_dtype):
    """The training step's form of the mask (a multiply on TensorFlow, in place
    on PyTorch with a boolean mask read as uint8) gives `where(mask, w, 0)`."""
    import keras

    from kprune.sparsity import masking

    w = rng.standard_normal((37, 29)).astype("float32")
    keep = rng.random(w.shape) > 0.7
    variable = keras.Variable(w)
    mask = keras.Variable(keep.astype(mask_dtype), trainable=False)
    expected = np.where(keep, w, 0)
    got = keras.ops.convert_to_numpy(masking.mask_product(variable, mask))
    np.testing.assert_array_equal(got, expected)  # -0.0 == 0.0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(masking.apply_mask(variable, mask)), expected)
    # The mask itself is untouched (the uint8 view is a view, not a cast in place).
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(mask).astype(bool), keep)


def test_mask_writer_refuses_a_mask_of_the_wrong_shape():
    """Masks are written as one flat array on TensorFlow: a mask of the wrong
    shape (even of the right size) is an error naming the variable, not a
    shifted write."""
    import keras

    from kprune.sparsity import masking

    a = keras.Variable(np.ones((2, 3), "float32"), name="a")
    b = keras.Variable(np.ones((3, 2), "float32"), name="b")
    masks = [keras.Variable(np.ones(v.shape, bool), trainable=False) for v in (a, b)]
    writer = masking.MaskWriter([(a, masks[0]), (b, masks[1])])
    with pytest.raises(ValueError,
                       match=r"variable 'a' must have its shape \(2, 3\)\. Received: a mask of shape \(3, 2\)"):
        writer.write([np.ones((3, 2), bool), np.ones((2, 3), bool)])
    keep = [np.array([[1, 0, 1], [0, 1, 0]], bool), np.array([[0, 1], [1, 0], [1, 1]], bool)]
    writer.write(keep)
    for v, m, k in zip((a, b), masks, keep):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(m), k)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), k.astype("float32"))
