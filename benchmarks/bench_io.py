"""Atomic result files for the benchmark scripts (run as `python benchmarks/<script>.py`,
so this module is importable as `bench_io`)."""

import json
import os
import tempfile


def write_atomic(path, text):
    """Write `text` to `path` via a temporary file and a rename: a partial file
    never replaces the last good result."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(result, path):
    """`result` as indented, key-sorted JSON, written atomically."""
    write_atomic(path, json.dumps(result, indent=2, sort_keys=True) + "\n")
