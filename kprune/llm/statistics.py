"""Statistics of a linear layer's inputs, accumulated on the host in float64/float32.

One-shot methods need two statistics of the rows `x` (`d_in` features each)
that a layer multiplies by its kernel, over all calibration tokens:

* the mean of squares per input feature, `m_j = (1/N) sum_t x_tj^2` --
  Wanda's `scaler_row` (its score uses `||X_j||_2 = sqrt(N m_j)`; the
  constant `N` does not change any ranking). Always float64: `d_in` numbers.
* the Hessian of the layer-wise squared error, `H = (2/N) sum_t x_t x_t^T`
  (SparseGPT's `H`; also gives reconstruction errors), `d_in x d_in` in
  `dtype` (float32 as in the reference, or float64).

Rows arrive in batches as backend tensors of any dtype (bfloat16 models
exist); they are converted to NumPy and to the accumulation dtype before any
arithmetic, so the statistics do not depend on the model's precision. Running
means are updated as the references do (`H *= n / (n + b); H += 2/(n+b) XX^T`),
which keeps the values bounded for any number of tokens.

Example:

>>> import numpy as np
>>> stats = InputStatistics(3, hessian=True)
>>> stats.update(np.array([[1., 2., 0.], [3., 0., 0.]], "float32"))
>>> stats.mean_squares.tolist(), stats.dead.tolist()
([5.0, 2.0, 0.0], [False, False, True])
>>> stats.hessian[0].tolist()
[10.0, 2.0, 0.0]
"""

import keras
import numpy as np
from scipy.linalg import blas

DTYPES = ("float32", "float64")
# Rows converted to float64 (or scaled) at a time: the temporaries stay small
# whatever the batch (2048 rows of 4096 features: 64 MB in float64).
CHUNK_ROWS = 2048


class InputStatistics:
    """Running statistics of the `(n, d_in)` rows a linear layer reads.

    Args:
        d_in: the number of input features.
        hessian: also accumulate `H = (2/N) X^T X`. Defaults to False.
        dtype: `"float32"` (the references') or `"float64"` for `H`.

    Attributes:
        count: the number of rows seen.
        mean_squares: `(d_in,)` float64, the mean of `x_j^2`.
        hessian: `(d_in, d_in)` or None.
    """

    def __init__(self, d_in, hessian=False, dtype="float32"):
        if dtype not in DTYPES:
            raise ValueError(f"Argument `statistics_dtype` must be one of {DTYPES}. "
                             f"Received: statistics_dtype={dtype!r}")
        self.d_in = int(d_in)
        self.dtype = np.dtype(dtype)
        self.count = 0
        self.mean_squares = np.zeros(self.d_in, np.float64)
        self.hessian = np.zeros((self.d_in, self.d_in), self.dtype) if hessian else None
        self._gemm = blas.get_blas_funcs("gemm", (self.hessian,)) if hessian else None

    @property
    def dead(self):
        """Inputs that were 0 in every row (SparseGPT sets `H_jj = 1` and their weights to 0)."""
        return self.mean_squares == 0

    @property
    def norms(self):
        """`sqrt(mean_squares)`: proportional to Wanda's `||X_j||_2`."""
        return np.sqrt(self.mean_squares)

    def update(self, rows):
        """Add a batch of rows (a backend tensor or array of shape `(n, d_in)`)."""
        rows = keras.ops.convert_to_numpy(rows)
        if rows.ndim != 2 or rows.shape[1] != self.d_in:
            raise ValueError(f"Expected rows of {self.d_in} features. Received: an array of shape {rows.shape}")
        n = rows.shape[0]
        if n == 0:
            return
        total = self.count + n
        self.mean_squares *= self.count / total
        if self.hessian is not None:
            self.hessian *= self.dtype.type(self.count / total)
        for start in range(0, n, CHUNK_ROWS):
            chunk = rows[start:start + CHUNK_ROWS]
            wide = chunk.astype(np.float64)
            self.mean_squares += np.einsum("ij,ij->j", wide, wide) / total
            if self.hessian is not None:
                # H += (2 / total) X^T X in place (BLAS gemm on H's memory: H is
                # symmetric, so its C-ordered buffer is the F-ordered H^T = H).
                x = chunk.astype(self.dtype)
                self._gemm(2.0 / total, x, x, beta=1.0, c=self.hessian.T, trans_a=True, overwrite_c=True)
        self.count = total

    def release_hessian(self):
        """Free `H` once nothing needs it (SparseGPT's factor replaces it); no more rows can be added."""
        self.hessian = None
        self._gemm = None
        self.count = None

    @property
    def nbytes(self):
        """Bytes held (for memory reports)."""
        return self.mean_squares.nbytes + (self.hessian.nbytes if self.hessian is not None else 0)


def relative_error(hessian, matrix, new_matrix):
    """`||X W - X W'||^2 / ||X W||^2` from `H = (2/N) X^T X` (the constant cancels).

    `matrix` and `new_matrix` are `(d_in, d_out)` arrays. 0 for a layer whose
    outputs are all 0 on the calibration data.

    Example:

    >>> h = np.eye(2)
    >>> relative_error(h, np.array([[1.], [1.]]), np.array([[1.], [0.]]))
    0.5
    """
    h = np.asarray(hessian)  # in its own dtype: no d_in x d_in copy
    w = np.asarray(matrix, h.dtype)
    delta = w - np.asarray(new_matrix, h.dtype)
    total = float(np.einsum("ij,ij->", h @ w, w, dtype=np.float64))
    return float(np.einsum("ij,ij->", h @ delta, delta, dtype=np.float64)) / total if total > 0 else 0.0
