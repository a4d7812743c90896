"""Small models of the quantization tests: the patterns TFLite fuses."""

import keras
import numpy as np
from keras import layers as L


def small_cnn(bn=True):
    """Conv + BN + ReLU, a depthwise block, global pooling and Dense: the patterns TFLite fuses."""
    x = keras.Input((8, 8, 1))
    y = L.Conv2D(16, 3, padding="same", use_bias=not bn, name="conv")(x)
    if bn:
        y = L.BatchNormalization(name="bn")(y)
    y = L.ReLU(name="relu")(y)
    y = L.DepthwiseConv2D(3, padding="same", use_bias=not bn, name="dw")(y)
    if bn:
        y = L.BatchNormalization(name="dw_bn")(y)
    y = L.ReLU(6.0, name="relu6")(y)
    y = L.Conv2D(24, 1, activation="relu", name="pw")(y)
    y = L.MaxPooling2D(name="pool")(y)
    y = L.Flatten(name="flat")(y)
    return keras.Model(x, L.Dense(10, name="logits")(y), name="small_cnn")


def compile_classifier(model, learning_rate=3e-3):
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=256), -1) == y))
