"""User files kprune reads: .keras models, loaded in Keras' safe mode with one-line errors.

A missing file, a file of the wrong kind and a file Keras cannot load each
give an error that names the argument and the path (the `kprune` command
prints it as one line and exits with status 2), never a deep traceback.
"""

import os

import keras


def check_file(path, argname, suffixes):
    """`path` as a string, if it names an existing file with one of `suffixes`."""
    path = os.fspath(path)
    if not path.endswith(suffixes):
        raise ValueError(
            f"Argument `{argname}` must be a Keras model or a path to a "
            f"{' or '.join(suffixes)} file. Received: {argname}={path!r}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such file: '{path}' (argument `{argname}`).")
    return path


def load_keras_file(path, argname="model"):
    """Load a .keras file with `safe_mode=True`, without its training configuration.

    kprune reads files to count, inspect and export them, so the optimizer and
    loss are not restored (`compile=False`): a file saved on another backend
    names that backend's optimizer class (PyTorch's `torch_sgd`, for one),
    which this backend cannot import.

    Args:
        path: the .keras file.
        argname: the caller's argument name, for error messages. Defaults to
            "model".

    Returns:
        The Keras model.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` does not end in .keras, or Keras cannot load it
            (the message names the path and gives Keras' first line).

    Example:

    >>> load_keras_file("missing.keras")
    Traceback (most recent call last):
    ...
    FileNotFoundError: No such file: 'missing.keras' (argument `model`).
    """
    path = check_file(path, argname, (".keras",))
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # corrupt zip, unknown layer, unsafe lambda, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"Could not load the Keras model '{path}': {first}") from e
