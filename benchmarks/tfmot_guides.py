#!/usr/bin/env python
"""tfmot's four pruning guides on scikit-learn digits: the reference figures.

Runs the code of tfmot's pruning guides (`tensorflow_model_optimization/g3doc/
guide/pruning/`: `pruning_with_keras`, `comprehensive_guide`,
`pruning_for_on_device_inference`, `pruning_with_sparsity_2_by_4`) with tfmot
itself, on the data and step counts that `tests/integration/test_tfmot_guides.py` uses for
the kprune port, and records what the test compares: every pruned weight's
final sparsity (fraction of zeros in its mask), the `pruning_step` after
training, the parameter counts `model.summary()` shows, the TensorBoard tags of
`PruningSummaries` and, for a small schedule, the sparsity after every batch.

MNIST/CIFAR-10 are replaced by `sklearn.datasets.load_digits` (8x8 images
enlarged by pixel repetition and zero padding to 28x28, or to 32x32x3); the
first 1600 images train, the other 197 test. The training lengths are the
guides' except where stated ("steps" in the output).

Usage (tfmot needs tf_keras; TF_USE_LEGACY_KERAS must be set before
TensorFlow is imported):

    pip install tf-keras tensorflow-model-optimization scikit-learn
    TF_USE_LEGACY_KERAS=1 python benchmarks/tfmot_guides.py [--out PATH]

Writes `benchmarks/results/tfmot_guides.json` and prints a table.
"""

import argparse
import glob
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    sys.exit("Run with TF_USE_LEGACY_KERAS=1 (tfmot needs tf_keras).")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402
from bench_io import write_json  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "tfmot_guides.json")
N_TRAIN = 1600


def digits(size=28, channels=1):
    """Digits as MNIST-like images in [0, 1]: `(train, test)` pairs of `(x, y)`."""
    data = load_digits()
    images = data.images / 16.0
    factor = size // 8
    images = np.kron(images, np.ones((factor, factor)))
    pad = (size - 8 * factor) // 2
    images = np.pad(images, ((0, 0), (pad, size - 8 * factor - pad), (pad, size - 8 * factor - pad)))
    if channels > 1:
        images = np.repeat(images[..., None], channels, axis=-1)
    images = images.astype("float32")
    labels = data.target.astype("int64")
    return (images[:N_TRAIN], labels[:N_TRAIN]), (images[N_TRAIN:], labels[N_TRAIN:])


def sparsities(model):
    """`{"<wrapper>/<weight>": fraction of zeros in its mask}` and the steps."""
    result, steps = {}, set()
    for layer in pruning_wrapper.collect_prunable_layers(model):
        for weight, mask, _ in layer.pruning_vars:
            name = weight.name.split("/")[-1].split(":")[0]
            result[f"{layer.name}/{name}"] = float(1.0 - np.mean(mask.numpy()))
        steps.add(int(layer.pruning_step.numpy()))
    return result, sorted(steps)


def param_counts(model):
    return {"total": int(model.count_params()), **{l.name: int(l.count_params()) for l in model.layers}}


def tags(log_dir):
    found = set()
    for path in glob.glob(os.path.join(log_dir, "**", "events*"), recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.add((os.path.relpath(os.path.dirname(path), log_dir), value.tag))
    return sorted(f"{d}:{t}" for d, t in found)


# ------------------------------------------------------------ pruning_with_keras
def guide_pruning_with_keras(batch_size):
    (train_images, train_labels), (test_images, test_labels) = digits(28)
    model = keras.Sequential([
        keras.layers.InputLayer(input_shape=(28, 28)),
        keras.layers.Reshape(target_shape=(28, 28, 1)),
        keras.layers.Conv2D(filters=12, kernel_size=(3, 3), activation='relu'),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(10)
    ])
    model.compile(optimizer='adam',
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=['accuracy'])
    model.fit(train_images, train_labels, epochs=1, validation_split=0.1, verbose=0)

    prune_low_magnitude = tfmot.sparsity.keras.prune_low_magnitude
    epochs = 2
    validation_split = 0.1
    num_images = train_images.shape[0] * (1 - validation_split)
    end_step = np.ceil(num_images / batch_size).astype(np.int32) * epochs
    pruning_params = {
        'pruning_schedule': tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.50,
                                                                 final_sparsity=0.80,
                                                                 begin_step=0,
                                                                 end_step=end_step)
    }
    model_for_pruning = prune_low_magnitude(model, **pruning_params)
    model_for_pruning.compile(optimizer='adam',
                              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                              metrics=['accuracy'])
    logdir = tempfile.mkdtemp()
    callbacks = [
        tfmot.sparsity.keras.UpdatePruningStep(),
        tfmot.sparsity.keras.PruningSummaries(log_dir=logdir),
    ]
    model_for_pruning.fit(train_images, train_labels, batch_size=batch_size, epochs=epochs,
                          validation_split=validation_split, callbacks=callbacks, verbose=0)
    final, steps = sparsities(model_for_pruning)
    return {
        "batch_size": batch_size, "end_step": int(end_step), "steps": steps, "sparsity": final,
        "params": param_counts(model_for_pruning), "tags": tags(logdir),
    }


# ----------------------------------------------------------- comprehensive_guide
def guide_comprehensive():
    out = {}
    input_shape = [20]
    x_train = np.random.randn(1, 20).astype(np.float32)
    y_train = keras.utils.to_categorical(np.random.randn(1), num_classes=20)

    def setup_model():
        return keras.Sequential([
            keras.layers.Dense(20, input_shape=input_shape),
            keras.layers.Flatten()
        ])

    def setup_pretrained_weights():
        model = setup_model()
        model.compile(loss=keras.losses.categorical_crossentropy, optimizer='adam', metrics=['accuracy'])
        model.fit(x_train, y_train, verbose=0)
        _, pretrained_weights = tempfile.mkstemp('.tf')
        model.save_weights(pretrained_weights)
        return pretrained_weights

    pretrained_weights = setup_pretrained_weights()

    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    out["whole_model_params"] = param_counts(tfmot.sparsity.keras.prune_low_magnitude(base_model))

    def apply_pruning_to_dense(layer):
        if isinstance(layer, keras.layers.Dense):
            return tfmot.sparsity.keras.prune_low_magnitude(layer)
        return layer

    base_model = setup_model()
    out["clone_params"] = param_counts(keras.models.clone_model(base_model, clone_function=apply_pruning_to_dense))

    i = keras.Input(shape=(20,))
    x = tfmot.sparsity.keras.prune_low_magnitude(keras.layers.Dense(10))(i)
    o = keras.layers.Flatten()(x)
    out["functional_params"] = param_counts(keras.Model(inputs=i, outputs=o))

    model_for_pruning = keras.Sequential([
        tfmot.sparsity.keras.prune_low_magnitude(keras.layers.Dense(20, input_shape=input_shape)),
        keras.layers.Flatten()
    ])
    out["sequential_first_layer_params"] = param_counts(model_for_pruning)

    class MyDenseLayer(keras.layers.Dense, tfmot.sparsity.keras.PrunableLayer):
        def get_prunable_weights(self):
            return [self.kernel, self.bias]

    model_for_pruning = keras.Sequential([
        tfmot.sparsity.keras.prune_low_magnitude(MyDenseLayer(20, input_shape=input_shape)),
        keras.layers.Flatten()
    ])
    out["custom_layer_params"] = param_counts(model_for_pruning)

    # fit with UpdatePruningStep and PruningSummaries: 2 epochs of 1 batch.
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(base_model)
    log_dir = tempfile.mkdtemp()
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep(),
                 tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir)]
    model_for_pruning.compile(loss=keras.losses.categorical_crossentropy, optimizer='adam', metrics=['accuracy'])
    model_for_pruning.fit(x_train, y_train, callbacks=callbacks, epochs=2, verbose=0)
    out["fit_sparsity"], out["fit_steps"] = sparsities(model_for_pruning)
    out["fit_tags"] = tags(log_dir)

    # Custom training loop.
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(base_model)
    loss = keras.losses.categorical_crossentropy
    optimizer = keras.optimizers.Adam()
    log_dir = tempfile.mkdtemp()
    unused_arg = -1
    epochs = 2
    batches = 1
    model_for_pruning.optimizer = optimizer
    step_callback = tfmot.sparsity.keras.UpdatePruningStep()
    step_callback.set_model(model_for_pruning)
    log_callback = tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir)
    log_callback.set_model(model_for_pruning)
    step_callback.on_train_begin()
    for _ in range(epochs):
        log_callback.on_epoch_begin(epoch=unused_arg)
        for _ in range(batches):
            step_callback.on_train_batch_begin(batch=unused_arg)
            with tf.GradientTape() as tape:
                logits = model_for_pruning(x_train, training=True)
                loss_value = loss(y_train, logits)
                grads = tape.gradient(loss_value, model_for_pruning.trainable_variables)
                optimizer.apply_gradients(zip(grads, model_for_pruning.trainable_variables))
        step_callback.on_epoch_end(batch=unused_arg)
    out["loop_sparsity"], out["loop_steps"] = sparsities(model_for_pruning)
    out["loop_tags"] = tags(log_dir)

    base_model = setup_model()
    out["block_params"] = param_counts(
        tfmot.sparsity.keras.prune_low_magnitude(base_model, **{'block_size': [1, 16]}))
    return out


# ----------------------------------------------- pruning_for_on_device_inference
def _on_device_model(keepdims):
    return keras.Sequential([
        keras.layers.InputLayer(input_shape=(32, 32, 3)),
        keras.layers.ZeroPadding2D(padding=1),
        keras.layers.Conv2D(filters=8, kernel_size=(3, 3), strides=(2, 2), padding='valid'),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.DepthwiseConv2D(kernel_size=(3, 3), padding='same'),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Conv2D(filters=16, kernel_size=(1, 1)),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.ZeroPadding2D(padding=1),
        keras.layers.DepthwiseConv2D(kernel_size=(3, 3), strides=(2, 2), padding='valid'),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Conv2D(filters=32, kernel_size=(1, 1)),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(keepdims=keepdims),
        keras.layers.Flatten(),
        keras.layers.Dense(10)
    ])


def guide_on_device(batch_size, epochs):
    (x, y), (x_test, y_test) = digits(32, channels=3)
    split = int(len(x) * 0.9)

    def prepare_dataset(ds, buffer_size=None):
        ds = ds.cache()
        if buffer_size:
            ds = ds.shuffle(buffer_size)
        ds = ds.batch(batch_size)
        return ds.prefetch(tf.data.experimental.AUTOTUNE)

    ds_train = prepare_dataset(tf.data.Dataset.from_tensor_slices((x[:split], y[:split])), buffer_size=split)
    ds_val = prepare_dataset(tf.data.Dataset.from_tensor_slices((x[split:], y[split:])))
    dense_model = _on_device_model(keepdims=False)
    dense_model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        optimizer='adam', metrics=['accuracy'])
    dense_model.fit(ds_train, epochs=1, validation_data=ds_val, verbose=0)

    prune_low_magnitude = tfmot.sparsity.keras.prune_low_magnitude
    end_epoch = 5
    num_iterations_per_epoch = len(ds_train)
    end_step = num_iterations_per_epoch * end_epoch
    pruning_params = {
        'pruning_schedule': tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.25,
                                                                 final_sparsity=0.75,
                                                                 begin_step=0,
                                                                 end_step=end_step),
        'pruning_policy': tfmot.sparsity.keras.PruneForLatencyOnXNNPack()
    }
    error = None
    try:
        prune_low_magnitude(dense_model, **pruning_params)
    except ValueError as e:
        error = str(e)
    fixed_dense_model = _on_device_model(keepdims=True)
    fixed_dense_model.set_weights(dense_model.get_weights())
    model_for_pruning = prune_low_magnitude(fixed_dense_model, **pruning_params)
    logdir = tempfile.mkdtemp()
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep(),
                 tfmot.sparsity.keras.PruningSummaries(log_dir=logdir)]
    model_for_pruning.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                              optimizer='adam', metrics=['accuracy'])
    model_for_pruning.fit(ds_train, epochs=epochs, validation_data=ds_val, callbacks=callbacks, verbose=0)
    final, steps = sparsities(model_for_pruning)
    wrapped = [type(l.layer).__name__ if isinstance(l, pruning_wrapper.PruneLowMagnitude) else None
               for l in model_for_pruning.layers]
    return {
        "batch_size": batch_size, "epochs": epochs, "end_step": int(end_step), "steps": steps,
        "sparsity": final, "policy_error": error, "wrapped": [w for w in wrapped if w],
    }


# ------------------------------------------------- pruning_with_sparsity_2_by_4
def guide_2_by_4(batch_size, epochs):
    (train_images, train_labels), _ = digits(28)
    prune_low_magnitude = tfmot.sparsity.keras.prune_low_magnitude
    pruning_params_2_by_4 = {'sparsity_m_by_n': (2, 4)}
    pruning_params_sparsity_0_5 = {
        'pruning_schedule': tfmot.sparsity.keras.ConstantSparsity(target_sparsity=0.5, begin_step=0,
                                                                  frequency=100)
    }
    model = keras.Sequential([
        prune_low_magnitude(
            keras.layers.Conv2D(32, 5, padding='same', activation='relu', input_shape=(28, 28, 1),
                                name="pruning_sparsity_0_5"),
            **pruning_params_sparsity_0_5),
        keras.layers.MaxPooling2D((2, 2), (2, 2), padding='same'),
        prune_low_magnitude(keras.layers.Conv2D(64, 5, padding='same', name="structural_pruning"),
                            **pruning_params_2_by_4),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D((2, 2), (2, 2), padding='same'),
        keras.layers.Flatten(),
        prune_low_magnitude(keras.layers.Dense(1024, activation='relu', name="structural_pruning_dense"),
                            **pruning_params_2_by_4),
        keras.layers.Dropout(0.4),
        keras.layers.Dense(10)
    ])
    model.compile(optimizer='adam',
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=['accuracy'])
    params = param_counts(model)
    model.fit(train_images, train_labels, batch_size=batch_size, epochs=epochs, verbose=0,
              callbacks=tfmot.sparsity.keras.UpdatePruningStep(), validation_split=0.1)
    final, steps = sparsities(model)
    return {"batch_size": batch_size, "epochs": epochs, "steps": steps, "sparsity": final, "params": params}


# ------------------------------------------------------------- step semantics
def schedule_trace():
    """Sparsity of one Dense kernel after each of 20 batches under
    PolynomialDecay(0 -> 0.8, begin 0, end 20, frequency 10), and under a
    scalar-only custom schedule (Python `if`)."""

    class Custom(tfmot.sparsity.keras.PruningSchedule):
        def __call__(self, step):
            if step >= 5:
                return True, 0.5
            return False, 0.0

        def get_config(self):
            return {}

    out = {}
    for name, schedule in (
        ("polynomial", tfmot.sparsity.keras.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=20, frequency=10)),
        ("polynomial_end_not_on_frequency",
         tfmot.sparsity.keras.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=25, frequency=10)),
        ("custom_python_if", Custom()),
    ):
        model = tfmot.sparsity.keras.prune_low_magnitude(
            keras.Sequential([keras.layers.Dense(10, input_shape=(10,))]), pruning_schedule=schedule)
        model.compile("sgd", "mse")
        trace = []

        class Record(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                trace.append(round(float(1.0 - np.mean(model.layers[0].pruning_vars[0][1].numpy())), 4))

        x = np.random.default_rng(0).normal(size=(30, 10)).astype("float32")
        model.fit(x, x, batch_size=1, epochs=1, verbose=0, shuffle=False,
                  callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), Record()])
        out[name] = {"sparsity_after_batch": trace, "pruning_step": int(model.layers[0].pruning_step.numpy())}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    result = {
        "tfmot_version": tfmot.__version__,
        "tf_keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "schedule_trace": schedule_trace(),
    }
    steps = [
        ("pruning_with_keras_aligned", lambda: guide_pruning_with_keras(batch_size=29)),
        ("pruning_with_keras", lambda: guide_pruning_with_keras(batch_size=128)),
        ("comprehensive_guide", guide_comprehensive),
        ("pruning_for_on_device_inference", lambda: guide_on_device(batch_size=72, epochs=6)),
        ("pruning_with_sparsity_2_by_4", lambda: guide_2_by_4(batch_size=128, epochs=2)),
    ]
    for name, run in steps:
        print(f"[tfmot_guides] {name} ...", file=sys.stderr, flush=True)
        result[name] = run()
    write_json(result, args.out)
    print(f"{'guide':36s} {'weight':60s} sparsity")
    for name, _ in steps:
        for weight, value in sorted(result[name].get("sparsity", {}).items()):
            print(f"{name:36s} {weight:60s} {value:.6f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
