"""SparseGPT: prune a weight matrix and update the rest to keep its outputs.

Frantar and Alistarh, "SparseGPT: Massive Language Models Can Be Accurately
Pruned in One-Shot", ICML 2023; reference `IST-DASLab/sparsegpt`,
`sparsegpt.py: SparseGPT.fasterprune`. For a layer `y = x W` with inputs `X`
(N rows) the layer-wise problem is `min ||X W - X W'||^2` over `W'` with the
sparsity pattern; SparseGPT solves it approximately with Optimal Brain
Surgeon updates, input by input, using the Hessian `H = (2/N) X^T X`:

1. dead inputs (`H_ii = 0`): `H_ii = 1` and their weights 0 (the value 1
   depends on H's scale: the reference's N counts sequences, kprune's
   `kprune.llm.statistics` counts tokens);
2. damping `H += lambda I`, `lambda = percdamp * mean(diag H)`;
3. `U = chol(H^-1)^T` (upper): row `i` of `U` holds the OBS update for
   input `i` given that inputs `< i` are fixed, and `U_ii^2 = [H_F^-1]_ii`;
4. for each block of `blocksize` inputs: the unstructured mask prunes the
   lowest `w^2 / U_ii^2` over the whole block (all outputs), or, for N:M, at
   every `i % M == 0` the N lowest of `w^2 / U_ii^2` among inputs
   `i..i+M-1` of each output, on the *updated* weights; then for each input
   `i`: `q = w` with pruned entries 0, `err = (w - q) / U_ii`, and the
   remaining inputs of the block move by `-err * U[i, i:]`; after the block
   the inputs behind it move by `-Err @ U[block, rest]` (lazy batch update).

Differences from the reference, on purpose: the matrix is Keras' `(d_in,
d_out)` (the reference's `(out, in)` transposed); the arithmetic is float64;
the unstructured mask prunes exactly `round(s * entries)` of each block (the
reference's `tmp <= sorted[int(s * n)]` prunes one more, and more on ties),
ties broken by position (`kprune.sparsity.mask_math`); when a Cholesky
factorization fails, the damping is multiplied by 10 and retried (up to
`retries` times) with a warning naming the layer, where the reference stops.

Cost `O(d_in^3 + d_out d_in^2)`; memory: one float64 `d_in x d_in` array
(factorized in place) and the matrix in float64. Each output column is
updated independently given `H`: a kernel sharded along its outputs needs `H` on every device and, for the
unstructured mask only, the block's `blocksize x d_out` scores gathered for
one threshold; N:M needs nothing across outputs.

Example:

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(256, 8))
>>> w = rng.normal(size=(8, 4))
>>> h = 2 * x.T @ x / len(x)
>>> new, mask, damping = sparsegpt(w, h, 0.5, blocksize=4)
>>> int(mask.sum()), bool((new[mask] == 0).all())
(16, True)
>>> masked = np.where(mask, 0, w)   # the same mask, no update
>>> bool(np.sum((x @ (w - new)) ** 2) < np.sum((x @ (w - masked)) ** 2))
True
"""

import numpy as np
from scipy.linalg import blas, lapack

from kprune.sparsity.mask_math import m_by_n_mask, magnitude_mask
from kprune.utils import user_warnings

_gemm = blas.get_blas_funcs("gemm", dtype=np.float64)


def _dead_and_mean(hessian):
    diagonal = np.diagonal(hessian)
    dead = diagonal == 0
    return dead, float((diagonal.sum(dtype=np.float64) + dead.sum()) / len(diagonal))


def inverse_hessian_factor(hessian, percdamp=0.01, retries=5, name="layer"):
    """`(U, dead, damping)`: the upper Cholesky factor of `(H + lambda I)^-1`.

    Dead inputs (`H_ii = 0`) get `H_ii = 1`. `damping` is the `percdamp`
    that succeeded (multiplied by 10 after each failure). `U` is valid on
    and above its diagonal only (below it LAPACK leaves other values).

    Memory: one `d_in x d_in` float64 array, factorized and inverted in
    place (LAPACK `potrf`, `potri`, `potrf`; `chol_lower(A)^T` is the upper
    factor); the caller's `hessian` is not modified.

    Raises:
        ValueError: the factorization failed `retries` more times.
    """
    dead, mean_diagonal = _dead_and_mean(hessian)
    damping = float(percdamp)
    for attempt in range(retries + 1):
        h = np.array(hessian, dtype=np.float64, order="F")  # the one working copy
        h[dead, dead] = 1.0
        h.flat[::len(h) + 1] += damping * mean_diagonal
        lower, info = lapack.dpotrf(h, lower=1, overwrite_a=1, clean=0)
        if info == 0:
            inverse, info = lapack.dpotri(lower, lower=1, overwrite_c=1)  # lower triangle of H^-1
        if info == 0:
            factor, info = lapack.dpotrf(inverse, lower=1, overwrite_a=1, clean=0)
        del h
        if info == 0 and np.all(np.isfinite(np.diagonal(factor))):
            if attempt:
                user_warnings.warn(
                    f"SparseGPT: the Hessian of layer '{name}' is not positive definite with "
                    f"damping {percdamp} x mean(diag H); it factorized with damping {damping:g}. "
                    "More calibration tokens than inputs, or `statistics_dtype='float64'`, avoid this.")
            return factor.T, dead, damping
        damping *= 10.0
    raise ValueError(
        f"SparseGPT: the Hessian of layer '{name}' could not be factorized even with damping "
        f"{damping / 10:g} x mean(diag H). Received: a Hessian of {len(dead)} inputs with "
        f"diagonal mean {mean_diagonal:g}. Give more calibration data.")


def sparsegpt(matrix, hessian, sparsity, blocksize=128, percdamp=0.01, retries=5, name="layer", factor=None):
    """Prune `matrix` with SparseGPT (see the module docstring).

    Args:
        matrix: `(d_in, d_out)` array.
        hessian: `(d_in, d_in)` array, `H = (2/N) X^T X` (not read when
            `factor` is given: it may be None).
        sparsity: a fraction in [0, 1), or `(n, m)`: n zeros in every m inputs.
        blocksize: inputs per block (the reference's 128; a multiple of m).
        percdamp: relative damping (the reference's 0.01).
        retries: how many times to multiply the damping by 10 on failure.
        name: the layer's name, for messages.
        factor: `inverse_hessian_factor(hessian, percdamp, retries)` if
            already computed (layers that read the same inputs share it).

    Returns:
        `(new_matrix, pruned, damping)`: the updated float64 matrix with
        exact zeros, the boolean mask of pruned entries, and the damping used.
    """
    w = np.array(matrix, dtype=np.float64).T  # (out, in), as in the reference
    d_out, d_in = w.shape
    pattern = sparsity if isinstance(sparsity, tuple) else None
    if pattern is not None and (blocksize % pattern[1] or d_in % pattern[1]):
        raise ValueError(
            f"SparseGPT {pattern[0]}:{pattern[1]} needs `blocksize` ({blocksize}) and the inputs of "
            f"layer '{name}' ({d_in}) to be multiples of {pattern[1]}.")
    u, dead, damping = factor if factor is not None else inverse_hessian_factor(hessian, percdamp, retries, name)
    w[:, dead] = 0.0
    mask = np.zeros(w.shape, dtype=bool)
    for i1 in range(0, d_in, blocksize):
        i2 = min(i1 + blocksize, d_in)
        w1 = w[:, i1:i2].copy()
        err1 = np.zeros_like(w1)
        d1 = np.diag(u)[i1:i2]
        if pattern is None:
            # Keras orientation (inputs, outputs): ties pruned lower input first.
            tmp = (w1 ** 2 / d1[None, :] ** 2).T
            mask1 = ~magnitude_mask(tmp, sparsity).T
        else:
            mask1 = np.zeros(w1.shape, dtype=bool)
        for i in range(i2 - i1):
            if pattern is not None and i % pattern[1] == 0:
                group = w1[:, i:i + pattern[1]] ** 2 / d1[None, i:i + pattern[1]] ** 2
                mask1[:, i:i + pattern[1]] = ~m_by_n_mask(group, pattern, axis=1)
            column = w1[:, i]
            q = np.where(mask1[:, i], 0.0, column)
            err = (column - q) / d1[i]
            w1[:, i:] -= np.outer(err, u[i1 + i, i1 + i:i2])
            w1[:, i] = q
            err1[:, i] = err
        w[:, i1:i2] = w1
        mask[:, i1:i2] = mask1
        if i2 < d_in:  # w[:, i2:] -= err1 @ U[block, rest], in place (no d_out x d_in temporary)
            rest = w[:, i2:]  # F-ordered: BLAS writes into it
            updated = _gemm(-1.0, err1, u[i1:i2, i2:], beta=1.0, c=rest, overwrite_c=True)
            if not np.shares_memory(updated, rest):
                rest[...] = updated
    return w.T, mask.T, damping
