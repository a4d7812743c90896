"""Warnings that point at the user's line, however deep in kprune they are raised.

`warn(message)` issues a warning whose location (file and line in the
warning, `pytest.warns`' `filename`) is the first stack frame outside the
kprune package: the user's call of `kprune.netadapt(...)`, not the search
driver three calls down. A fixed `stacklevel` breaks as soon as the code is
refactored; this does not.

Example:

>>> import warnings
>>> with warnings.catch_warnings(record=True) as caught:
...     warnings.simplefilter("always")
...     warn("the budget is NOT met")
>>> caught[0].filename == __file__ or caught[0].filename.startswith("<doctest")
True
"""

import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the kprune folder


def _inside_kprune(filename):
    path = os.path.abspath(filename)
    return path == _PACKAGE or path.startswith(_PACKAGE + os.sep)


def user_stacklevel():
    """The `stacklevel` that makes a warning issued by this function's caller
    point at the first frame outside the kprune package."""
    frame, level = sys._getframe(1), 1
    while frame is not None and _inside_kprune(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level


def warn(message, category=UserWarning):
    """`warnings.warn(message, category)`, located at the user's call into kprune."""
    warnings.warn(message, category, stacklevel=user_stacklevel())
