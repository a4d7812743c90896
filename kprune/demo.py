"""The README's demo: prune a small CNN on scikit-learn's bundled digits data.

`run_demo` trains a dense CNN, prunes it during `fit` (PolynomialDecay to 80%:
unstructured on the convolutions, 1x2 blocks on the Dense layers), strips the
wrappers and returns the figures. It never prints; pass `progress` to see
what it is doing (the CLI prints them).
"""

import numpy as np

import keras

from kprune import handlers
from kprune.callbacks import UpdatePruningStep
from kprune.pruning import collect_wrappers, prune_low_magnitude, strip_pruning
from kprune.schedules import PolynomialDecay


def load_digits_data(seed=0):
    """scikit-learn's 8x8 digits as `(x_train, y_train, x_test, y_test)`, NHWC in [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            "The demo uses scikit-learn's bundled digits data: "
            "pip install 'kprune[examples]'"
        ) from e
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    return x[:split], y[:split], x[split:], y[split:]


def demo_model():
    """The demo's CNN: two 3x3 convolutions and two Dense layers on 8x8x1 inputs."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="digits_cnn",
    )


def _compile(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == y))


def run_demo(epochs=10, prune_epochs=10, final_sparsity=0.8, seed=0, progress=None):
    """Train, prune during `fit`, strip; return accuracies and per-layer sparsity.

    Args:
        epochs: epochs of dense training. Defaults to 10.
        prune_epochs: epochs of pruning and fine-tuning. Defaults to 10.
        final_sparsity: target sparsity of every pruned weight. Defaults to 0.8.
        seed: seed for data split and initialization. Defaults to 0.
        progress: optional `callable(str)` told what the demo is doing.

    Returns:
        A dict with `dense_accuracy`, `pruned_accuracy`, `layers` (a list of
        `{"layer", "weight", "shape", "sparsity"}`) and the stripped `model`.
    """
    say = progress or (lambda message: None)
    keras.utils.set_random_seed(seed)
    x_train, y_train, x_test, y_test = load_digits_data(seed)
    say(f"digits: {len(x_train)} training and {len(x_test)} test images (8x8)")

    dense = _compile(demo_model(), 1e-3)
    say(f"training the dense CNN for {epochs} epochs")
    dense.fit(x_train, y_train, batch_size=32, epochs=epochs, verbose=0)
    dense_accuracy = _accuracy(dense, x_test, y_test)
    say(f"dense test accuracy {dense_accuracy:.4f}")

    steps = int(np.ceil(len(x_train) / 32)) * prune_epochs
    schedule = PolynomialDecay(0.0, final_sparsity, begin_step=0, end_step=int(steps * 0.7), frequency=10)

    def clone_function(layer):
        if isinstance(layer, keras.layers.Dense):
            return prune_low_magnitude(layer, pruning_schedule=schedule, block_size=(1, 2))
        if handlers.classify(layer) == "prunable":
            return prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    # tfmot's per-layer pattern: the clone reuses (shares) the trained layers.
    pruned = keras.models.clone_model(dense, clone_function=clone_function)
    _compile(pruned, 5e-4)
    say(f"pruning to {final_sparsity:.0%} during {prune_epochs} epochs of fine-tuning")
    pruned.fit(
        x_train, y_train, batch_size=32, epochs=prune_epochs, verbose=0,
        callbacks=[UpdatePruningStep()],
    )
    layers = []
    for wrapper in collect_wrappers(pruned):
        for variable, mask in wrapper.pruned_weights:
            m = keras.ops.convert_to_numpy(mask)
            layers.append(
                {
                    "layer": wrapper.layer.name,
                    "weight": variable.name,
                    "shape": tuple(variable.shape),
                    "sparsity": float(1.0 - m.mean()),
                }
            )
    stripped = strip_pruning(pruned)
    pruned_accuracy = _accuracy(stripped, x_test, y_test)
    say(f"pruned test accuracy {pruned_accuracy:.4f}")
    return {
        "dense_accuracy": dense_accuracy,
        "pruned_accuracy": pruned_accuracy,
        "layers": layers,
        "model": stripped,
    }
