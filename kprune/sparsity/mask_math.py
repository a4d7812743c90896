"""Mask math: which entries of a weight are kept. Pure NumPy, no Keras state.

Three patterns, all deterministic (equal magnitudes are broken by position, the
entry with the lower flat index being pruned first), so every replica or worker
that holds the same weights computes the same mask:

* `magnitude_mask`: the `round(n * sparsity)` smallest-magnitude entries are
  zero -- an exact count, found by `kprune.sparsity.smallest` in about one read of
  the weights rather than a sort or a full `np.partition`.
* `block_mask`: the same over `(r, c)` blocks of the last two axes, scored by
  the average or maximum magnitude in the block (edge blocks score over the
  entries they hold).
* `m_by_n_mask`: in every group of `n` consecutive entries along one axis, the
  `m` smallest are zeroed (tfmot's reading: `m` zeros in every `n`; 2:4 keeps 2).

Masks are boolean (one byte per weight), and the weights are read in slices:
no full-size float temporary is made (block scores and M:N groups are
computed a band of rows at a time).
"""

import numpy as np

from kprune.sparsity import smallest as selection

# Entries per band when block scores or M:N groups are computed in slices.
_BAND = 1 << 16

POOLING_TYPES = ("AVG", "MAX")


def target_zeros(size, sparsity):
    """Number of entries pruned from `size` at `sparsity`: `round(size * sparsity)`
    with halves rounded up."""
    return min(size, int(np.floor(size * float(sparsity) + 0.5)))


def magnitude_mask(weights, sparsity):
    """Keep all but the `round(n * sparsity)` smallest `|weights|`.

    Equal magnitudes are pruned in order of position (the lower flat index
    first), `-0.0` equals `0.0`, and NaN counts as larger than `inf` (pruned
    last). The selection is exact and reads the weights about once
    (`kprune.sparsity.smallest.smallest_magnitudes`); a float array is not copied.

    Args:
        weights: array of any shape.
        sparsity: fraction of entries to zero, in [0, 1].

    Returns:
        A boolean array of `weights.shape`, `True` where the entry is kept.

    Example:

    >>> import numpy as np
    >>> magnitude_mask(np.array([0.3, -0.1, 0.2, 0.1]), 0.5).tolist()
    [True, False, True, False]
    """
    weights = np.asarray(weights)
    keep = selection.smallest_magnitudes(weights, target_zeros(weights.size, sparsity))
    return keep.reshape(weights.shape)


def check_block_size(block_size):
    """Validate a `(r, c)` block size, both >= 1. Returns it as a tuple."""
    if (
        not isinstance(block_size, (tuple, list))
        or len(block_size) != 2
        or not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in block_size)
    ):
        raise ValueError(
            "Argument `block_size` must be a tuple of two integers (rows, cols). "
            f"Received: block_size={block_size!r}"
        )
    if min(block_size) < 1:
        raise ValueError(
            "Argument `block_size` must have both dimensions >= 1. "
            f"Received: block_size={tuple(block_size)}"
        )
    return tuple(int(b) for b in block_size)


def check_pooling(pooling_type):
    """Validate a block pooling type (`"AVG"` or `"MAX"`)."""
    if pooling_type not in POOLING_TYPES:
        raise ValueError(
            f"Argument `block_pooling_type` must be one of {POOLING_TYPES}. "
            f"Received: block_pooling_type={pooling_type!r}"
        )
    return pooling_type


def block_mask(weights, sparsity, block_size, pooling_type="AVG"):
    """Prune whole `(r, c)` blocks of the last two axes of `weights`.

    Blocks tile the last two axes of a weight of rank >= 2 (for a conv kernel
    `(kh, kw, in, out)` the blocks lie in the `(in, out)` plane of every spatial
    position). Each block is scored by the mean (`"AVG"`) or maximum (`"MAX"`)
    `|w|` of the entries it holds, and `round(num_blocks * sparsity)` blocks with
    the lowest scores are pruned (see `magnitude_mask` for ties).

    Args:
        weights: array of rank >= 2.
        sparsity: fraction of blocks to prune, in [0, 1].
        block_size: `(r, c)`, both >= 1.
        pooling_type: `"AVG"` or `"MAX"`.

    Returns:
        A boolean array of `weights.shape`, constant over each block.

    Example:

    >>> import numpy as np
    >>> w = np.array([[1., 1., 0.1, 0.2], [3., 3., 0.3, 0.1]])
    >>> block_mask(w, 0.5, (1, 2)).astype(int).tolist()
    [[1, 1, 0, 0], [1, 1, 0, 0]]
    """
    r, c = check_block_size(block_size)
    check_pooling(pooling_type)
    w = np.asarray(weights)
    if w.ndim < 2:
        raise ValueError(
            "Block sparsity needs a weight of rank >= 2. "
            f"Received: a weight of shape {w.shape} with block_size={(r, c)}"
        )
    if (r, c) == (1, 1):
        return magnitude_mask(w, sparsity)
    *lead, rows, cols = w.shape
    planes = w.reshape(-1, rows, cols)
    nr, nc = -(-rows // r), -(-cols // c)
    scores = np.empty((planes.shape[0], nr, nc), np.float32)
    # A band of `tiles` block rows of `group` planes at a time (|w| of one band).
    tiles = max(1, min(nr, _BAND // (r * nc * c)))
    group = max(1, _BAND // (nr * r * nc * c))
    for p in range(0, planes.shape[0], group):
        q = min(planes.shape[0], p + group)
        for i in range(0, nr, tiles):
            j = min(nr, i + tiles)
            part = planes[p:q, i * r : j * r]
            band = np.zeros((q - p, (j - i) * r, nc * c), np.float32)
            band[:, : part.shape[1], :cols] = part
            np.abs(band, out=band)
            band = band.reshape(q - p, j - i, r, nc, c)
            pool = band.max if pooling_type == "MAX" else band.sum
            scores[p:q, i:j] = pool(axis=(2, 4))
    if pooling_type == "AVG":
        counts = np.zeros((nr * r, nc * c), np.float32)
        counts[:rows, :cols] = 1.0
        scores /= counts.reshape(nr, r, nc, c).sum(axis=(1, 3))
    keep = magnitude_mask(scores, sparsity)
    keep = np.repeat(np.repeat(keep, r, axis=1), c, axis=2)[:, :rows, :cols]
    return keep.reshape(w.shape)


def check_m_by_n(m_by_n):
    """Validate an `(m, n)` pair: `1 <= m < n`. Returns it as a tuple."""
    if (
        not isinstance(m_by_n, (tuple, list))
        or len(m_by_n) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in m_by_n)
    ):
        raise ValueError(
            "Argument `sparsity_m_by_n` must be a tuple of two integers (M, N), "
            f"e.g. (2, 4). Received: sparsity_m_by_n={m_by_n!r}"
        )
    m, n = int(m_by_n[0]), int(m_by_n[1])
    if m < 1 or m >= n:
        raise ValueError(
            "Argument `sparsity_m_by_n` must satisfy 1 <= M < N (M zeros in every "
            f"N weights, as in tfmot). Received: sparsity_m_by_n={(m, n)}"
        )
    return m, n


def m_by_n_mask(weights, m_by_n, axis):
    """Prune the `m` smallest `|w|` in every `n` consecutive entries along `axis`.

    tfmot's reading of `(m, n)`: `m` zeros in every `n` (2:4 keeps 2 of 4).

    Args:
        weights: array whose size along `axis` is a multiple of `n`.
        m_by_n: `(m, n)` with `1 <= m < n`.
        axis: the axis along which groups are formed (for kernels: the input
            channel axis).

    Returns:
        A boolean array of `weights.shape` with exactly `n - m` kept per group.

    Example:

    >>> import numpy as np
    >>> m_by_n_mask(np.array([[4.], [1.], [3.], [2.]]), (2, 4), axis=0).ravel().tolist()
    [True, False, True, False]
    """
    m, n = check_m_by_n(m_by_n)
    w = np.asarray(weights)
    if w.shape[axis] % n:
        raise ValueError(
            f"M:N sparsity {m}:{n} needs the size of axis {axis} to be a multiple "
            f"of {n}. Received: a weight of shape {w.shape}"
        )
    keep = np.empty(w.shape, bool)
    moved, kept = np.moveaxis(w, axis, -1), np.moveaxis(keep, axis, -1)  # views
    if moved.ndim == 1:
        moved, kept = moved[None], kept[None]
    lead, size = moved.shape[:-1], moved.shape[-1]
    rows = int(np.prod(lead, dtype=np.int64))
    per = max(1, _BAND // size)
    for start in range(0, rows, per):
        index = np.unravel_index(np.arange(start, min(rows, start + per)), lead)
        groups = np.abs(moved[index]).reshape(-1, n)
        # Stable ascending sort: among equal magnitudes the lower index is
        # pruned first, as in `magnitude_mask`.
        order = np.argsort(groups, axis=1, kind="stable")
        chunk = np.ones(groups.shape, dtype=bool)
        np.put_along_axis(chunk, order[:, :m], False, axis=1)
        kept[index] = chunk.reshape(-1, size)
    return keep


def check_pattern(block_size, block_pooling_type, sparsity_m_by_n):
    """Validate the sparsity pattern arguments of `prune_low_magnitude` together.

    Returns:
        `(block_size, block_pooling_type, sparsity_m_by_n)` normalized to tuples.
    """
    block_size = check_block_size(block_size)
    check_pooling(block_pooling_type)
    if sparsity_m_by_n is not None:
        sparsity_m_by_n = check_m_by_n(sparsity_m_by_n)
        if block_size != (1, 1):
            raise ValueError(
                "Arguments `block_size` and `sparsity_m_by_n` cannot be combined. "
                f"Received: block_size={block_size}, sparsity_m_by_n={sparsity_m_by_n}"
            )
    return block_size, block_pooling_type, sparsity_m_by_n
