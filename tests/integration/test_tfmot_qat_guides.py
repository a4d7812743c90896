"""tfmot's three quantization guides, ported mechanically to kprune, run on digits.

The code is that of `tensorflow_model_optimization/g3doc/guide/`
(`quantization/training_example`, `quantization/training_comprehensive_guide`,
`combine/pqat_example`), cell by cell, with `tfmot.quantization.keras.X` and
`tfmot.experimental.combine.X` -> `kprune.quantization.X`,
`tfmot.sparsity.keras.X` -> `kprune.X`, `tf.keras`/`tf_keras` -> `keras`, and
MNIST -> scikit-learn digits (8x8, enlarged by pixel repetition and zero
padding to 28x28; the first 1600 images train, the other 197 test). Changes
beyond that are Keras 3's, marked `# Keras 3:`, or shorter runs, marked
`# shorter:`. Cells that only print are kept when they compute something the
test checks. tfmot's own figures on the same data (the PQAT guide's model)
are `benchmarks/bench_qat.py`'s.
"""

import os
import tempfile
import warnings
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import kprune

pytest.importorskip("sklearn")


def digits(size=28):
    """Digits as MNIST-like images in [0, 1]: `(train, test)` pairs of `(x, y)`."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.kron(data.images / 16.0, np.ones((size // 8, size // 8)))
    pad = (size - images.shape[1]) // 2
    images = np.pad(images, ((0, 0), (pad, size - images.shape[1] - pad), (pad, size - images.shape[1] - pad)))
    images, labels = images.astype("float32"), data.target.astype("int64")
    return (images[:1600], labels[:1600]), (images[1600:], labels[1600:])


def evaluate_interpreter(interpreter, test_images, test_labels):
    """The guides' `evaluate_model`: top-1 accuracy of a TFLite interpreter, one image at a time."""
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    prediction_digits = []
    for test_image in test_images:
        test_image = np.expand_dims(test_image, axis=0).astype(np.float32)
        interpreter.set_tensor(input_index, test_image)
        interpreter.invoke()
        output = interpreter.tensor(output_index)
        prediction_digits.append(np.argmax(output()[0]))
    return (np.array(prediction_digits) == test_labels).mean()


def interpreter_for(content=None, path=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter is deprecated for LiteRT's: the guides use it
        interpreter = tf.lite.Interpreter(model_content=content, model_path=path)
    interpreter.allocate_tensors()
    return interpreter


# ------------------------------------------------------------------ training_example
def test_training_example():
    # cell 9
    (train_images, train_labels), (test_images, test_labels) = digits()
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
    model.fit(train_images, train_labels, epochs=4, validation_split=0.1, verbose=0)  # more: 1 MNIST epoch

    # cell 13
    quantize_model = kprune.quantization.quantize_model
    q_aware_model = quantize_model(model)
    q_aware_model.compile(optimizer='adam',
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=['accuracy'])
    lines = []
    q_aware_model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    assert "quant_conv2d" in "\n".join(lines) and "quantize_layer" in "\n".join(lines)

    # cell 16
    train_images_subset = train_images[0:1000]
    train_labels_subset = train_labels[0:1000]
    q_aware_model.fit(train_images_subset, train_labels_subset,
                      batch_size=500, epochs=1, validation_split=0.1, verbose=0)

    # cell 18
    _, baseline_model_accuracy = model.evaluate(test_images, test_labels, verbose=0)
    _, q_aware_model_accuracy = q_aware_model.evaluate(test_images, test_labels, verbose=0)

    # cell 21
    converter = tf.lite.TFLiteConverter.from_keras_model(q_aware_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    quantized_tflite_model = converter.convert()

    # cell 26
    interpreter = interpreter_for(quantized_tflite_model)
    test_accuracy = evaluate_interpreter(interpreter, test_images, test_labels)

    # cell 29
    float_converter = tf.lite.TFLiteConverter.from_keras_model(model)
    float_tflite_model = float_converter.convert()
    _, float_file = tempfile.mkstemp('.tflite')
    _, quant_file = tempfile.mkstemp('.tflite')
    with open(quant_file, 'wb') as f:
        f.write(quantized_tflite_model)
    with open(float_file, 'wb') as f:
        f.write(float_tflite_model)
    sizes = os.path.getsize(float_file), os.path.getsize(quant_file)
    os.remove(float_file)
    os.remove(quant_file)

    # The guide's claims: "minimal to no loss in test accuracy", "the accuracy
    # from TensorFlow persists to the TFLite backend", "4x smaller".
    assert q_aware_model_accuracy >= baseline_model_accuracy - 0.02
    assert abs(test_accuracy - q_aware_model_accuracy) <= 1 / len(test_labels) + 1e-9
    assert sizes[1] < sizes[0] / 3
    # Full integer: the weights of every convolution and matmul are int8.
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            assert interpreter._get_tensor_details(op["inputs"][1], 0)["dtype"] == np.int8


# ---------------------------------------------------------- training_comprehensive_guide
def test_training_comprehensive_guide():
    quantize_scope = kprune.quantization.quantize_scope

    def summary(model):
        lines = []
        model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
        return [type(layer).__name__ for layer in model.layers]

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

    def setup_pretrained_model():
        model = setup_model()
        pretrained_weights = setup_pretrained_weights()
        model.load_weights(pretrained_weights)
        return model

    setup_model()
    pretrained_weights = setup_pretrained_weights()

    # cell 13
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    quant_aware_model = kprune.quantization.quantize_model(base_model)
    assert summary(quant_aware_model) == ["InputLayer", "QuantizeLayer", "QuantizeWrapper", "QuantizeWrapper"]
    np.testing.assert_array_equal(quant_aware_model.get_layer("quant_" + base_model.layers[0].name).layer.kernel,
                                  base_model.layers[0].kernel)  # pretrained weights kept

    # cell 17
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)

    def apply_quantization_to_dense(layer):
        if isinstance(layer, keras.layers.Dense):
            return kprune.quantization.quantize_annotate_layer(layer)
        return layer

    annotated_model = keras.models.clone_model(base_model, clone_function=apply_quantization_to_dense)
    quant_aware_model = kprune.quantization.quantize_apply(annotated_model)
    assert summary(quant_aware_model) == ["InputLayer", "QuantizeLayer", "QuantizeWrapper", "Flatten"]

    # cell 19
    assert base_model.layers[0].name.startswith("dense")

    # cell 23
    i = keras.Input(shape=(20,))
    x = kprune.quantization.quantize_annotate_layer(keras.layers.Dense(10))(i)
    o = keras.layers.Flatten()(x)
    annotated_model = keras.Model(inputs=i, outputs=o)
    quant_aware_model = kprune.quantization.quantize_apply(annotated_model)
    assert summary(quant_aware_model) == ["InputLayer", "QuantizeLayer", "QuantizeWrapper", "Flatten"]

    # cell 25
    annotated_model = keras.Sequential([
        kprune.quantization.quantize_annotate_layer(keras.layers.Dense(20, input_shape=input_shape)),
        keras.layers.Flatten()
    ])
    quant_aware_model = kprune.quantization.quantize_apply(annotated_model)
    assert summary(quant_aware_model) == ["InputLayer", "QuantizeLayer", "QuantizeWrapper", "Flatten"]

    # cell 28
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    quant_aware_model = kprune.quantization.quantize_model(base_model)
    _, keras_model_file = tempfile.mkstemp('.h5')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras 3 calls .h5 legacy
        quant_aware_model.save(keras_model_file)
        with kprune.quantization.quantize_scope():
            loaded_model = keras.models.load_model(keras_model_file)
    assert summary(loaded_model) == summary(quant_aware_model)
    np.testing.assert_array_equal(loaded_model.predict(x_train, verbose=0),
                                  quant_aware_model.predict(x_train, verbose=0))
    os.remove(keras_model_file)

    # cell 31
    base_model = setup_pretrained_model()
    quant_aware_model = kprune.quantization.quantize_model(base_model)
    converter = tf.lite.TFLiteConverter.from_keras_model(quant_aware_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    quantized_tflite_model = converter.convert()
    interpreter = interpreter_for(quantized_tflite_model)
    assert {d["dtype"] for d in interpreter.get_tensor_details() if len(d["shape"]) == 2} == {np.int8, np.float32}

    # cell 36
    LastValueQuantizer = kprune.quantization.quantizers.LastValueQuantizer
    MovingAverageQuantizer = kprune.quantization.quantizers.MovingAverageQuantizer

    class DefaultDenseQuantizeConfig(kprune.quantization.QuantizeConfig):
        def get_weights_and_quantizers(self, layer):
            return [(layer.kernel, LastValueQuantizer(num_bits=8, symmetric=True, narrow_range=False, per_axis=False))]

        def get_activations_and_quantizers(self, layer):
            return [(layer.activation, MovingAverageQuantizer(num_bits=8, symmetric=False, narrow_range=False,
                                                              per_axis=False))]

        def set_quantize_weights(self, layer, quantize_weights):
            layer.kernel = quantize_weights[0]

        def set_quantize_activations(self, layer, quantize_activations):
            layer.activation = quantize_activations[0]

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    # cell 39
    quantize_annotate_layer = kprune.quantization.quantize_annotate_layer
    quantize_annotate_model = kprune.quantization.quantize_annotate_model

    class CustomLayer(keras.layers.Dense):
        pass

    model = quantize_annotate_model(keras.Sequential([
        quantize_annotate_layer(CustomLayer(20, input_shape=(20,)), DefaultDenseQuantizeConfig()),
        keras.layers.Flatten()
    ]))
    with quantize_scope({'DefaultDenseQuantizeConfig': DefaultDenseQuantizeConfig, 'CustomLayer': CustomLayer}):
        quant_aware_model = kprune.quantization.quantize_apply(model)
    assert summary(quant_aware_model) == ["InputLayer", "QuantizeLayer", "QuantizeWrapper", "QuantizeWrapper"]
    custom = quant_aware_model.layers[2]
    assert isinstance(custom.layer, CustomLayer) and isinstance(custom.quantize_config, DefaultDenseQuantizeConfig)
    quant_aware_model(x_train, training=True)
    kernel_range = [float(v.numpy()) for v in custom.non_trainable_weights if v.name.startswith("kernel_")]
    kernel = custom.layer.kernel.numpy()
    # Symmetric over [-128, 127] steps (narrow_range=False): the positive side is 127/128 of the negative.
    assert kernel_range[0] == pytest.approx(min(kernel.min(), -kernel.max() * 256 / 254), rel=1e-6)

    # cell 42
    class ModifiedDenseQuantizeConfig(DefaultDenseQuantizeConfig):
        def get_weights_and_quantizers(self, layer):
            return [(layer.kernel, LastValueQuantizer(num_bits=4, symmetric=True, narrow_range=False, per_axis=False))]

    # cell 44
    model = quantize_annotate_model(keras.Sequential([
        quantize_annotate_layer(keras.layers.Dense(20, input_shape=(20,)), ModifiedDenseQuantizeConfig()),
        keras.layers.Flatten()
    ]))
    with quantize_scope({'ModifiedDenseQuantizeConfig': ModifiedDenseQuantizeConfig}):
        quant_aware_model = kprune.quantization.quantize_apply(model)
    dense = quant_aware_model.layers[2]
    weight, quantizer, state = dense._weight_vars[0]
    quant_aware_model(x_train, training=True)
    assert len(np.unique(quantizer(weight.value, False, state).numpy())) <= 16  # 4 bits

    # cell 47
    class ModifiedDenseQuantizeConfig(DefaultDenseQuantizeConfig):  # noqa: F811 (the guide redefines it)
        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_activations(self, layer, quantize_activations):
            return

    # cell 49
    model = quantize_annotate_model(keras.Sequential([
        quantize_annotate_layer(keras.layers.Dense(20, input_shape=(20,)), ModifiedDenseQuantizeConfig()),
        keras.layers.Flatten()
    ]))
    with quantize_scope({'ModifiedDenseQuantizeConfig': ModifiedDenseQuantizeConfig}):
        quant_aware_model = kprune.quantization.quantize_apply(model)
    assert not quant_aware_model.layers[2]._activations

    # cell 52
    class FixedRangeQuantizer(kprune.quantization.quantizers.Quantizer):
        """Quantizer which forces outputs to be between -1 and 1."""

        def build(self, tensor_shape, name, layer):
            return {}

        def __call__(self, inputs, training, weights, **kwargs):
            return keras.ops.clip(inputs, -1.0, 1.0)  # Keras 3: was keras.backend.clip

        def get_config(self):
            return {}

    class ModifiedDenseQuantizeConfig(DefaultDenseQuantizeConfig):  # noqa: F811
        def get_weights_and_quantizers(self, layer):
            return [(layer.kernel, FixedRangeQuantizer())]

    # cell 54
    model = quantize_annotate_model(keras.Sequential([
        quantize_annotate_layer(keras.layers.Dense(20, input_shape=(20,)), ModifiedDenseQuantizeConfig()),
        keras.layers.Flatten()
    ]))
    with quantize_scope({'ModifiedDenseQuantizeConfig': ModifiedDenseQuantizeConfig}):
        quant_aware_model = kprune.quantization.quantize_apply(model)
    dense = quant_aware_model.layers[2]
    dense.layer.kernel.assign(dense.layer.kernel.numpy() * 100)
    weight, quantizer, state = dense._weight_vars[0]
    np.testing.assert_array_equal(quantizer(weight.value, False, state).numpy(), np.clip(weight.numpy(), -1, 1))
    quant_aware_model(x_train, training=True)


# ----------------------------------------------------------------------- pqat_example
def test_pqat_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the guide writes its .tflite files in the working directory
    # cell 9
    (train_images, train_labels), (test_images, test_labels) = digits()
    model = keras.Sequential([
        keras.layers.InputLayer(input_shape=(28, 28)),
        keras.layers.Reshape(target_shape=(28, 28, 1)),
        keras.layers.Conv2D(filters=12, kernel_size=(3, 3), activation=tf.nn.relu),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(10)
    ])
    model.compile(optimizer='adam',
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=['accuracy'])
    model.fit(train_images, train_labels, validation_split=0.1, epochs=4, verbose=0)  # shorter: 10 epochs

    # cell 11
    _, baseline_model_accuracy = model.evaluate(test_images, test_labels, verbose=0)
    _, keras_file = tempfile.mkstemp('.h5')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras 3 calls .h5 legacy
        keras.models.save_model(model, keras_file, include_optimizer=False)
    os.remove(keras_file)

    # cell 16
    prune_low_magnitude = kprune.prune_low_magnitude
    pruning_params = {
        'pruning_schedule': kprune.ConstantSparsity(0.5, begin_step=0, frequency=100)
    }
    callbacks = [
        kprune.UpdatePruningStep()
    ]
    pruned_model = prune_low_magnitude(model, **pruning_params)
    opt = keras.optimizers.Adam(learning_rate=1e-5)
    pruned_model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=opt,
        metrics=['accuracy'])

    # cell 19
    pruned_model.fit(train_images, train_labels, epochs=3, validation_split=0.1, callbacks=callbacks,
                     verbose=0)  # 135 steps: pruned at step 100

    # cell 21
    def print_model_weights_sparsity(model):
        found = {}
        for layer in model.layers:
            if isinstance(layer, keras.layers.Wrapper):
                weights = layer.trainable_weights
            else:
                weights = layer.weights
            for weight in weights:
                # ignore auxiliary quantization weights
                if "quantize_layer" in weight.name:
                    continue
                weight_size = weight.numpy().size
                zero_num = np.count_nonzero(weight == 0)
                found[f"{layer.name}/{weight.name}"] = zero_num / weight_size
        return found

    # cell 23
    stripped_pruned_model = kprune.strip_pruning(pruned_model)
    pruned_sparsity = print_model_weights_sparsity(stripped_pruned_model)
    kernels = {name: s for name, s in pruned_sparsity.items() if name.endswith("kernel")}
    assert all(s == pytest.approx(0.5, abs=0.01) for s in kernels.values()), pruned_sparsity

    # cell 25
    _, pruned_model_accuracy = pruned_model.evaluate(test_images, test_labels, verbose=0)

    # cell 28
    qat_model = kprune.quantization.quantize_model(stripped_pruned_model)
    qat_model.compile(optimizer='adam',
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=['accuracy'])
    qat_model.fit(train_images, train_labels, batch_size=128, epochs=1, validation_split=0.1, verbose=0)
    quant_aware_annotate_model = kprune.quantization.quantize_annotate_model(stripped_pruned_model)
    pqat_model = kprune.quantization.quantize_apply(
        quant_aware_annotate_model,
        kprune.quantization.Default8BitPrunePreserveQuantizeScheme())
    pqat_model.compile(optimizer='adam',
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=['accuracy'])
    pqat_model.fit(train_images, train_labels, batch_size=128, epochs=1, validation_split=0.1, verbose=0)

    # cell 29: QAT loses the zeros, PQAT keeps every one.
    qat_sparsity = print_model_weights_sparsity(qat_model)
    pqat_sparsity = print_model_weights_sparsity(pqat_model)
    for name in kernels:
        layer = name.split("/")[0]
        assert pqat_sparsity[f"quant_{layer}/kernel"] == kernels[name]
        assert qat_sparsity[f"quant_{layer}/kernel"] < 0.05

    # cell 31
    def get_gzipped_model_size(file):
        _, zipped_file = tempfile.mkstemp('.zip')
        with zipfile.ZipFile(zipped_file, 'w', compression=zipfile.ZIP_DEFLATED) as f:
            f.write(file)
        size = os.path.getsize(zipped_file) / 1000
        os.remove(zipped_file)
        return size

    # cell 33
    converter = tf.lite.TFLiteConverter.from_keras_model(qat_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    qat_tflite_model = converter.convert()
    qat_model_file = 'qat_model.tflite'
    with open(qat_model_file, 'wb') as f:
        f.write(qat_tflite_model)
    converter = tf.lite.TFLiteConverter.from_keras_model(pqat_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    pqat_tflite_model = converter.convert()
    pqat_model_file = 'pqat_model.tflite'
    with open(pqat_model_file, 'wb') as f:
        f.write(pqat_tflite_model)
    sizes = get_gzipped_model_size(qat_model_file), get_gzipped_model_size(pqat_model_file)
    assert sizes[1] < sizes[0]

    # cell 37
    interpreter = interpreter_for(path=pqat_model_file)
    pqat_test_accuracy = evaluate_interpreter(interpreter, test_images, test_labels)

    # cell 39
    def mnist_representative_data_gen():
        for image in train_images[:1000]:
            image = np.expand_dims(image, axis=0).astype(np.float32)
            yield [image]

    # cell 41
    converter = tf.lite.TFLiteConverter.from_keras_model(stripped_pruned_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = mnist_representative_data_gen
    post_training_tflite_model = converter.convert()
    post_training_model_file = 'post_training_model.tflite'
    with open(post_training_model_file, 'wb') as f:
        f.write(post_training_tflite_model)
    interpreter = interpreter_for(path=post_training_model_file)
    post_training_test_accuracy = evaluate_interpreter(interpreter, test_images, test_labels)

    # The guide: the pruned and quantized file keeps the accuracy.
    assert baseline_model_accuracy > 0.85
    assert pqat_test_accuracy >= pruned_model_accuracy - 0.03
    assert post_training_test_accuracy > 0.8
    # The PQAT file's kernels keep the zeros.
    in_file = kprune.check_sparsity_m_by_n(pqat_model_file, 1, 2)
    assert len(in_file) == 2
