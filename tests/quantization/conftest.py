"""The data of the quantization tests: scikit-learn digits."""

import pytest


@pytest.fixture(scope="session")
def digits():
    """8x8 digits in [0, 1], NHWC: `(x_train, y_train, x_test, y_test)` (1500 / 297)."""
    sklearn = pytest.importorskip("sklearn.datasets")
    data = sklearn.load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int64")
    return x[:1500], y[:1500], x[1500:], y[1500:]
