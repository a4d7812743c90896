"""tfmot's four pruning guides, written once, run with kprune (Keras 3) or with tfmot (tf_keras).

The code is that of `tensorflow_model_optimization/g3doc/guide/pruning/`
(`pruning_with_keras`, `comprehensive_guide`, `pruning_for_on_device_inference`,
`pruning_with_sparsity_2_by_4`), cell by cell, with `tfmot.sparsity.keras.X`
-> `port.api.X` and `tf.keras` -> `port.keras`, where a `Port` is kprune on
Keras 3 (`Port.kprune()`) or tfmot on tf_keras (`Port.tfmot()`: tfmot 0.8.1
needs `TF_USE_LEGACY_KERAS=1` set before TensorFlow is imported), and
MNIST/CIFAR-10 -> scikit-learn digits (8x8, enlarged by pixel repetition and
zero padding to 28x28, or to 32x32x3; the first 1600 images train, the other
197 test). Changes beyond that are Keras 3's (written so that tf_keras runs
them too), marked `# Keras 3:`, or shorter runs, marked `# shorter:`
(pre-training epochs only; the pruning runs are the guides' lengths, except
the batch sizes chosen so that `end_step` falls on a pruning turn: marked
`# steps:`). Cells that only print or show TensorBoard are left out; the
plots are drawn (on whatever matplotlib backend the caller chose).

Each guide is a function of the port that returns what it built (models,
log folders, files, figures) for its caller to check:
`tests/integration/test_tfmot_guides.py` runs the kprune port and compares
with tfmot's figures; `benchmarks/bench_tfmot_guides.py` runs the same code
under both and records the figures side by side.
"""

import glob
import os
import re
import tempfile
import warnings
import zipfile

import numpy as np

N_TRAIN = 1600


class Port:
    """What a guide runs on: the pruning API (`kprune` or `tfmot.sparsity.keras`),
    Keras (`keras` or `tf_keras`), and how to find a pruned model's wrappers."""

    def __init__(self, name, api, keras, wrapper_class):
        self.name, self.api, self.keras, self.wrapper_class = name, api, keras, wrapper_class

    @classmethod
    def kprune(cls):
        import keras

        import kprune

        return cls("kprune", kprune, keras, kprune.PruneLowMagnitude)

    @classmethod
    def tfmot(cls):
        if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
            raise RuntimeError("tfmot 0.8.1 runs on tf_keras: set TF_USE_LEGACY_KERAS=1 before TensorFlow is "
                               f"imported. Received: TF_USE_LEGACY_KERAS={os.environ.get('TF_USE_LEGACY_KERAS')!r}")
        import tensorflow_model_optimization as tfmot
        import tf_keras
        from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

        return cls("tfmot", tfmot.sparsity.keras, tf_keras, pruning_wrapper.PruneLowMagnitude)

    def wrappers(self, model):
        """The pruning wrappers among `model`'s layers (the guides' models are flat)."""
        return [layer for layer in model.layers if isinstance(layer, self.wrapper_class)]

    def masks(self, model):
        """`[(inner layer type, weight name, fraction of zeros in its mask, mask size)]` in
        model order, and the set of the wrappers' `pruning_step`s."""
        rows, steps = [], set()
        for w in self.wrappers(model):
            if self.name == "kprune":
                pairs = [(v.name, self.keras.ops.convert_to_numpy(m)) for v, m in w.pruned_weights]
                step = self.keras.ops.convert_to_numpy(w.pruning_step)
            else:  # tfmot: (weight, mask, threshold); weight.name is '<wrapper>/<weight>:0'
                pairs = [(v.name.split("/")[-1].split(":")[0], m.numpy()) for v, m, _ in w.pruning_vars]
                step = w.pruning_step.numpy()
            rows += [(type(w.layer).__name__, name, float(np.mean(m == 0)), m.size) for name, m in pairs]
            steps.add(int(step))
        return rows, steps


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
    return (images[:N_TRAIN], labels[:N_TRAIN]), (images[N_TRAIN:], labels[N_TRAIN:])


def event_tags(log_dir):
    """`{(folder relative to log_dir, tag)}` of the TensorBoard events under `log_dir`."""
    import tensorflow as tf

    tags = set()
    for path in glob.glob(os.path.join(log_dir, "**", "events*"), recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.add((os.path.relpath(os.path.dirname(path), log_dir), value.tag))
    return tags


def summary_text(model):
    """What `model.summary()` prints."""
    lines = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines)


# ------------------------------------------------------------ pruning_with_keras
def pruning_with_keras(port, batch_size, export):
    keras, tfmot_sparsity = port.keras, port.api
    import tensorflow as tf

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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras 3 calls .h5 legacy
        keras.models.save_model(model, keras_file, include_optimizer=False)

    # cell 15
    prune_low_magnitude = tfmot_sparsity.prune_low_magnitude
    epochs = 2
    validation_split = 0.1
    num_images = train_images.shape[0] * (1 - validation_split)
    end_step = np.ceil(num_images / batch_size).astype(np.int32) * epochs
    pruning_params = {
        'pruning_schedule': tfmot_sparsity.PolynomialDecay(initial_sparsity=0.50,
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
        tfmot_sparsity.UpdatePruningStep(),
        tfmot_sparsity.PruningSummaries(log_dir=logdir),
    ]
    model_for_pruning.fit(train_images, train_labels,
                          batch_size=batch_size, epochs=epochs, validation_split=validation_split,
                          callbacks=callbacks, verbose=0)
    result = {"model": model_for_pruning, "end_step": int(end_step), "logdir": logdir}
    if not export:
        os.remove(keras_file)
        return result
    # cell 20
    _, model_for_pruning_accuracy = model_for_pruning.evaluate(test_images, test_labels, verbose=0)
    # cell 26
    model_for_export = tfmot_sparsity.strip_pruning(model_for_pruning)
    _, pruned_keras_file = tempfile.mkstemp('.h5')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
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
        for i, test_image in enumerate(test_images):  # noqa: B007 (the guide's loop)
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


# ----------------------------------------------------------- comprehensive_guide
def comprehensive_guide(port):
    """Returns `summaries` (`{key: (model, its summary text)}` of the models whose
    parameter counts the guide shows), the `fit` and custom-loop models with their
    log folders, the layer types of the model loaded from .h5, and the gzipped
    sizes of the pruned and stripped models."""
    keras, tfmot_sparsity = port.keras, port.api
    import tensorflow as tf

    out = {"summaries": {}}

    def params(model, key):
        out["summaries"][key] = (model, summary_text(model))

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
    model_for_pruning = tfmot_sparsity.prune_low_magnitude(base_model)
    params(model_for_pruning, "whole_model")

    # cell 14
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)

    def apply_pruning_to_dense(layer):
        if isinstance(layer, keras.layers.Dense):
            return tfmot_sparsity.prune_low_magnitude(layer)
        return layer

    model_for_pruning = keras.models.clone_model(base_model, clone_function=apply_pruning_to_dense)
    params(model_for_pruning, "clone")

    # cell 20
    i = keras.Input(shape=(20,))
    x = tfmot_sparsity.prune_low_magnitude(keras.layers.Dense(10))(i)
    o = keras.layers.Flatten()(x)
    model_for_pruning = keras.Model(inputs=i, outputs=o)
    params(model_for_pruning, "functional")

    # cell 22: the wrapped first layer carries its input_shape, so the model is built.
    model_for_pruning = keras.Sequential([
        tfmot_sparsity.prune_low_magnitude(keras.layers.Dense(20, input_shape=input_shape)),
        keras.layers.Flatten()
    ])
    params(model_for_pruning, "sequential_first_layer")

    # cell 25
    class MyDenseLayer(keras.layers.Dense, tfmot_sparsity.PrunableLayer):
        def get_prunable_weights(self):
            return [self.kernel, self.bias]

    model_for_pruning = keras.Sequential([
        tfmot_sparsity.prune_low_magnitude(MyDenseLayer(20, input_shape=input_shape)),
        keras.layers.Flatten()
    ])
    params(model_for_pruning, "custom_layer")

    # cell 29
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    model_for_pruning = tfmot_sparsity.prune_low_magnitude(base_model)
    log_dir = tempfile.mkdtemp()
    callbacks = [tfmot_sparsity.UpdatePruningStep(), tfmot_sparsity.PruningSummaries(log_dir=log_dir)]
    model_for_pruning.compile(loss=keras.losses.categorical_crossentropy, optimizer='adam', metrics=['accuracy'])
    model_for_pruning.fit(x_train, y_train, callbacks=callbacks, epochs=2, verbose=0)
    out["fit"] = (model_for_pruning, log_dir)

    # cell 33
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    model_for_pruning = tfmot_sparsity.prune_low_magnitude(base_model)
    loss = keras.losses.categorical_crossentropy
    optimizer = keras.optimizers.Adam()
    log_dir = tempfile.mkdtemp()
    unused_arg = -1
    epochs = 2
    batches = 1
    model_for_pruning.optimizer = optimizer
    step_callback = tfmot_sparsity.UpdatePruningStep()
    step_callback.set_model(model_for_pruning)
    log_callback = tfmot_sparsity.PruningSummaries(log_dir=log_dir)
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
    out["loop"] = (model_for_pruning, log_dir)

    # cell 39
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    model_for_pruning = tfmot_sparsity.prune_low_magnitude(base_model)
    _, keras_model_file = tempfile.mkstemp('.h5')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras 3 calls .h5 legacy
        model_for_pruning.save(keras_model_file, include_optimizer=True)
        # cell 41
        with tfmot_sparsity.prune_scope():
            loaded_model = keras.models.load_model(keras_model_file)
    loaded_model.summary(print_fn=lambda *args, **kwargs: None)
    out["loaded_layers"] = [type(layer).__name__ for layer in loaded_model.layers]

    # cell 45
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    model_for_pruning = tfmot_sparsity.prune_low_magnitude(base_model)
    model_for_export = tfmot_sparsity.strip_pruning(model_for_pruning)
    model_for_export.summary(print_fn=lambda *args, **kwargs: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["gzipped_sizes"] = (get_gzipped_model_size(model_for_pruning), get_gzipped_model_size(model_for_export))

    # cell 48
    base_model = setup_model()
    pruning_params = {'block_size': [1, 16]}
    model_for_pruning = tfmot_sparsity.prune_low_magnitude(base_model, **pruning_params)
    params(model_for_pruning, "block")
    return out


# ----------------------------------------------- pruning_for_on_device_inference
def on_device_model(keras, keepdims):
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


def pruning_for_on_device_inference(port, batch_size=72, epochs=6):
    """`batch_size` 72 (steps: the guide's 128): end_step = 20 batches * 5 epochs = 100;
    `epochs` 6 (steps: 15 in the guide) reach end_step and go on."""
    keras, tfmot_sparsity = port.keras, port.api
    import tensorflow as tf

    # cell 10, with digits for CIFAR-10 (tfds): the same splits, as tf.data.
    (x, y), (x_test, y_test) = digits(32, channels=3)
    split = int(len(x) * 0.9)

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

    dense_model = on_device_model(keras, keepdims=False)
    dense_model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        optimizer='adam', metrics=['accuracy'])
    dense_model.fit(ds_train, epochs=1, validation_data=ds_val, verbose=0)  # shorter: 10 epochs
    _, dense_model_accuracy = dense_model.evaluate(ds_test, verbose=0)

    # cell 13
    prune_low_magnitude = tfmot_sparsity.prune_low_magnitude
    end_epoch = 5
    num_iterations_per_epoch = len(ds_train)
    end_step = num_iterations_per_epoch * end_epoch
    pruning_params = {
        'pruning_schedule': tfmot_sparsity.PolynomialDecay(initial_sparsity=0.25,
                                                           final_sparsity=0.75,
                                                           begin_step=0,
                                                           end_step=end_step),
        'pruning_policy': tfmot_sparsity.PruneForLatencyOnXNNPack()
    }
    error = None
    try:
        model_for_pruning = prune_low_magnitude(dense_model, **pruning_params)
    except ValueError as e:
        error = str(e)

    # cell 15
    fixed_dense_model = on_device_model(keras, keepdims=True)
    fixed_dense_model.set_weights(dense_model.get_weights())
    model_for_pruning = prune_low_magnitude(fixed_dense_model, **pruning_params)
    wrapped = [w.layer for w in port.wrappers(model_for_pruning)]

    # cell 19
    logdir = tempfile.mkdtemp()
    callbacks = [tfmot_sparsity.UpdatePruningStep(), tfmot_sparsity.PruningSummaries(log_dir=logdir)]
    model_for_pruning.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                              optimizer='adam', metrics=['accuracy'])
    model_for_pruning.fit(ds_train, epochs=epochs, validation_data=ds_val, callbacks=callbacks, verbose=0)
    _, pruned_model_accuracy = model_for_pruning.evaluate(ds_test, verbose=0)

    # cell 24
    converter = tf.lite.TFLiteConverter.from_keras_model(dense_model)
    dense_tflite_model = converter.convert()
    model_for_export = tfmot_sparsity.strip_pruning(model_for_pruning)
    converter = tf.lite.TFLiteConverter.from_keras_model(model_for_export)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    pruned_tflite_model = converter.convert()
    return {"policy_error": error, "wrapped": wrapped, "model": model_for_pruning, "logdir": logdir,
            "end_step": int(end_step), "accuracy": (dense_model_accuracy, pruned_model_accuracy),
            "tflite_bytes": (len(dense_tflite_model), len(pruned_tflite_model))}


# ------------------------------------------------- pruning_with_sparsity_2_by_4
def pruning_with_sparsity_2_by_4(port, batch_size=128, epochs=2):
    """Returns the pruned model (`pruned`) and the stripped one (`model`), the summary
    text before training, the .tflite file, and the guide's displayed weight patterns
    (0/1 arrays: `dense_pattern`, `conv_pattern`, `unstructured_pattern`) with the
    shapes of the tensors they come from."""
    keras, tfmot_sparsity = port.keras, port.api
    import matplotlib.pyplot as plt
    import tensorflow as tf

    # cell 12
    (train_images, train_labels), (test_images, test_labels) = digits(28)
    prune_low_magnitude = tfmot_sparsity.prune_low_magnitude
    # cell 15
    pruning_params_2_by_4 = {'sparsity_m_by_n': (2, 4)}
    # cell 17
    pruning_params_sparsity_0_5 = {
        'pruning_schedule': tfmot_sparsity.ConstantSparsity(target_sparsity=0.5, begin_step=0, frequency=100)
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
    out = {"summary": summary_text(model), "params": int(model.count_params())}

    # cell 21
    model.fit(train_images, train_labels, batch_size=batch_size, epochs=epochs, verbose=0,
              callbacks=tfmot_sparsity.UpdatePruningStep(), validation_split=0.1)
    _, pruned_model_accuracy = model.evaluate(test_images, test_labels, verbose=0)
    out.update(pruned=model, accuracy=pruned_model_accuracy)

    # cell 23
    model = tfmot_sparsity.strip_pruning(model)
    # cell 25
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    tflite_model = converter.convert()
    _, tflite_file = tempfile.mkstemp('.tflite')
    with open(tflite_file, 'wb') as f:
        f.write(tflite_model)
    out.update(model=model, tflite_file=tflite_file)

    # cell 28
    interpreter = tf.lite.Interpreter(model_path=tflite_file, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    details = interpreter.get_tensor_details()

    def named(tensor_name):
        # Keras 3: the converter names the weights `<model>/<layer>_1/MatMul`
        # and `<model>/<layer>_1/convolution` (tf_keras: `<model>/<layer>/MatMul`,
        # `<model>/<layer>/Conv2D`).
        layer, op = tensor_name.split("/")
        op = {"Conv2D": "(Conv2D|convolution)"}.get(op, op)
        return [x for x in details if re.fullmatch(rf".*/{layer}(_\d+)?/{op}", x["name"])]

    tensor_name = 'structural_pruning_dense/MatMul'
    detail = named(tensor_name)
    tensor_data = interpreter.tensor(detail[0]["index"])()
    # cell 30
    out["dense_shape"] = tensor_data.shape

    # cell 32
    width = height = 24
    subset_values_to_display = tensor_data[0:height, 0:width]
    val_ones = np.ones([height, width])
    val_zeros = np.zeros([height, width])
    subset_values_to_display = np.where(abs(subset_values_to_display) > 0, val_ones, val_zeros)
    out["dense_pattern"] = subset_values_to_display

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
    out["conv_shape"] = tensor_data.shape
    # cell 40
    weights_to_display = tf.reshape(tensor_data, [tf.reduce_prod(tensor_data.shape[:-1]), -1])
    weights_to_display = weights_to_display[0:width, 0:height]
    subset_values_to_display = np.where(abs(weights_to_display) > 1e-9, val_ones, val_zeros)
    out["conv_pattern"] = subset_values_to_display
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
    out["unstructured_pattern"] = subset_values_to_display
    plot_separation_lines(height, width)
    plt.axis('off')
    plt.imshow(subset_values_to_display)
    plt.colorbar()
    plt.title("Unstructed pruned weights for Conv2D layer")
    plt.show()
    plt.close("all")
    return out


# ------------------------------------------------------------- step semantics
def schedule_trace(port):
    """Sparsity of one Dense kernel after each of 30 batches of `fit(batch_size=1)`,
    and `pruning_step` after them, under PolynomialDecay(0 -> 0.8, end 20 and 25,
    frequency 10) and a tfmot-style schedule for a scalar step (Python `if`)."""
    keras, tfmot_sparsity = port.keras, port.api

    class After5(tfmot_sparsity.PruningSchedule):
        def __call__(self, step):
            if step >= 5:
                return True, 0.5
            return False, 0.0

        def get_config(self):
            return {}

    out = {}
    for name, schedule in (
        ("polynomial", tfmot_sparsity.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=20, frequency=10)),
        ("polynomial_end_not_on_frequency",
         tfmot_sparsity.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=25, frequency=10)),
        ("custom_python_if", After5()),
    ):
        model = tfmot_sparsity.prune_low_magnitude(
            keras.Sequential([keras.Input((10,)), keras.layers.Dense(10)]), pruning_schedule=schedule)
        model.compile("sgd", "mse")
        trace = []

        class Record(keras.callbacks.Callback):
            def __init__(self, trace):
                super().__init__()
                self.trace = trace

            def on_train_batch_end(self, batch, logs=None):
                self.trace.append(round(port.masks(self.model)[0][0][2], 4))

        x = np.random.default_rng(0).normal(size=(30, 10)).astype("float32")
        model.fit(x, x, batch_size=1, epochs=1, verbose=0, shuffle=False,
                  callbacks=[tfmot_sparsity.UpdatePruningStep(), Record(trace)])
        out[name] = {"sparsity_after_batch": trace, "pruning_step": port.masks(model)[1].pop()}
    return out
