"""Channel selection by reconstruction: pure NumPy algorithms.

The drivers that sample activations from Keras models live in
`kprune.criteria.sampling`, `kprune.methods.reconstruction` and `kprune.criteria.reconstruction_criteria`; the
functions here only see arrays, so they are tested against NumPy references.

* `thinet_order(contributions)`: ThiNet's greedy removal order (Luo, Wu, Lin,
  "ThiNet: A Filter Level Pruning Method for Deep Neural Network
  Compression", ICCV 2017). With `X` of shape `(N, C)` holding each input
  channel's contribution to one sampled output value (`y_n = sum_c X[n, c]`),
  the channel removed next is the one that adds the least squared error:

      T <- T + argmin_{c not in T} || sum_{j in T} X[:, j] + X[:, c] ||^2

  Using the running sum `t` and `||t + x_c||^2 = ||t||^2 + 2 t.x_c + ||x_c||^2`,
  the whole order costs O(N C^2).
* `lasso_order(Z, y)` / `lasso_select(Z, y, n_keep)`: channel selection by
  LASSO (He, Zhang, Sun, "Channel Pruning for Accelerating Very Deep Neural
  Networks", ICCV 2017): `min_beta 1/(2N) ||y - Z beta||^2 + alpha ||beta||_1`
  with `Z[:, c]` channel c's contribution. Instead of bisecting `alpha`, the
  whole LASSO path is computed with LARS (`sklearn.linear_model.lars_path`),
  which yields the exact point where `n_keep` coefficients are non-zero.
* `least_squares(X, Y)`: the reconstruction step, `W = argmin ||Y - X W||^2`
  (with an optional intercept and ridge), by `scipy.linalg.lstsq`.

Example:

>>> import numpy as np
>>> from kprune.criteria import least_squares as selection
>>> X = np.array([[1.0, 0.1, -1.0], [2.0, 0.0, -2.1], [0.5, 0.2, -0.4]])
>>> selection.thinet_order(X).tolist()  # channel 1 adds least, then 2
[1, 2, 0]
"""

import numpy as np


def _as_matrix(name, value):
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"Argument `{name}` must be a non-empty 2-D array (samples, channels). "
            f"Received: {name} of shape {array.shape}"
        )
    return array


def thinet_order(contributions):
    """ThiNet's greedy removal order of the channels.

    Args:
        contributions: `(N, C)` array; `contributions[n, c]` is channel c's
            share of sampled output value n (the output is the row sum).

    Returns:
        An int array holding all C channels, in the order the greedy search
        removes them (first = least missed). The first k entries are ThiNet's
        removal set for a target of k removed channels, for every k.

    Example:

    >>> import numpy as np
    >>> thinet_order(np.array([[3.0, 0.1], [2.0, -0.1]])).tolist()
    [1, 0]
    """
    X = _as_matrix("contributions", contributions)
    C = X.shape[1]
    gram = X.T @ X  # t.x_c for t = sum of chosen columns is a sum of Gram rows
    cross = np.zeros(C)  # t . x_c
    total = 0.0  # ||t||^2
    removed = np.zeros(C, dtype=bool)
    order = []
    diag = np.diag(gram)
    for _ in range(C):
        cost = total + 2.0 * cross + diag
        cost[removed] = np.inf
        c = int(np.argmin(cost))
        order.append(c)
        removed[c] = True
        total = cost[c]
        cross += gram[c]
    return np.array(order, dtype=np.int64)


def removal_error(contributions, removed):
    """`sum_n (sum_{c in removed} X[n, c])^2`: ThiNet's objective for a removal set."""
    X = _as_matrix("contributions", contributions)
    return float(np.sum(X[:, list(removed)].sum(axis=1) ** 2))


def _lasso_path(Z, y):
    """LARS-LASSO path on the Gram matrix: `(alphas, coefs)`, alphas decreasing."""
    from sklearn.linear_model import lars_path_gram

    alphas, _, coefs = lars_path_gram(
        Z.T @ y, Z.T @ Z, n_samples=Z.shape[0], method="lasso", max_iter=10 * Z.shape[1]
    )
    return alphas, coefs


def lasso_order(Z, y):
    """Scores from the LASSO path: the `alpha` at which each channel last
    entered the active set (channels never active score 0).

    With a path where no coefficient leaves the active set (the usual case),
    the k channels with the highest scores are exactly the non-zero
    coefficients of the LASSO solution with k non-zeros.

    Args:
        Z: `(N, C)` design; column c is channel c's contribution.
        y: `(N,)` target (`Z.sum(axis=1)` when reconstructing the unpruned output).

    Returns:
        A float array of C scores (higher = kept longer).
    """
    Z = _as_matrix("Z", Z)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    alphas, coefs = _lasso_path(Z, y)
    scores = np.zeros(Z.shape[1])
    active = coefs != 0
    for c in range(Z.shape[1]):
        steps = np.flatnonzero(active[c])
        if steps.size == 0:
            continue
        # The last stretch of consecutive active steps that reaches the end.
        if not active[c, -1]:
            scores[c] = 0.0
            continue
        start = steps[-1]
        while start > 0 and active[c, start - 1]:
            start -= 1
        # It became active between alphas[start - 1] and alphas[start].
        scores[c] = alphas[start - 1] if start > 0 else alphas[0]
    # Break ties (several channels entering at one breakpoint, or never) by |coef| at alpha -> 0.
    return scores + 1e-12 * np.abs(coefs[:, -1]) / (np.abs(coefs[:, -1]).max() + 1e-30)


def lasso_select(Z, y, n_keep):
    """The LASSO solution with exactly `n_keep` non-zero coefficients.

    Args:
        Z: `(N, C)` design; column c is channel c's contribution.
        y: `(N,)` target.
        n_keep: the number of channels to keep, 1 <= n_keep <= C.

    Returns:
        `(kept, beta, alpha)`: sorted indices of the kept channels, the LASSO
        coefficients (zero outside `kept`) and the `alpha` (sklearn's scale,
        loss `1/(2N) ||y - Z beta||^2 + alpha ||beta||_1`) where the path has
        `n_keep` non-zeros. If the path skips that count (a coefficient leaves
        as another enters), the `n_keep` channels with the highest
        `lasso_order` scores are kept and `beta` is their least-squares fit.

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> Z = rng.normal(size=(200, 6)) * [3, 0.01, 2, 0.02, 1, 0.03]
    >>> kept, beta, alpha = lasso_select(Z, Z.sum(axis=1), 3)
    >>> kept.tolist(), int(np.count_nonzero(beta))
    ([0, 2, 4], 3)
    """
    Z = _as_matrix("Z", Z)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    C = Z.shape[1]
    if isinstance(n_keep, bool) or not isinstance(n_keep, (int, np.integer)) or not 1 <= n_keep <= C:
        raise ValueError(f"Argument `n_keep` must be an integer in [1, {C}]. Received: n_keep={n_keep!r}")
    alphas, coefs = _lasso_path(Z, y)
    counts = np.count_nonzero(coefs, axis=0)
    hits = np.flatnonzero(counts == n_keep)
    if hits.size:
        # coefs[:, k] solves the LASSO at alphas[k]; on the open segment
        # (alphas[k], alphas[k - 1]) the active set is the one of coefs[:, k]
        # (a channel enters at a breakpoint with coefficient 0). Take the
        # segment's midpoint, away from the ties at its ends.
        k = hits[0]
        alpha, beta = alphas[k], coefs[:, k].copy()
        if k >= 1:
            mid = 0.5 * (alphas[k - 1] + alphas[k])
            t = (alphas[k - 1] - mid) / (alphas[k - 1] - alphas[k])
            between = (1 - t) * coefs[:, k - 1] + t * coefs[:, k]
            if np.count_nonzero(between) == n_keep:
                alpha, beta = mid, between
        kept = np.flatnonzero(beta)
        if kept.size == n_keep:
            return kept, beta, float(alpha)
    kept = np.sort(np.argsort(-lasso_order(Z, y), kind="stable")[:n_keep])
    beta = np.zeros(C)
    beta[kept] = least_squares(Z[:, kept], y[:, None])[0][:, 0]
    return kept, beta, float("nan")


def least_squares(X, Y, intercept=False, ridge=0.0):
    """`W = argmin ||Y - X W - 1 b||^2 + ridge ||W||^2` by `scipy.linalg.lstsq`.

    Args:
        X: `(N, D)` inputs.
        Y: `(N, F)` targets.
        intercept: also fit a bias `b` (not penalised). Defaults to False.
        ridge: Tikhonov term, relative to the mean diagonal of `X^T X` (solved
            by Cholesky on the normal equations); 0 = plain least squares by
            `scipy.linalg.lstsq` (minimum-norm when `X` is rank deficient).
            Defaults to 0.

    Returns:
        `(W, b)`: `(D, F)` weights and `(F,)` bias (zeros without `intercept`).

    Example:

    >>> import numpy as np
    >>> X = np.array([[1.0, 0], [0, 1], [1, 1]])
    >>> W, b = least_squares(X, X @ [[2.0], [-1.0]] + 0.5, intercept=True)
    >>> np.round(W.ravel(), 6).tolist(), round(float(b[0]), 6)
    ([2.0, -1.0], 0.5)
    """
    import scipy.linalg  # imported when used: `import kprune` stays light
    X = _as_matrix("X", X)
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"`X` has {X.shape[0]} rows but `Y` has {Y.shape[0]}: they must be sampled together.")
    if ridge < 0:
        raise ValueError(f"Argument `ridge` must be >= 0. Received: ridge={ridge!r}")
    x_mean = X.mean(axis=0) if intercept else np.zeros(X.shape[1])
    y_mean = Y.mean(axis=0) if intercept else np.zeros(Y.shape[1])
    Xc, Yc = X - x_mean, Y - y_mean
    if ridge > 0:
        # Normal equations with the ridge: positive definite, solved by Cholesky
        # (much faster than an SVD for N >> D).
        gram = Xc.T @ Xc
        scale = ridge * max(float(np.mean(np.diag(gram))), 1e-30)
        W = scipy.linalg.solve(gram + scale * np.eye(X.shape[1]), Xc.T @ Yc, assume_a="pos")
    else:
        W = scipy.linalg.lstsq(Xc, Yc, lapack_driver="gelsd")[0]
    return W, y_mean - x_mean @ W
