"""Atomic file writes: a temporary file in the destination directory, then `os.replace`.

A reader (or a search resumed after a crash) sees either the old file or the
whole new one, never a partial write.

Example:

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "state.json")
>>> write_json(path, {"step": 1})
>>> read_json(path)
{'step': 1}
"""

import contextlib
import io
import json
import os
import tempfile

import numpy as np


def write_bytes(path, content):
    """Write `content` (bytes) to `path` atomically: `path` holds either its old
    content or all of `content`. The file keeps the old file's permissions, or
    gets those `open` would give a new one."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isfile(path):
        mode = os.stat(path).st_mode & 0o777
    else:
        umask = os.umask(0o022)
        os.umask(umask)
        mode = 0o666 & ~umask
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_json(path, data):
    """`data` as indented JSON, written atomically."""
    write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_arrays(path, arrays):
    """A list of NumPy arrays as an .npz file (keys a0, a1, ...), written atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **{f"a{i}": np.asarray(a) for i, a in enumerate(arrays)})
    write_bytes(path, buffer.getvalue())


def read_arrays(path):
    with np.load(path) as data:
        return [data[f"a{i}"] for i in range(len(data.files))]
