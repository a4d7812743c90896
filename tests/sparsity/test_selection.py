"""`kprune.sparsity.smallest` against a NumPy reference: a stable argsort of `|v|`."""

import ml_dtypes
import numpy as np
import pytest

from kprune.sparsity import smallest as selection


def reference(values, k):
    """Keep-mask pruning the first `k` entries of a stable argsort of `|v|`
    (NaN sorts last; -0.0 equals 0.0)."""
    a = np.abs(np.asarray(values).astype(np.float64)).ravel()
    keep = np.ones(a.size, bool)
    keep[np.argsort(a, kind="stable")[:k]] = False
    return keep


def check(values, k):
    keep, pruned_nonzero = selection.select_smallest(values, k)
    expected = reference(values, k)
    np.testing.assert_array_equal(keep, expected)
    flat = np.asarray(values).astype(np.float64).ravel()
    assert pruned_nonzero is bool(np.count_nonzero(flat[~expected]))


def _case(rng, n, kind):
    w = rng.standard_normal(n).astype(np.float32)
    if kind == "pruned":  # re-pruning: most entries already exactly 0
        w[rng.random(n) < rng.random()] = 0.0
    elif kind == "ties":
        w = np.round(w, 1)
    elif kind == "equal":
        w[:] = -0.25
    elif kind == "signed_zeros":
        w[rng.random(n) < 0.4] = 0.0
        w[rng.random(n) < 0.4] = -0.0
    elif kind == "nan_inf":
        w[rng.random(n) < 0.05] = np.nan
        w[rng.random(n) < 0.05] = -np.nan
        w[rng.random(n) < 0.05] = -np.inf
        w[rng.random(n) < 0.05] = np.inf
    elif kind == "periodic":  # columns of very different scales
        w *= np.where(np.arange(n) % 64 == 0, 1e3, 1e-3).astype(np.float32)
    elif kind == "few_values":
        w = rng.integers(-3, 4, n).astype(np.float32)
    return w


KINDS = ["normal", "pruned", "ties", "equal", "signed_zeros", "nan_inf", "periodic", "few_values"]


@pytest.mark.parametrize("kind", KINDS)
def test_matches_reference_on_random_inputs(rng, kind):
    for n in (1, 2, 7, 100, 5000, 16385, 70000, 300000):
        w = _case(rng, n, kind)
        for k in {0, 1, n // 2, int(0.9 * n), n - 1, n, int(rng.integers(0, n + 1))}:
            check(w, k)


def test_matches_reference_on_a_large_array(rng):
    w = rng.standard_normal(1 << 22).astype(np.float32) * 0.05
    check(w, int(0.9 * w.size))
    w[~reference(w, int(0.9 * w.size))] = 0.0  # re-prune at the same and a higher sparsity
    check(w, int(0.9 * w.size))
    check(w, int(0.95 * w.size))


@pytest.mark.parametrize("dtype", [np.float16, np.float64, ml_dtypes.bfloat16, np.int32, np.int8])
def test_other_dtypes(rng, dtype):
    w = (rng.standard_normal(40000) * 20).astype(np.float32)
    w[::7] = 0
    w = w.astype(dtype)
    for k in (0, 1000, 20000, 39999, 40000):
        check(w, k)


def test_misleading_sample_falls_back_to_exact_passes(rng):
    n = 200000
    positions = selection.sample_positions(n).astype(np.int64)
    for sampled in (1e6, 1e-6):  # the sample puts the threshold far too high / too low
        w = rng.standard_normal(n).astype(np.float32)
        w[positions] = sampled
        for k in (1, n // 3, n // 2, n - positions.size - 1, n - 1):
            check(w, k)


def test_heavy_ties_inside_the_bracket(rng):
    # Few distinct values, each held by many entries: the bracket overflows and
    # is narrowed by histogram passes, then one tied value is split by position.
    n = 300000
    w = (rng.integers(0, 5, n) * 1e-3 + 1.0).astype(np.float32)
    for k in (1, 59999, 60000, 60001, 150000, n - 1):
        check(w, k)
    values = np.array([1.0, 1.0 + 2**-23, 1.0 + 2**-22], np.float32)  # adjacent floats
    check(values[rng.integers(0, 3, n)], n // 2)


def test_input_is_read_in_place_and_not_modified(rng):
    w = rng.standard_normal((300, 400)).astype(np.float32)
    before = w.copy()
    w.setflags(write=False)
    keep = selection.smallest_magnitudes(w, 60000)
    np.testing.assert_array_equal(w, before)
    assert keep.shape == (w.size,) and keep.dtype == bool
    out = np.empty(w.size, bool)
    assert selection.smallest_magnitudes(w, 60000, out=out) is out
    np.testing.assert_array_equal(out, keep)


def test_same_result_for_equal_arrays(rng):
    # Replicas holding the same weights (in different buffers) choose the same entries.
    w = np.round(rng.standard_normal(100000).astype(np.float32), 2)
    a = selection.smallest_magnitudes(w, 90000)
    b = selection.smallest_magnitudes(np.array(w[::-1][::-1]), 90000)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("k", [-1, 11, 2.5, True])
def test_invalid_k(k):
    with pytest.raises(ValueError, match=f"Received: k={k!r}"):
        selection.smallest_magnitudes(np.ones(10), k)
