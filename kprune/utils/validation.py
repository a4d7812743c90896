"""Argument checks shared across kprune, each raising a Keras-style error.

Every check names the argument, says what it must be and shows what it
received, e.g. "Argument `sparsity` must be in [0, 1). Received:
sparsity=1.5", and returns the value in its canonical type.

Example:

>>> check_sparsity("sparsity", 0.5), check_round_to(8)
(0.5, 8)
>>> check_round_to(0)
Traceback (most recent call last):
...
ValueError: Argument `round_to` must be an integer >= 1. Received: round_to=0
"""

import numbers


def check_sparsity(name, value):
    """Validate a sparsity argument: a float in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a float in [0, 1). "
            f"Received: {name}={value!r} (of type {type(value).__name__})"
        )
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"Argument `{name}` must be in [0, 1). Received: {name}={value}"
        )
    return float(value)


def check_round_to(round_to):
    """Validate a `round_to` argument: an integer >= 1."""
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"Argument `round_to` must be an integer >= 1. Received: round_to={round_to!r}")
    return round_to
