"""Wanda, magnitude, SparseGPT and OWL on one matrix, against NumPy
transcriptions of the reference code (`_reference.py`) on random matrices.

kprune's matrices are Keras' `(d_in, d_out)`; the references' are `(out,
in)`. Where kprune prunes an exact `round(s * n)` and a reference's `<=`
prunes `int(s * n) + 1`, the reference is called with the sparsity that
gives the same count (said at each place).
"""


import numpy as np
import pytest
from _backend import numpy
from _reference import SparseGPT, WrappedGPT, check_outlier_mean, magnitude_mask, owl_sparsities, wanda_mask

from kprune.llm import owl
from kprune.llm.selection import parse_sparsity, pruned
from kprune.llm.sparsegpt import inverse_hessian_factor, sparsegpt
from kprune.llm.statistics import InputStatistics, relative_error
from kprune.llm.wanda import magnitude_scores, prune_matrix, wanda_scores
from kprune.sparsity.mask_math import target_zeros

D_IN, D_OUT, SEQ = 64, 24, 16


@pytest.fixture
def layer(rng):
    """A weight (out, in) and calibration batches (batch, seq, in) with
    correlated features and a few outlier features, as LLM inputs have."""
    mixing = rng.normal(size=(D_IN, D_IN)) / np.sqrt(D_IN) + np.eye(D_IN)
    scale = np.ones(D_IN)
    scale[[3, 17, 40]] = 8.0
    batches = [(rng.normal(size=(4, SEQ, D_IN)) @ mixing * scale).astype("float32") for _ in range(3)]
    weight = rng.normal(size=(D_OUT, D_IN)).astype("float32")
    return weight, batches


def statistics(batches, hessian=False):
    stats = InputStatistics(D_IN, hessian=hessian, dtype="float64")
    for b in batches:
        stats.update(b.reshape(-1, D_IN))
    return stats


def test_mean_squares_are_wandas_scaler_row_up_to_a_constant(layer):
    _, batches = layer
    reference = WrappedGPT(D_IN)
    for b in batches:
        reference.add_batch(b)
    # The reference divides by sequences, kprune by tokens: a factor SEQ.
    np.testing.assert_allclose(statistics(batches).mean_squares * SEQ, reference.scaler_row, rtol=1e-5)


def test_hessian_is_sparsegpts(layer):
    weight, batches = layer
    reference = SparseGPT(weight)
    for b in batches:
        reference.add_batch(b)
    # Same normalisation up to the constant tokens/sequences.
    np.testing.assert_allclose(statistics(batches, hessian=True).hessian * SEQ, reference.H, rtol=1e-9)


@pytest.mark.parametrize("sparsity", [0.5, 0.3, 0.6, "2:4", "4:8", "1:4"])
def test_wanda_masks_are_the_references(layer, sparsity):
    weight, batches = layer
    reference = WrappedGPT(D_IN)
    for b in batches:
        reference.add_batch(b)
    pattern = parse_sparsity(sparsity)
    if isinstance(pattern, tuple):
        expected = wanda_mask(weight, reference.scaler_row, 0, *pattern)
    else:
        assert int(D_IN * pattern) == target_zeros(D_IN, pattern)  # the same count per output
        expected = wanda_mask(weight, reference.scaler_row, pattern)
    mask = numpy(pruned(wanda_scores(weight.T, statistics(batches).norms), pattern, "output"))
    np.testing.assert_array_equal(mask, expected.T)


@pytest.mark.parametrize("sparsity", [0.5, 0.7, "2:4"])
def test_magnitude_masks_are_the_references(layer, sparsity):
    weight, _ = layer
    pattern = parse_sparsity(sparsity)
    if isinstance(pattern, tuple):
        expected = magnitude_mask(weight, 0, *pattern)
        mask = numpy(pruned(magnitude_scores(weight.T), pattern, "output"))
    else:
        k = target_zeros(weight.size, pattern)
        expected = magnitude_mask(weight, (k - 0.5) / weight.size)  # `<=` prunes int(s n) + 1
        mask = numpy(pruned(magnitude_scores(weight.T), pattern, "matrix"))
    np.testing.assert_array_equal(mask, expected.T)
    new = numpy(prune_matrix(weight.T, magnitude_scores(weight.T), pattern,
                             "output" if isinstance(pattern, tuple) else "matrix"))
    np.testing.assert_array_equal(new, np.where(expected.T, 0, weight.T))


@pytest.mark.parametrize("sparsity, blocksize", [(0.5, 16), (0.6, 32), ("2:4", 16), ("4:8", 64)])
def test_sparsegpt_masks_and_weights_are_the_references(layer, sparsity, blocksize):
    weight, batches = layer
    reference = SparseGPT(weight)
    for b in batches:
        reference.add_batch(b)
    pattern = parse_sparsity(sparsity)
    if isinstance(pattern, tuple):
        expected_w, expected_mask = reference.fasterprune(0, *pattern, blocksize=blocksize)
    else:
        n = blocksize * D_OUT  # entries per block, every block the same size
        k = target_zeros(n, pattern)
        expected_w, expected_mask = reference.fasterprune((k - 0.5) / n, blocksize=blocksize)
    new, mask, damping = sparsegpt(weight.T, statistics(batches, hessian=True).hessian, pattern,
                                   blocksize=blocksize)
    assert damping == 0.01
    np.testing.assert_array_equal(mask, expected_mask.T)
    np.testing.assert_allclose(new, expected_w.T, rtol=1e-9, atol=1e-9)
    assert (new[mask] == 0).all() and (new[~mask] != 0).all()


def test_sparsegpt_dead_inputs_are_zeroed_as_in_the_reference(layer):
    weight, batches = layer
    batches = [b.copy() for b in batches]
    for b in batches:
        b[..., [5, 6, 30]] = 0.0
    reference = SparseGPT(weight)
    for b in batches:
        reference.add_batch(b)
    n = 16 * D_OUT
    expected_w, expected_mask = reference.fasterprune((target_zeros(n, 0.5) - 0.5) / n, blocksize=16)
    stats = statistics(batches, hessian=True)
    assert stats.dead.tolist() == [i in (5, 6, 30) for i in range(D_IN)]
    # `H_jj = 1` for a dead input depends on H's scale: the reference's N
    # counts sequences, kprune's tokens.
    new, mask, _ = sparsegpt(weight.T, stats.hessian * SEQ, 0.5, blocksize=16)
    np.testing.assert_array_equal(mask, expected_mask.T)
    np.testing.assert_allclose(new, expected_w.T, rtol=1e-9, atol=1e-9)
    assert mask[[5, 6, 30]].all()


def test_sparsegpt_retries_with_more_damping_and_names_the_layer(rng):
    x = rng.normal(size=(4, 8))
    a = x.T @ x  # rank 4 of 8
    h = a - 0.05 * np.mean(np.diag(a)) * np.eye(8)  # an indefinite "Hessian"
    with pytest.warns(UserWarning, match=r"layer 'block_0/query'.*damping 0\.1"):
        _, _, damping = inverse_hessian_factor(h, 0.01, name="block_0/query")
    assert damping == pytest.approx(0.1)
    with pytest.raises(ValueError, match="'block_0/query' could not be factorized"):
        inverse_hessian_factor(h, 0.01, retries=0, name="block_0/query")


def test_sparsegpt_needs_inputs_in_whole_groups():
    with pytest.raises(ValueError, match="multiples of 4"):
        sparsegpt(np.ones((6, 2)), np.eye(6), (2, 4), blocksize=128)


def test_reconstruction_error_orders_the_methods(layer):
    """SparseGPT minimises the layer's output error; Wanda's activation-aware
    choice beats magnitude's when inputs have outlier features."""
    weight, batches = layer
    stats = statistics(batches, hessian=True)
    w = weight.T.astype(np.float64)
    for pattern in (0.5, (2, 4)):
        comparison = "output"
        magnitude = numpy(prune_matrix(w, magnitude_scores(w), pattern, comparison))
        wanda = numpy(prune_matrix(w, wanda_scores(w, stats.norms), pattern, comparison))
        obs, _, _ = sparsegpt(w, stats.hessian, pattern, blocksize=32)
        errors = [relative_error(stats.hessian, w, m) for m in (obs, wanda, magnitude)]
        assert errors[0] < errors[1] < errors[2], (pattern, errors)


def test_relative_error_is_the_output_error(layer):
    weight, batches = layer
    x = np.concatenate([b.reshape(-1, D_IN) for b in batches]).astype(np.float64)
    w = weight.T.astype(np.float64)
    new = np.where(np.abs(w) < 0.5, 0, w)
    expected = np.sum((x @ w - x @ new) ** 2) / np.sum((x @ w) ** 2)
    assert relative_error(statistics(batches, hessian=True).hessian, w, new) == pytest.approx(expected)


def test_selection_breaks_ties_by_position():
    scores = np.zeros((8, 3), "float32")
    scores[4:] = 1.0
    scores[1, 2] = 2.0
    mask = numpy(pruned(scores, 0.25, "output"))  # two per output, ties: lowest inputs
    assert mask[:, 0].tolist() == [True, True] + [False] * 6
    assert mask[:, 2].tolist() == [True, False, True] + [False] * 5
    flat = numpy(pruned(scores, 0.5, "matrix"))  # 12 of 24: every zero but the last tied ones
    assert int(flat.sum()) == 12 and flat[:4].sum() == 11
    groups = numpy(pruned(np.ones((8, 2), "float32"), (2, 4), "output"))
    assert groups[:, 0].tolist() == [True, True, False, False] * 2


@pytest.mark.parametrize("value", ["2-4", "4:2", "0:4", 1.0, -0.1, True, (2, 2)])
def test_bad_sparsity_is_refused(value):
    with pytest.raises(ValueError, match="Argument `sparsity`"):
        parse_sparsity(value)


def test_owl_ratios_are_the_references(rng):
    scores = [[rng.gamma(0.5, size=(16, 8)) * (1 + 5 * (rng.random((16, 8)) < 0.01 * (i + 1)))
               for _ in range(3)] for i in range(4)]
    ratios = [owl.outlier_ratio(block, threshold=5.0) for block in scores]
    expected = [check_outlier_mean(np.concatenate([s.ravel() for s in block]), 5.0) for block in scores]
    np.testing.assert_allclose(ratios, expected, rtol=1e-12)
    assert len(set(ratios)) > 1
    np.testing.assert_allclose(owl.owl_sparsities(ratios, 0.7, 0.08), owl_sparsities(ratios, 0.7, 0.08))
    sparsities = owl.owl_sparsities(ratios, 0.7, 0.08)
    assert np.mean(sparsities) == pytest.approx(0.7)
    assert max(sparsities) - min(sparsities) == pytest.approx(0.16)
    assert owl.owl_sparsities([3.0, 3.0], 0.6) == [0.6, 0.6]
    with pytest.raises(ValueError, match="Lower `owl_lambda`"):
        owl.check_owl(0.95, 5.0, 0.08)
