"""The yardstick for the digits demo: a plain hand-written Keras script, ``model.fit``.

Pre-activation ResNet-20 (basic units, widths 16/32/64) at 16x16 on scikit-learn's
digits, 15 epochs, Adam, as a user would write it without resnet-builder. Prints
``val_accuracy=...`` last. Run by ``bench/digits_demo.py``; not a test.
"""

import sys

import keras
import numpy as np
from keras import layers
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def unit(x, filters, stride):
    pre = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride)(pre)
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(pre)
    y = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(y))
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    return layers.Add()([shortcut, y])


def main(epochs: int = 15) -> None:
    keras.utils.set_random_seed(0)
    digits = load_digits()
    x = digits.images[..., None].astype("float32") * (255 / 16)
    x = keras.ops.convert_to_numpy(keras.ops.image.resize(x, (16, 16)))
    x = (x - x.mean()) / x.std()
    x_train, x_val, y_train, y_val = train_test_split(
        x, digits.target, test_size=0.2, stratify=digits.target, random_state=0)
    inputs = keras.Input((16, 16, 1))
    h = layers.Conv2D(16, 3, padding="same")(inputs)
    for stage, filters in enumerate((16, 32, 64)):
        for i in range(3):
            h = unit(h, filters, 2 if stage and i == 0 else 1)
    h = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(h))
    outputs = layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        0.003, epochs * int(np.ceil(len(x_train) / 64)))), "sparse_categorical_crossentropy",
        metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=64, epochs=epochs,
                        validation_data=(x_val, y_val), verbose=0)
    print(f"val_accuracy={history.history['val_accuracy'][-1]:.4f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
