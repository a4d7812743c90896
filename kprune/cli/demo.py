"""The README's demo: prune a small CNN on scikit-learn's bundled digits data.

`run_demo` runs the whole pipeline:

1. train a dense CNN;
2. prune it during `fit` (PolynomialDecay to 80%: unstructured on the
   convolutions, 1x2 blocks on the Dense layers);
3. choose channels to remove (L2 norm, `round_to=8`) and remove them;
4. fine-tune the smaller model with its sparsity held;
5. export an int8 TFLite file (calibrated on training images), verified in
   LiteRT, and return the `ExportReport`.

It never prints; pass `progress` to see what it is doing (the CLI prints it).
"""

import keras
import numpy as np

from kprune.channels.oneshot import plan_channels, remove_channels
from kprune.export.convert import quiet_native_logs
from kprune.export.evaluate import evaluate_tflite
from kprune.export.exporter import export_tflite
from kprune.registry import keras_layers
from kprune.sparsity.prune import collect_wrappers, prune_low_magnitude, strip_pruning
from kprune.sparsity.pruning_callbacks import UpdatePruningStep
from kprune.sparsity.pruning_schedule import ConstantSparsity, PolynomialDecay
from kprune.stats.keras_stats import count_macs, count_params


def load_digits_data(seed=0):
    """scikit-learn's 8x8 digits as `(x_train, y_train, x_test, y_test)`, NHWC in [0, 1].

    >>> x_train, y_train, x_test, y_test = load_digits_data()
    >>> x_train.shape, x_test.shape, float(x_train.max())
    ((1437, 8, 8, 1), (360, 8, 8, 1), 1.0)
    """
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


def _per_layer_pattern(schedule):
    def clone_function(layer):
        if isinstance(layer, keras.layers.Dense):
            return prune_low_magnitude(layer, pruning_schedule=schedule, block_size=(1, 2))
        if keras_layers.classify(layer) == "prunable":
            return prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    return clone_function


def _sparsity_rows(pruned):
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
    return layers


def run_demo(
    epochs=10,
    prune_epochs=10,
    final_sparsity=0.8,
    channel_sparsity=0.25,
    finetune_epochs=3,
    output=None,
    seed=0,
    progress=None,
    verbose=False,
):
    """Train, prune during `fit`, remove channels, fine-tune, export int8.

    Args:
        epochs: epochs of dense training. Defaults to 10.
        prune_epochs: epochs of pruning and fine-tuning. Defaults to 10.
        final_sparsity: target sparsity of every pruned weight. Defaults to 0.8.
        channel_sparsity: fraction of channels removed per group (L2 norm,
            multiples of 8 kept); 0 skips removal. Defaults to 0.25.
        finetune_epochs: epochs of fine-tuning after removal. Defaults to 3.
        output: path of the int8 .tflite file, or None to skip the export.
        seed: seed for data split and initialization. Defaults to 0.
        progress: optional `callable(str)` told what the demo is doing.
        verbose: show the converter's and LiteRT's native log lines.
            Defaults to False.

    Returns:
        A dict with `dense_accuracy`, `pruned_accuracy`, `final_accuracy`
        (after removal and fine-tuning), `tflite_accuracy`, `layers` (a list
        of `{"layer", "weight", "shape", "sparsity"}` after pruning),
        `params`/`macs` before and after, the final stripped `model` and the
        `report` (an `ExportReport`, or None).
    """
    say = progress or (lambda message: None)
    keras.utils.set_random_seed(seed)
    x_train, y_train, x_test, y_test = load_digits_data(seed)
    say(f"digits: {len(x_train)} training and {len(x_test)} test images (8x8)")

    dense = _compile(demo_model(), 1e-3)
    say(f"[1/5] training the dense CNN for {epochs} epochs")
    dense.fit(x_train, y_train, batch_size=32, epochs=epochs, verbose=0)
    dense_accuracy = _accuracy(dense, x_test, y_test)
    say(f"      dense test accuracy {dense_accuracy:.4f}")

    steps = int(np.ceil(len(x_train) / 32)) * prune_epochs
    schedule = PolynomialDecay(0.0, final_sparsity, begin_step=0, end_step=int(steps * 0.7), frequency=10)
    # tfmot's per-layer pattern: the clone reuses (shares) the trained layers.
    pruned = keras.models.clone_model(dense, clone_function=_per_layer_pattern(schedule))
    _compile(pruned, 5e-4)
    say(f"[2/5] pruning to {final_sparsity:.0%} during {prune_epochs} epochs "
        "(1x2 blocks on Dense layers)")
    pruned.fit(
        x_train, y_train, batch_size=32, epochs=prune_epochs, verbose=0,
        callbacks=[UpdatePruningStep()],
    )
    layers = _sparsity_rows(pruned)
    stripped = strip_pruning(pruned)
    pruned_accuracy = _accuracy(stripped, x_test, y_test)
    say(f"      pruned test accuracy {pruned_accuracy:.4f}")

    final, final_accuracy = stripped, pruned_accuracy
    if channel_sparsity > 0:
        plan = plan_channels(stripped, channel_sparsity, importance="l2", round_to=8)
        final = remove_channels(stripped, plan)
        say(f"[3/5] removed {plan.num_pruned} channels: {count_params(stripped):,} -> "
            f"{count_params(final):,} parameters, {count_macs(stripped):,} -> "
            f"{count_macs(final):,} MACs")
        # Fine-tune with the sparsity held: masks are recomputed once, at
        # step 1 (the first batch), and the zeros left by pruning score lowest.
        hold = ConstantSparsity(final_sparsity, begin_step=1, end_step=1, frequency=1)
        tuned = keras.models.clone_model(final, clone_function=_per_layer_pattern(hold))
        _compile(tuned, 3e-4)
        say(f"[4/5] fine-tuning the smaller model for {finetune_epochs} epochs")
        tuned.fit(
            x_train, y_train, batch_size=32, epochs=finetune_epochs, verbose=0,
            callbacks=[UpdatePruningStep()],
        )
        final = strip_pruning(tuned)
        final_accuracy = _accuracy(final, x_test, y_test)
        say(f"      test accuracy after removal and fine-tuning {final_accuracy:.4f}")

    report, tflite_accuracy = None, None
    if output is not None:
        say(f"[5/5] exporting int8 TFLite to {output} (calibration: 256 training images)")
        report = export_tflite(final, output, quantize="int8", representative_data=x_train[:256],
                               verbose=verbose)
        with quiet_native_logs(not verbose):
            tflite_accuracy = evaluate_tflite(output, x_test, y_test, batch_size=len(x_test)).accuracy
        say(f"      TFLite int8 test accuracy {tflite_accuracy:.4f}")
    return {
        "dense_accuracy": dense_accuracy,
        "pruned_accuracy": pruned_accuracy,
        "final_accuracy": final_accuracy,
        "tflite_accuracy": tflite_accuracy,
        "layers": layers,
        "params": (count_params(dense), count_params(final, nonzero=True)),
        "macs": (count_macs(dense), count_macs(final)),
        "model": final,
        "report": report,
    }

