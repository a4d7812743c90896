"""Exact selection of the `k` smallest magnitudes in about one read of the array.

`smallest_magnitudes(values, k)` answers the question every magnitude mask
asks -- which `k` entries have the smallest `|v|`, equal magnitudes broken by
position (the lower flat index first) -- with the same answer as a stable sort
of `(|v|, index)`, but without sorting, without `np.partition` over the whole
array and without a full-size temporary:

1. *Bracket.* A fixed, deterministic sample of `s ~ n^(2/3)` entries (one in
   every `n / s`, at offsets from a fixed hash so that a sample cannot line up
   with the columns of a kernel) is partitioned at the ranks
   `s k / n -/+ 5 sqrt(s p (1 - p)) - 2` (`p = k / n`), which bracket the
   threshold `[lo, hi]` with overwhelming probability.
2. *One pass.* The array is read once, in cache-sized chunks. Each chunk
   counts its entries below `lo`, collects the few in `[lo, hi]` (index and
   value), and writes `keep = |v| > hi` into the result.
3. *Finish.* The threshold is the `r`-th smallest candidate
   (`r = k - below`), found with `np.partition` on the candidates only; the
   candidates below it and the first tied ones (in position order) are pruned.

If the sample misled (the threshold lies outside the bracket) or the bracket
holds too many entries (heavy ties), further passes narrow it with a 4096-bin
histogram of the bracket, or resolve a single tied value by position; so the
result is exact for every input, and typical inputs (fresh weights, or
weights already pruned to the target: the exact zeros are set aside by
starting the bracket at the smallest nonzero magnitude) take one pass.

Magnitudes are compared as the bit patterns of `|v|` (the sign bit cleared),
which orders IEEE floats exactly as their values: `-0.0 == 0.0`, and NaN
(any payload) is one value larger than `inf`, so NaN entries are pruned last,
as in `np.sort`. Every replica that holds the same array selects the same
entries: nothing depends on timing, threads or randomness.
"""

import numpy as np

# Entries per chunk of a pass: a few 4-byte buffers of this size stay in L2
# (larger chunks amortize NumPy's per-call cost: 1.7x faster than 2**16 at 16M).
CHUNK = 1 << 18
# Arrays up to this size are solved directly: the whole array is the bracket.
DIRECT = 1 << 14
# Histogram bins per refinement pass (12 bits of the magnitude per pass).
_BIN_BITS = 12
# Bracket half-width in standard deviations of the sample rank.
_Z = 5.0
_HASH = 2654435761  # Knuth's multiplicative hash


def _bit_layout(dtype):
    """`(unsigned view dtype, magnitude mask, canonical NaN)` of a float dtype."""
    dtype = np.dtype(dtype)
    unsigned = np.dtype(f"u{dtype.itemsize}")
    inf = np.array(np.inf, dtype=dtype).view(unsigned)[()]
    magnitude = unsigned.type(~np.array(-0.0, dtype=dtype).view(unsigned)[()])
    return unsigned, magnitude, unsigned.type(inf + 1)


def _is_float(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return True
    try:  # bfloat16 and friends (ml_dtypes) report kind "V"
        return bool(np.isinf(np.array(np.inf, dtype=dtype)))
    except (TypeError, ValueError, OverflowError):
        return False


def magnitude_bits(values):
    """The flat array and `(view, mask, nan)` such that
    `min(values.view(view) & mask, nan)` orders entries by `|v|` (NaN last).

    Floating arrays are used as they are (no copy when C-contiguous); other
    dtypes are converted to float64 first.
    """
    values = np.asarray(values)
    if not _is_float(values.dtype):
        values = values.astype(np.float64)
    flat = np.ascontiguousarray(values).reshape(-1)
    view, mask, nan = _bit_layout(flat.dtype)
    return flat.view(view), mask, nan


class _Pass:
    """Reusable chunk buffers for passes over (a range of) one array."""

    def __init__(self, bits, mask, nan):
        self.bits, self.mask, self.nan = bits, mask, nan
        self.inf = bits.dtype.type(nan - 1)
        size = min(CHUNK, bits.size)
        self.m = np.empty(size, bits.dtype)
        self.d = np.empty(size, bits.dtype)
        self.b = np.empty(size, bool)

    def chunks(self, upto):
        """Yield `(start, magnitude bits, scratch, scratch)` per chunk; NaN
        payloads are made equal only if values above `upto` matter."""
        n = self.bits.size
        canonical = upto > self.inf
        for start in range(0, n, CHUNK):
            stop = min(n, start + CHUNK)
            m = self.m[: stop - start]
            np.bitwise_and(self.bits[start:stop], self.mask, out=m)
            if canonical:
                np.minimum(m, self.nan, out=m)
            yield start, m, self.d[: stop - start], self.b[: stop - start]


def _bracket_pass(p, lo, hi, cap, keep):
    """Count entries below `lo`, collect those in `[lo, hi]` (until more than
    `cap`), and write `keep = |v| > hi`. Returns `(below, inside, idx, val)`:
    `inside` counts the entries in `[lo, hi]`, `idx` and `val` hold them
    (None after an overflow)."""
    width = hi - lo
    below = inside = 0
    idx, val = [], []
    for start, m, d, b in p.chunks(hi):
        out = keep[start : start + m.size]
        np.greater(m, hi, out=out)
        np.subtract(m, lo, out=d)  # wraps around for m < lo
        np.less_equal(d, width, out=b)
        where = np.flatnonzero(b) if idx is not None else None
        count = int(np.count_nonzero(b)) if where is None else where.size
        below += m.size - count - int(np.count_nonzero(out))
        if count and idx is not None:
            if inside + count > cap:
                idx = val = None
            else:
                idx.append(where + start)
                val.append(m[where])
        inside += count
    if idx is None:
        return below, inside, None, None
    if not idx:
        return below, 0, np.empty(0, np.int64), np.empty(0, p.bits.dtype)
    return below, inside, np.concatenate(idx), np.concatenate(val)


def _histogram_pass(p, lo, hi):
    """Counts of the entries in `[lo, hi]` in `2**_BIN_BITS` equal bins; the
    bin width (a power of two)."""
    shift = max(0, int(hi - lo).bit_length() - _BIN_BITS)
    counts = np.zeros((int(hi - lo) >> shift) + 1, np.int64)
    width = hi - lo
    for _, m, d, b in p.chunks(hi):
        np.subtract(m, lo, out=d)
        np.less_equal(d, width, out=b)
        inside = d[b] >> d.dtype.type(shift)
        if inside.size:
            counts += np.bincount(inside.astype(np.intp), minlength=counts.size)
    return counts, 1 << shift


def _release_ties(p, value, r, keep):
    """All entries equal to `value` are pruned in `keep`; keep those after the first `r`."""
    seen = 0
    for start, m, _, b in p.chunks(value):
        np.equal(m, value, out=b)
        count = int(np.count_nonzero(b))
        if seen + count > r:
            tail = np.flatnonzero(b)[max(0, r - seen):] + start
            keep[tail] = True
        seen += count


def sample_positions(n):
    """The flat positions `_sample_bracket` reads from an array of `n` entries:
    one in each run of `n // s` (`s ~ n^(2/3)`), at an offset given by a fixed
    multiplicative hash of the run number -- deterministic, and not aligned
    with the rows or columns of a kernel."""
    s = int(min(n, max(DIRECT, n ** (2.0 / 3.0))))
    stride = n // s
    runs = np.arange(s, dtype=np.uint64)
    jitter = (runs * np.uint64(_HASH)) >> np.uint64(32)
    return runs * np.uint64(stride) + jitter % np.uint64(stride)


def _sample_bracket(p, k, n):
    """Initial `[lo, hi]` from a deterministic sample of the magnitudes."""
    bits, mask, nan = p.bits, p.mask, p.nan
    positions = sample_positions(n)
    s = positions.size
    sample = np.minimum(bits[positions] & mask, nan)
    q = k / n
    half = _Z * np.sqrt(s * q * (1.0 - q)) + 2.0
    j_lo, j_hi = int(np.floor(q * s - half)), int(np.ceil(q * s + half))
    ranks = [j for j in (j_lo, j_hi) if 0 <= j < s]
    if ranks:
        sample = np.partition(sample, ranks)
    lo = sample[j_lo] if j_lo >= 0 else bits.dtype.type(0)
    hi = sample[j_hi] if j_hi < s else nan
    if lo == 0 and hi > 0:
        lo = bits.dtype.type(1)  # exact zeros (already pruned) stay out of the bracket
    cap = max(DIRECT, int(4 * n * (j_hi - j_lo) / s))
    return lo, hi, cap


class Selection(tuple):
    """`(keep, pruned_nonzero)`: the keep-mask, and whether a pruned entry is
    not 0 (False means that applying the mask leaves the values unchanged)."""

    __slots__ = ()

    def __new__(cls, keep, pruned_nonzero):
        return super().__new__(cls, (keep, bool(pruned_nonzero)))

    keep = property(lambda self: self[0])
    pruned_nonzero = property(lambda self: self[1])


def smallest_magnitudes(values, k, out=None):
    """Keep-mask of `values` with its `k` smallest magnitudes pruned.

    The `k` entries with the smallest `|v|` are `False`, equal magnitudes
    being pruned in order of position (lower flat index first) and NaN
    counting as larger than `inf`: the same entries as the first `k` of a
    stable `np.argsort(np.abs(values))`, found in about one read of `values`.

    Args:
        values: array of any shape (floating point is read in place).
        k: number of entries to prune, `0 <= k <= values.size`.
        out: optional flat boolean array of `values.size` to write into.

    Returns:
        A flat boolean array (`out` if given), `True` where the entry is kept.

    Example:

    >>> import numpy as np
    >>> smallest_magnitudes(np.array([0.3, -0.1, 0.2, 0.1, -0.0]), 3).tolist()
    [True, False, True, False, False]
    """
    return select_smallest(values, k, out).keep


def select_smallest(values, k, out=None):
    """`smallest_magnitudes`, also telling whether a pruned entry is not 0.

    Returns:
        A `Selection` `(keep, pruned_nonzero)`.

    Example:

    >>> import numpy as np
    >>> select_smallest(np.array([0.0, 0.5, 0.1, 0.0]), 2).pruned_nonzero
    False
    >>> select_smallest(np.array([0.0, 0.5, 0.1, 0.0]), 3).pruned_nonzero
    True
    """
    bits, mask, nan = magnitude_bits(values)
    n = bits.size
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise ValueError(f"Argument `k` must be an integer in [0, {n}]. Received: k={k!r}")
    keep = np.empty(n, bool) if out is None else out
    if k == 0 or k == n:
        keep[:] = k == 0
        return Selection(keep, k != 0 and _any_pruned_nonzero(_Pass(bits, mask, nan), keep))
    p = _Pass(bits, mask, nan)
    zero, fallback_cap = bits.dtype.type(0), max(DIRECT, n // 16)
    if n <= DIRECT:
        lo, hi, cap = zero, nan, n
    else:
        lo, hi, cap = _sample_bracket(p, k, n)
    floor, ceiling = zero, nan  # the threshold lies in [floor, ceiling]
    while True:
        below, inside, idx, val = _bracket_pass(p, lo, hi, cap, keep)
        r = k - below  # entries of the bracket to prune
        if r < 0 or (r == 0 and val is None):  # threshold below the bracket
            ceiling, lo, hi, cap = lo - 1, floor, lo - 1, fallback_cap
            continue
        if r > inside:  # threshold above the bracket
            floor, lo, hi, cap = hi + 1, hi + 1, ceiling, fallback_cap
            continue
        if val is not None:
            if r == inside:  # the whole bracket is pruned: keep = |v| > hi already
                largest = val.max() if inside else zero
            else:
                pruned = np.zeros(idx.size, bool)
                largest = zero
                if r:
                    largest = np.partition(val, r - 1)[r - 1]
                    np.less(val, largest, out=pruned)
                    ties = np.flatnonzero(val == largest)
                    pruned[ties[: r - int(np.count_nonzero(pruned))]] = True
                keep[idx] = ~pruned
            # The pruned entries are the `below` ones under `lo` and the
            # pruned candidates, all at most `largest`: one is not 0 if
            # `largest` is not, and none is if nothing below `lo` can be
            # nonzero (`lo` <= 1); otherwise one more pass tells.
            if largest > 0 or lo <= 1 or below == 0:
                return Selection(keep, largest > 0)
            return Selection(keep, _any_pruned_nonzero(p, keep))
        if r == inside:
            return Selection(keep, _any_pruned_nonzero(p, keep))
        if lo == hi:  # one value, heavily tied: the first r by position are pruned
            _release_ties(p, lo, r, keep)
            return Selection(keep, _any_pruned_nonzero(p, keep))
        counts, width = _histogram_pass(p, lo, hi)
        b = int(np.searchsorted(np.cumsum(counts), r))  # first bin reaching r entries
        floor = lo + bits.dtype.type(b * width)
        ceiling = min(hi, floor + bits.dtype.type(width - 1))
        lo, hi, cap = floor, ceiling, fallback_cap


def _any_pruned_nonzero(p, keep):
    """Whether an entry with `keep` False has a nonzero magnitude (one more pass)."""
    for start, m, _, b in p.chunks(p.nan):
        np.not_equal(m, 0, out=b)
        b &= ~keep[start : start + m.size]
        if b.any():
            return True
    return False
