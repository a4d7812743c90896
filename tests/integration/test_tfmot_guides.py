"""tfmot's four pruning guides, ported mechanically to kprune, run on digits.

The code is that of `tensorflow_model_optimization/g3doc/guide/pruning/`
(`pruning_with_keras`, `comprehensive_guide`, `pruning_for_on_device_inference`,
`pruning_with_sparsity_2_by_4`), cell by cell, with `tfmot.sparsity.keras.X`
-> `kprune.X`, `tf.keras`/`tf_keras` -> `keras`, and MNIST/CIFAR-10 -> scikit-
learn digits (8x8, enlarged by pixel repetition and zero padding to 28x28, or
to 32x32x3; the first 1600 images train, the other 197 test). Changes beyond
that are Keras 3's, marked `# Keras 3:`, or shorter runs, marked `# shorter:`
(pre-training epochs only; the pruning runs are the guides' lengths, except
the batch sizes chosen so that `end_step` falls on a pruning turn: marked
`# steps:`). Cells that only print or show TensorBoard are left out.

The final per-layer sparsities are compared with tfmot's on the same steps.
TFMOT below was measured with tfmot 0.8.1 (tf_keras 2.21.0, TensorFlow
2.21.0) running the same code in tf_keras:

    pip install tf-keras tensorflow-model-optimization   # in a separate venv
    TF_USE_LEGACY_KERAS=1 python benchmarks/tfmot_guides.py

(results in benchmarks/results/tfmot_guides.json). Sparsities are per pruned
weight, in model order, as (inner layer type, weight, fraction of zeros);
the test compares exact zero counts.
"""

import glob
import os
import re
import tempfile
import warnings
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import kprune
from kprune.sparsity.prune import collect_wrappers

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

pytest.importorskip("sklearn")
pytest.importorskip("tensorboard")

# tfmot 0.8.1 on the same data and steps (see the module docstring).
TFMOT = {
    # batch_size 29: end_step = ceil(1440 / 29) * 2 = 100, a turn of frequency 100.
    "pruning_with_keras_aligned": {
        "steps": 100,
        "sparsity": [("Conv2D", "kernel", 0.7962962985038757), ("Dense", "kernel", 0.800000011920929)],
    },
    # The guide's batch_size 128: end_step = 24 < frequency, so tfmot never prunes.
    "pruning_with_keras": {
        "steps": 24,
        "sparsity": [("Conv2D", "kernel", 0.0), ("Dense", "kernel", 0.0)],
    },
    "comprehensive_guide": {
        "fit_steps": 2, "fit_sparsity": [("Dense", "kernel", 0.0)],
        "loop_steps": 2, "loop_sparsity": [("Dense", "kernel", 0.0)],
        # model.summary() parameter counts of the wrapped layers.
        "params": {"whole_model": 822, "clone": 822, "functional": 412,
                   "sequential_first_layer": 822, "custom_layer": 843, "block": 822},
    },
    # batch_size 72: end_step = 20 batches * 5 epochs = 100; 6 epochs = 120 steps.
    "pruning_for_on_device_inference": {
        "steps": 120,
        "policy_error": None,
        "sparsity": [("Conv2D", "kernel", 0.75), ("Conv2D", "kernel", 0.75)],
    },
    "pruning_with_sparsity_2_by_4": {
        "steps": 24,
        "sparsity": [("Conv2D", "kernel", 0.0), ("Conv2D", "kernel", 0.5), ("Dense", "kernel", 0.5)],
    },
}


def digits(size=28, channels=1):
    """Digits as MNIST-like images in [0, 1]: `(train, test)` pairs of `(x, y)`."""
    from sklearn.datasets import load_digits

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
    return (images[:1600], labels[:1600]), (images[1600:], labels[1600:])


def sparsities(model):
    """`[(inner layer type, weight, fraction of zeros in the mask)]` and the steps."""
    rows, steps = [], set()
    for w in collect_wrappers(model):
        for variable, mask in w.pruned_weights:
            m = keras.ops.convert_to_numpy(mask)
            rows.append((type(w.layer).__name__, variable.name, float(np.mean(m == 0)), m.size))
        steps.add(int(keras.ops.convert_to_numpy(w.pruning_step)))
    return rows, steps


def assert_matches_tfmot(model, expected, steps):
    rows, seen = sparsities(model)
    assert seen == {steps}
    assert [(t, n) for t, n, _, _ in rows] == [(t, n) for t, n, _ in expected]
    for (t, n, ours, size), (_, _, theirs) in zip(rows, expected):
        assert round(ours * size) == round(theirs * size), (t, n, ours, theirs)


def event_tags(log_dir):
    tags = set()
    for path in glob.glob(os.path.join(log_dir, "**", "events*"), recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.add((os.path.relpath(os.path.dirname(path), log_dir), value.tag))
    return tags


def tfmot_tags(model):
    """The tags tfmot's PruningSummaries writes for `model` (one mask per layer here)."""
    return {("metrics", f"{w.name}/{kind}:0/{what}") for w in collect_wrappers(model)
            for kind, what in (("mask", "sparsity"), ("threshold", "threshold"))}


# ------------------------------------------------------------ pruning_with_keras
def run_pruning_with_keras(batch_size, export):
    # cell 9
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
    model.fit(train_images, train_labels, epochs=1, validation_split=0.1, verbose=0)  # shorter: 4 epochs
    # cell 11
    _, baseline_model_accuracy = model.evaluate(test_images, test_labels, verbose=0)
    _, keras_file = tempfile.mkstemp('.h5')
    keras.models.save_model(model, keras_file, include_optimizer=False)

    # cell 15
    prune_low_magnitude = kprune.prune_low_magnitude
    epochs = 2
    validation_split = 0.1
    num_images = train_images.shape[0] * (1 - validation_split)
    end_step = np.ceil(num_images / batch_size).astype(np.int32) * epochs
    pruning_params = {
        'pruning_schedule': kprune.PolynomialDecay(initial_sparsity=0.50,
                                                   final_sparsity=0.80,
                                                   begin_step=0,
                                                   end_step=end_step)
    }
    model_for_pruning = prune_low_magnitude(model, **pruning_params)
    model_for_pruning.compile(optimizer='adam',
                              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                              metrics=['accuracy'])
    model_for_pruning.summary(print_fn=lambda *args, **kwargs: None)
    # cell 18
    logdir = tempfile.mkdtemp()
    callbacks = [
        kprune.UpdatePruningStep(),
        kprune.PruningSummaries(log_dir=logdir),
    ]
    model_for_pruning.fit(train_images, train_labels,
                          batch_size=batch_size, epochs=epochs, validation_split=validation_split,
                          callbacks=callbacks, verbose=0)
    result = {"model": model_for_pruning, "end_step": int(end_step), "logdir": logdir}
    if not export:
        return result
    # cell 20
    _, model_for_pruning_accuracy = model_for_pruning.evaluate(test_images, test_labels, verbose=0)
    # cell 26
    model_for_export = kprune.strip_pruning(model_for_pruning)
    _, pruned_keras_file = tempfile.mkstemp('.h5')
    keras.models.save_model(model_for_export, pruned_keras_file, include_optimizer=False)
    # cell 28
    converter = tf.lite.TFLiteConverter.from_keras_model(model_for_export)
    pruned_tflite_model = converter.convert()
    _, pruned_tflite_file = tempfile.mkstemp('.tflite')
    with open(pruned_tflite_file, 'wb') as f:
        f.write(pruned_tflite_model)

    # cell 30
    def get_gzipped_model_size(file):
        _, zipped_file = tempfile.mkstemp('.zip')
        with zipfile.ZipFile(zipped_file, 'w', compression=zipfile.ZIP_DEFLATED) as f:
            f.write(file)
        return os.path.getsize(zipped_file)

    # cell 32
    sizes = {name: get_gzipped_model_size(path) for name, path in
             (("baseline", keras_file), ("pruned_keras", pruned_keras_file), ("pruned_tflite", pruned_tflite_file))}
    # cell 35
    converter = tf.lite.TFLiteConverter.from_keras_model(model_for_export)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    quantized_and_pruned_tflite_model = converter.convert()
    _, quantized_and_pruned_tflite_file = tempfile.mkstemp('.tflite')
    with open(quantized_and_pruned_tflite_file, 'wb') as f:
        f.write(quantized_and_pruned_tflite_model)
    sizes["quantized_tflite"] = get_gzipped_model_size(quantized_and_pruned_tflite_file)

    # cell 38
    def evaluate_model(interpreter):
        input_index = interpreter.get_input_details()[0]["index"]
        output_index = interpreter.get_output_details()[0]["index"]
        prediction_digits = []
        for i, test_image in enumerate(test_images):
            test_image = np.expand_dims(test_image, axis=0).astype(np.float32)
            interpreter.set_tensor(input_index, test_image)
            interpreter.invoke()
            output = interpreter.tensor(output_index)
            digit = np.argmax(output()[0])
            prediction_digits.append(digit)
        prediction_digits = np.array(prediction_digits)
        return (prediction_digits == test_labels).mean()

    # cell 40
    interpreter = tf.lite.Interpreter(model_content=quantized_and_pruned_tflite_model)
    interpreter.allocate_tensors()
    test_accuracy = evaluate_model(interpreter)
    for f in (keras_file, pruned_keras_file, pruned_tflite_file, quantized_and_pruned_tflite_file):
        os.remove(f)
    result.update(export=model_for_export, sizes=sizes, accuracy=(
        baseline_model_accuracy, model_for_pruning_accuracy, test_accuracy))
    return result


def test_pruning_with_keras():
    run = run_pruning_with_keras(batch_size=29, export=True)  # steps: the guide's 128, see below
    expected = TFMOT["pruning_with_keras_aligned"]
    assert run["end_step"] == expected["steps"] == 100
    assert_matches_tfmot(run["model"], expected["sparsity"], expected["steps"])
    # PruningSummaries writes tfmot's tags (and kprune's own).
    tags = event_tags(run["logdir"])
    assert tfmot_tags(run["model"]) <= tags
    assert {("train", f"sparsity/{w.name}/kernel") for w in collect_wrappers(run["model"])} <= tags
    # The exported model is 80% zeros, compresses, and still classifies digits.
    kernels = [l.kernel for l in run["export"].layers if hasattr(l, "kernel")]
    assert [round(float(np.mean(keras.ops.convert_to_numpy(k) == 0)), 3) for k in kernels] == [0.796, 0.8]
    assert run["sizes"]["pruned_tflite"] < 0.5 * run["sizes"]["baseline"]
    assert run["sizes"]["quantized_tflite"] < run["sizes"]["pruned_tflite"]
    assert min(run["accuracy"]) > 0.5


def test_pruning_with_keras_guide_batch_size_keeps_the_final_sparsity_guarantee():
    # With the guide's batch_size=128, end_step = 12 * 2 = 24 is not a turn of
    # frequency=100: tfmot never prunes. kprune always makes end_step a turn
    # (deliberately), so the guide's 0.8 is applied before the last batch.
    run = run_pruning_with_keras(batch_size=128, export=False)
    expected = TFMOT["pruning_with_keras"]
    assert run["end_step"] == expected["steps"] == 24
    assert all(s == 0.0 for _, _, s in expected["sparsity"])
    rows, steps = sparsities(run["model"])
    assert steps == {24}
    assert [round(ours * size) for _, _, ours, size in rows] == [round(0.8 * size) for *_, size in rows]


# ----------------------------------------------------------- comprehensive_guide
def test_comprehensive_guide(tmp_path):
    counts = {}

    def params(model, key):
        # model.summary() shows the counts (tfmot's too); keep them for the check.
        lines = []
        model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
        wrapped = [l for l in model.layers if isinstance(l, kprune.PruneLowMagnitude)]
        assert len(wrapped) == 1 and wrapped[0].built
        counts[key] = (wrapped[0], "\n".join(lines))

    # cell 7
    input_shape = [20]
    x_train = np.random.randn(1, 20).astype(np.float32)
    y_train = keras.utils.to_categorical(np.random.randn(1), num_classes=20)

    def setup_model():
        model = keras.Sequential([
            keras.layers.Dense(20, input_shape=input_shape),
            keras.layers.Flatten()
        ])
        return model

    def setup_pretrained_weights():
        model = setup_model()
        model.compile(loss=keras.losses.categorical_crossentropy, optimizer='adam', metrics=['accuracy'])
        model.fit(x_train, y_train, verbose=0)
        _, pretrained_weights = tempfile.mkstemp('.weights.h5')  # Keras 3: was '.tf'
        model.save_weights(pretrained_weights)
        return pretrained_weights

    def get_gzipped_model_size(model):
        _, keras_file = tempfile.mkstemp('.h5')
        model.save(keras_file, include_optimizer=False)
        _, zipped_file = tempfile.mkstemp('.zip')
        with zipfile.ZipFile(zipped_file, 'w', compression=zipfile.ZIP_DEFLATED) as f:
            f.write(keras_file)
        return os.path.getsize(zipped_file)

    setup_model()
    pretrained_weights = setup_pretrained_weights()

    # cell 11
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    model_for_pruning = kprune.prune_low_magnitude(base_model)
    params(model_for_pruning, "whole_model")

    # cell 14
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)

    def apply_pruning_to_dense(layer):
        if isinstance(layer, keras.layers.Dense):
            return kprune.prune_low_magnitude(layer)
        return layer

    model_for_pruning = keras.models.clone_model(base_model, clone_function=apply_pruning_to_dense)
    params(model_for_pruning, "clone")

    # cell 20
    i = keras.Input(shape=(20,))
    x = kprune.prune_low_magnitude(keras.layers.Dense(10))(i)
    o = keras.layers.Flatten()(x)
    model_for_pruning = keras.Model(inputs=i, outputs=o)
    params(model_for_pruning, "functional")

    # cell 22: the wrapped first layer carries its input_shape, so the model is built.
    model_for_pruning = keras.Sequential([
        kprune.prune_low_magnitude(keras.layers.Dense(20, input_shape=input_shape)),
        keras.layers.Flatten()
    ])
    params(model_for_pruning, "sequential_first_layer")

    # cell 25
    class MyDenseLayer(keras.layers.Dense, kprune.PrunableLayer):
        def get_prunable_weights(self):
            return [self.kernel, self.bias]

    model_for_pruning = keras.Sequential([
        kprune.prune_low_magnitude(MyDenseLayer(20, input_shape=input_shape)),
        keras.layers.Flatten()
    ])
    params(model_for_pruning, "custom_layer")

    # cell 29
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    model_for_pruning = kprune.prune_low_magnitude(base_model)
    log_dir = tempfile.mkdtemp()
    callbacks = [kprune.UpdatePruningStep(), kprune.PruningSummaries(log_dir=log_dir)]
    model_for_pruning.compile(loss=keras.losses.categorical_crossentropy, optimizer='adam', metrics=['accuracy'])
    model_for_pruning.fit(x_train, y_train, callbacks=callbacks, epochs=2, verbose=0)
    assert_matches_tfmot(model_for_pruning, TFMOT["comprehensive_guide"]["fit_sparsity"],
                         TFMOT["comprehensive_guide"]["fit_steps"])
    assert tfmot_tags(model_for_pruning) <= event_tags(log_dir)

    # cell 33
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    model_for_pruning = kprune.prune_low_magnitude(base_model)
    loss = keras.losses.categorical_crossentropy
    optimizer = keras.optimizers.Adam()
    log_dir = tempfile.mkdtemp()
    unused_arg = -1
    epochs = 2
    batches = 1
    model_for_pruning.optimizer = optimizer
    step_callback = kprune.UpdatePruningStep()
    step_callback.set_model(model_for_pruning)
    log_callback = kprune.PruningSummaries(log_dir=log_dir)
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
    assert_matches_tfmot(model_for_pruning, TFMOT["comprehensive_guide"]["loop_sparsity"],
                         TFMOT["comprehensive_guide"]["loop_steps"])
    assert tfmot_tags(model_for_pruning) <= event_tags(log_dir)

    # cell 39
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    model_for_pruning = kprune.prune_low_magnitude(base_model)
    _, keras_model_file = tempfile.mkstemp('.h5')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras 3 calls .h5 legacy
        model_for_pruning.save(keras_model_file, include_optimizer=True)
        # cell 41
        with kprune.prune_scope():
            loaded_model = keras.models.load_model(keras_model_file)
    loaded_model.summary(print_fn=lambda *args, **kwargs: None)
    assert [type(l).__name__ for l in loaded_model.layers] == ["PruneLowMagnitude", "Flatten"]

    # cell 45
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    model_for_pruning = kprune.prune_low_magnitude(base_model)
    model_for_export = kprune.strip_pruning(model_for_pruning)
    model_for_export.summary(print_fn=lambda *args, **kwargs: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sizes = (get_gzipped_model_size(model_for_pruning), get_gzipped_model_size(model_for_export))
    assert sizes[1] < sizes[0]

    # cell 48
    base_model = setup_model()
    pruning_params = {'block_size': [1, 16]}
    model_for_pruning = kprune.prune_low_magnitude(base_model, **pruning_params)
    params(model_for_pruning, "block")

    # Parameter counts: tfmot's wrapper also holds one threshold per pruned
    # weight; otherwise the counts are the same (inner layer + masks + step).
    for key, tfmot_count in TFMOT["comprehensive_guide"]["params"].items():
        wrapper, text = counts[key]
        assert wrapper.count_params() == tfmot_count - len(wrapper.pruned_weights), key
        assert f"{wrapper.count_params():,}" in text, key


# ----------------------------------------------- pruning_for_on_device_inference
def test_pruning_for_on_device_inference():
    # cell 10, with digits for CIFAR-10 (tfds): the same splits, as tf.data.
    (x, y), (x_test, y_test) = digits(32, channels=3)
    split = int(len(x) * 0.9)
    batch_size = 72  # steps: the guide's 128; see TFMOT

    def prepare_dataset(ds, buffer_size=None):
        ds = ds.cache()
        if buffer_size:
            ds = ds.shuffle(buffer_size)
        ds = ds.batch(batch_size)
        ds = ds.prefetch(tf.data.experimental.AUTOTUNE)
        return ds

    ds_train = prepare_dataset(tf.data.Dataset.from_tensor_slices((x[:split], y[:split])), buffer_size=split)
    ds_val = prepare_dataset(tf.data.Dataset.from_tensor_slices((x[split:], y[split:])))
    ds_test = prepare_dataset(tf.data.Dataset.from_tensor_slices((x_test, y_test)))

    def model(keepdims):
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

    dense_model = model(keepdims=False)
    dense_model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        optimizer='adam', metrics=['accuracy'])
    dense_model.fit(ds_train, epochs=1, validation_data=ds_val, verbose=0)  # shorter: 10 epochs
    _, dense_model_accuracy = dense_model.evaluate(ds_test, verbose=0)

    # cell 13
    prune_low_magnitude = kprune.prune_low_magnitude
    end_epoch = 5
    num_iterations_per_epoch = len(ds_train)
    end_step = num_iterations_per_epoch * end_epoch
    pruning_params = {
        'pruning_schedule': kprune.PolynomialDecay(initial_sparsity=0.25,
                                                   final_sparsity=0.75,
                                                   begin_step=0,
                                                   end_step=end_step),
        'pruning_policy': kprune.PruneForLatencyOnXNNPack()
    }
    error = None
    try:
        model_for_pruning = prune_low_magnitude(dense_model, **pruning_params)
    except ValueError as e:
        error = str(e)
    # tfmot 0.8.1 accepts keepdims=False (the guide's text predates that).
    assert error == TFMOT["pruning_for_on_device_inference"]["policy_error"]

    # cell 15
    fixed_dense_model = model(keepdims=True)
    fixed_dense_model.set_weights(dense_model.get_weights())
    model_for_pruning = prune_low_magnitude(fixed_dense_model, **pruning_params)
    wrapped = [w.layer for w in collect_wrappers(model_for_pruning)]
    assert [(type(l).__name__, tuple(l.kernel_size)) for l in wrapped] == [("Conv2D", (1, 1))] * 2

    # cell 19
    logdir = tempfile.mkdtemp()
    callbacks = [kprune.UpdatePruningStep(), kprune.PruningSummaries(log_dir=logdir)]
    model_for_pruning.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                              optimizer='adam', metrics=['accuracy'])
    model_for_pruning.fit(ds_train, epochs=6, validation_data=ds_val, callbacks=callbacks,
                          verbose=0)  # steps: 15 epochs in the guide, 6 reach end_step and go on
    _, pruned_model_accuracy = model_for_pruning.evaluate(ds_test, verbose=0)
    expected = TFMOT["pruning_for_on_device_inference"]
    assert end_step == 100
    assert_matches_tfmot(model_for_pruning, expected["sparsity"], expected["steps"])
    assert tfmot_tags(model_for_pruning) <= event_tags(logdir)

    # cell 24
    converter = tf.lite.TFLiteConverter.from_keras_model(dense_model)
    dense_tflite_model = converter.convert()
    model_for_export = kprune.strip_pruning(model_for_pruning)
    converter = tf.lite.TFLiteConverter.from_keras_model(model_for_export)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    pruned_tflite_model = converter.convert()
    assert len(pruned_tflite_model) > 0 and len(dense_tflite_model) > 0
    assert np.isfinite([dense_model_accuracy, pruned_model_accuracy]).all()


def test_pruning_policy_rejects_what_xnnpack_cannot_run():
    def model(middle):
        return keras.Sequential([
            keras.Input((32, 32, 3)), keras.layers.ZeroPadding2D(1),
            keras.layers.Conv2D(8, 3, strides=2), middle,
            keras.layers.GlobalAveragePooling2D(keepdims=True), keras.layers.Flatten(),
            keras.layers.Dense(10),
        ])

    policy = kprune.PruneForLatencyOnXNNPack()
    with pytest.raises(ValueError, match=r"Layer 'big' \(Conv2D\) is not supported for the "
                                         "PruneForLatencyOnXNNPack pruning policy"):
        kprune.prune_low_magnitude(model(keras.layers.Conv2D(8, 3, padding="same", name="big")),
                                   pruning_policy=policy)
    no_start = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 1),
                                 keras.layers.GlobalAveragePooling2D()])
    with pytest.raises(ValueError, match="could not find a `Conv2D` 3x3 layer with stride 2x2"):
        kprune.prune_low_magnitude(no_start, pruning_policy=policy)
    with pytest.raises(ValueError, match="Argument `pruning_policy` applies to a whole"):
        kprune.prune_low_magnitude(keras.layers.Dense(2), pruning_policy=policy)
    with pytest.raises(TypeError, match="Received: pruning_policy='xnnpack'"):
        kprune.prune_low_magnitude(no_start, pruning_policy="xnnpack")


# ------------------------------------------------- pruning_with_sparsity_2_by_4
def test_pruning_with_sparsity_2_by_4(tmp_path):
    # cell 12
    (train_images, train_labels), (test_images, test_labels) = digits(28)
    prune_low_magnitude = kprune.prune_low_magnitude
    # cell 15
    pruning_params_2_by_4 = {'sparsity_m_by_n': (2, 4)}
    # cell 17
    pruning_params_sparsity_0_5 = {
        'pruning_schedule': kprune.ConstantSparsity(target_sparsity=0.5, begin_step=0, frequency=100)
    }
    # cell 19
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
    lines = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    assert model.built and f"{model.count_params():,}" in "\n".join(lines)

    # cell 21
    batch_size = 128
    epochs = 2
    model.fit(train_images, train_labels, batch_size=batch_size, epochs=epochs, verbose=0,
              callbacks=kprune.UpdatePruningStep(), validation_split=0.1)
    _, pruned_model_accuracy = model.evaluate(test_images, test_labels, verbose=0)
    expected = TFMOT["pruning_with_sparsity_2_by_4"]
    assert_matches_tfmot(model, expected["sparsity"], expected["steps"])

    # cell 23
    model = kprune.strip_pruning(model)
    # cell 25
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    tflite_model = converter.convert()
    _, tflite_file = tempfile.mkstemp('.tflite')
    with open(tflite_file, 'wb') as f:
        f.write(tflite_model)

    # cell 28
    interpreter = tf.lite.Interpreter(model_path=tflite_file, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    details = interpreter.get_tensor_details()

    def named(tensor_name):
        # Keras 3: the converter names the weights `<model>/<layer>_1/MatMul`
        # and `<model>/<layer>_1/convolution` (tf.keras: `<layer>/MatMul`,
        # `<layer>/Conv2D`).
        layer, op = tensor_name.split("/")
        op = {"Conv2D": "convolution"}.get(op, op)
        return [x for x in details if re.fullmatch(rf".*/{layer}(_\d+)?/{op}", x["name"])]

    tensor_name = 'structural_pruning_dense/MatMul'
    detail = named(tensor_name)
    tensor_data = interpreter.tensor(detail[0]["index"])()
    # cell 30
    assert tensor_data.shape == (1024, 3136)

    # cell 32
    width = height = 24
    subset_values_to_display = tensor_data[0:height, 0:width]
    val_ones = np.ones([height, width])
    val_zeros = np.zeros([height, width])
    subset_values_to_display = np.where(abs(subset_values_to_display) > 0, val_ones, val_zeros)
    assert (subset_values_to_display.reshape(height, -1, 4).sum(-1) <= 2).all()

    # cell 34
    def plot_separation_lines(height, width):
        block_size = [1, 4]
        num_hlines = int((height - 1) / block_size[0])
        num_vlines = int((width - 1) / block_size[1])
        line_y_pos = [y * block_size[0] for y in range(1, num_hlines + 1)]
        line_x_pos = [x * block_size[1] for x in range(1, num_vlines + 1)]
        for y_pos in line_y_pos:
            plt.plot([-0.5, width], [y_pos - 0.5, y_pos - 0.5], color='w')
        for x_pos in line_x_pos:
            plt.plot([x_pos - 0.5, x_pos - 0.5], [-0.5, height], color='w')

    # cell 36
    plot_separation_lines(height, width)
    plt.axis('off')
    plt.imshow(subset_values_to_display)
    plt.colorbar()
    plt.title("Structural pruning for Dense layer")
    plt.show()

    # cell 38
    op_details = interpreter._get_ops_details()
    op_name = 'CONV_2D'
    op_detail = [x for x in op_details if op_name in x["op_name"]]
    tensor_data = interpreter.tensor(op_detail[1]["inputs"][1])()
    assert tensor_data.shape == (64, 5, 5, 32)
    # cell 40
    weights_to_display = tf.reshape(tensor_data, [tf.reduce_prod(tensor_data.shape[:-1]), -1])
    weights_to_display = weights_to_display[0:width, 0:height]
    subset_values_to_display = np.where(abs(weights_to_display) > 1e-9, val_ones, val_zeros)
    assert (subset_values_to_display.reshape(height, -1, 4).sum(-1) == 2).all()
    plot_separation_lines(height, width)
    plt.axis('off')
    plt.imshow(subset_values_to_display)
    plt.colorbar()
    plt.title("Structurally pruned weights for Conv2D layer")
    plt.show()

    # cell 42
    tensor_name = 'pruning_sparsity_0_5/Conv2D'
    detail = named(tensor_name)
    tensor_data = interpreter.tensor(detail[0]["index"])()
    # cell 43
    weights_to_display = tf.reshape(tensor_data, [tensor_data.shape[0], tf.reduce_prod(tensor_data.shape[1:])])
    weights_to_display = weights_to_display[0:width, 0:height]
    subset_values_to_display = np.where(abs(weights_to_display) > 0, val_ones, val_zeros)
    plot_separation_lines(height, width)
    plt.axis('off')
    plt.imshow(subset_values_to_display)
    plt.colorbar()
    plt.title("Unstructed pruned weights for Conv2D layer")
    plt.show()
    plt.close("all")

    # cell 45: the guide's check_sparsity_m_by_n.py script, as a function.
    checked = kprune.check_sparsity_m_by_n(tflite_file, 2, 4)
    layers = {re.sub(r"_\d+$", "", name.split("/")[-2]): ok for name, ok in checked.items()}
    # The first Conv2D reads 1 channel: its groups of 4 hold 1 weight each.
    assert layers == {"pruning_sparsity_0_5": True, "structural_pruning": True,
                      "structural_pruning_dense": True, "dense": False}
    on_keras = kprune.check_sparsity_m_by_n(model, 2, 4)
    assert {name.split("/")[0]: ok for name, ok in on_keras.items()} == {
        "pruning_sparsity_0_5": True, "structural_pruning": True,
        "structural_pruning_dense": True, model.layers[-1].name: False}
    os.remove(tflite_file)
    assert np.isfinite(pruned_model_accuracy)
