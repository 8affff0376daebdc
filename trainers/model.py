"""A small CNN image classifier: big enough to learn the synthetic set, small enough for CI."""
from __future__ import annotations

import tensorflow as tf


def build_cnn(image_shape: tuple[int, ...], num_classes: int, width: int = 8) -> tf.keras.Model:
    """Conv-pool-conv-pool-dense; ``width`` filters in the first layer."""
    layers = tf.keras.layers
    inputs = tf.keras.Input(shape=image_shape, name="image")
    x = layers.Conv2D(width, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)  # keep position: the synthetic classes differ only by where
    outputs = layers.Dense(num_classes, name="logits")(x)
    return tf.keras.Model(inputs, outputs, name="cnn_classifier")
