"""Fine-tuning steps the pruning procedures call between their stages.

`fine_tuner(x, y, loss)` makes the `fine_tune(model)` callable that
`kprune.prune_layerwise` (and any procedure that takes one) runs after each
pruning step: a fresh optimizer compiled onto the pruned model, then `fit`.
"""

import keras


def fine_tuner(x, y=None, loss=None, optimizer="adam", epochs=1, batch_size=32, steps_per_epoch=None):
    """A fine-tune step for `prune_layerwise`: compile with a fresh optimizer, fit.

    Args:
        x: training inputs (anything `Model.fit` takes, e.g. an array or a
            `tf.data.Dataset` of `(x, y)` batches).
        y: training targets (None when `x` yields them). Defaults to None.
        loss: a Keras loss or its name (required).
        optimizer: an optimizer name, config dict or instance; every call
            compiles a fresh copy (each pruned model is a new model).
            Defaults to `"adam"`.
        epochs: epochs per call. Defaults to 1.
        batch_size: for array inputs. Defaults to 32.
        steps_per_epoch: batches per epoch (None: all). Defaults to None.

    Returns:
        A callable `fine_tune(model)` that trains `model` in place.

    Example:

    >>> import numpy as np, kprune
    >>> tune = kprune.fine_tuner(np.zeros((4, 3)), np.zeros(4), "mse", epochs=2)
    """
    if loss is None:
        raise ValueError("Argument `loss` is required (a Keras loss or its name). Received: loss=None")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Argument `{name}` must be an integer >= 1. Received: {name}={value!r}")
    config = keras.optimizers.serialize(optimizer) if isinstance(optimizer, keras.optimizers.Optimizer) else optimizer

    def fine_tune(model):
        model.compile(optimizer=keras.optimizers.get(config), loss=loss)
        fit_kwargs = {} if steps_per_epoch is None else {"steps_per_epoch": steps_per_epoch}
        if y is None:
            model.fit(x, epochs=epochs, verbose=0, **fit_kwargs)
        else:
            model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, **fit_kwargs)

    return fine_tune
