"""Native (C++) log lines of TensorFlow, its converter and LiteRT.

TensorFlow 2.21 prints `I0000 ...` lines (oneDNN, CUDA, CPU features) while it
is imported, before its logging is initialized, whatever
`TF_CPP_MIN_LOG_LEVEL` says; the converter and LiteRT print more while they
run. They are written by C++ to file descriptor 2, so the only way to keep
them off a terminal is to point that descriptor elsewhere while they run:
`quiet_native_logs()`. The `kprune` command (`kprune ...`, `python -m
kprune ...`) imports TensorFlow that way unless `--verbose` is given; a
program that imports kprune as a library is left alone.

Example:

>>> with quiet_native_logs():
...     pass
>>> running_as_command(["train.py"], ["python", "train.py"])
False
"""

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def quiet_native_logs(enabled=True):
    """Send what native code writes to stderr (TensorFlow's and LiteRT's C++
    logs) to a temporary file while the block runs. Python's own `sys.stderr`
    is left alone, so warnings and tracebacks still show."""
    if not enabled:
        yield
        return
    try:
        fd = sys.__stderr__.fileno()
    except (AttributeError, ValueError, OSError):  # no real stderr (some notebooks)
        yield
        return
    sys.__stderr__.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            sys.__stderr__.flush()
            os.dup2(saved, fd)
            os.close(saved)


def running_as_command(argv=None, orig_argv=None):
    """Whether this process is the `kprune` command.

    Example:

    >>> running_as_command(["/usr/bin/kprune", "demo"], ["python", "/usr/bin/kprune", "demo"])
    True
    >>> running_as_command(["-m"], ["python", "-m", "kprune", "export", "a.keras"])
    True
    """
    argv = sys.argv if argv is None else argv
    orig = list(getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv)
    if argv and os.path.basename(argv[0]) in ("kprune", "kprune.exe"):
        return True
    return any(a == "-m" and b == "kprune" for a, b in zip(orig, orig[1:]))


def import_tensorflow_quietly_for_command():
    """For the `kprune` command without --verbose: import TensorFlow with its
    native log lines kept off the terminal (later imports reuse it)."""
    args = list(getattr(sys, "orig_argv", [])) or list(sys.argv)
    if running_as_command() and "--verbose" not in args:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with quiet_native_logs():
            import tensorflow  # noqa: F401
