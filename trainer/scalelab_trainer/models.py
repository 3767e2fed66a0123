"""Models of a trial behind one small interface: variables, per-example loss, a parameter summary.

`linear` is y = x·w + b with w, b starting at 0 (the lab), float64 so that 1 and N processes agree
to 1e-6; `mlp` and `cnn` are Keras networks (float32) with seeded random weights.
Called by train.py.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from scalelab_trainer.config import TrialConfig
from scalelab_trainer.datasets import Dataset


class Model(Protocol):
    """What the training loop needs from a model."""

    dtype: tf.DType
    trainable: list[tf.Variable]  # what the optimizer updates
    state: list[tf.Variable]  # everything rank 0 broadcasts (adds e.g. batch-norm statistics)

    def per_example_loss(self, x: tf.Tensor, y: tf.Tensor, training: bool) -> tf.Tensor: ...

    def correct(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor: ...

    def summary(self) -> dict[str, Any]: ...

    def has_penalty(self) -> bool:
        """Whether the model has losses of its own (Keras weight regularisers)."""
        ...

    def penalty(self) -> tf.Tensor:
        """Their sum, once per step, added to the training and the full-dataset loss."""
        ...


class Linear:
    """y = x·w + b, squared error; w and b start at zero as in the lab."""

    dtype = tf.float64

    def __init__(self, features: int) -> None:
        self.w = tf.Variable(tf.zeros([features], tf.float64), name="w")
        self.b = tf.Variable(tf.zeros([], tf.float64), name="b")
        self.trainable = [self.w, self.b]
        self.state = [self.w, self.b]

    def per_example_loss(self, x: tf.Tensor, y: tf.Tensor, training: bool) -> tf.Tensor:
        return tf.square(tf.linalg.matvec(x, self.w) + self.b - y)

    def correct(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return tf.zeros([], tf.float64)

    def has_penalty(self) -> bool:
        return False

    def penalty(self) -> tf.Tensor:
        return tf.zeros([], tf.float64)

    def theta(self) -> npt.NDArray[np.float64]:
        """(w..., b) as one float64 vector, the order linear.py uses."""
        return np.append(self.w.numpy(), self.b.numpy())

    def summary(self) -> dict[str, Any]:
        return self.summary_of(self.theta())

    @staticmethod
    def summary_of(theta: npt.NDArray[np.float64]) -> dict[str, Any]:
        """The summary of parameters θ = (w..., b): w and b of a line, else |w| and b."""
        w, b = theta[:-1], float(theta[-1])
        return (
            {"w": float(w[0]), "b": b}
            if w.size == 1
            else {"wNorm": float(np.linalg.norm(w)), "b": b}
        )


def float32_outputs(out: tf.Tensor) -> tf.Tensor:
    """A mixed-precision network's outputs in float32, so the loss (a softmax's exponentials, a
    squared error) is taken in float32 as Keras's mixed-precision guide asks; float32 and float64
    outputs are returned as they are (no op)."""
    return tf.cast(out, tf.float32) if out.dtype in (tf.float16, tf.bfloat16) else out


class Keras:
    """A Keras network trained with our own loop; the loss is cross entropy or squared error."""

    dtype = tf.float32

    def __init__(self, net: tf.keras.Model, classes: int) -> None:
        self.net = net
        self.classes = classes
        self.trainable = list(net.trainable_variables)
        self.state = list(net.variables)

    def per_example_loss(self, x: tf.Tensor, y: tf.Tensor, training: bool) -> tf.Tensor:
        out = float32_outputs(self.net(x, training=training))
        if self.classes:
            return tf.keras.losses.sparse_categorical_crossentropy(y, out, from_logits=True)
        return tf.square(tf.squeeze(out, -1) - y)

    def correct(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        pred = tf.argmax(self.net(x, training=False), axis=-1)
        return tf.reduce_sum(tf.cast(tf.equal(pred, y), tf.float32))

    def has_penalty(self) -> bool:
        return bool(self.net.losses)

    def penalty(self) -> tf.Tensor:
        return tf.add_n([tf.cast(v, tf.float32) for v in self.net.losses])

    def summary(self) -> dict[str, Any]:
        sq = sum(float(tf.reduce_sum(tf.square(v))) for v in self.trainable)
        count = sum(int(np.prod(v.shape)) for v in self.trainable)
        return {"norm": sq**0.5, "count": count}


def _mlp(inputs: int, outputs: int, units: int, layers: int) -> tf.keras.Model:
    net = tf.keras.Sequential([tf.keras.Input((inputs,))])
    for _ in range(layers):
        net.add(tf.keras.layers.Dense(units, activation="relu"))
    net.add(tf.keras.layers.Dense(outputs))
    return net


def _resnet_small(size: int, classes: int) -> tf.keras.Model:
    """Three residual stages (16, 32, 64 filters), one block each, as He et al.'s CIFAR ResNets."""
    L = tf.keras.layers
    inp = tf.keras.Input((size, size, 3))
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", use_bias=False)(inp)))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        r = L.Conv2D(filters, 3, stride, padding="same", use_bias=False)(h)
        r = L.ReLU()(L.BatchNormalization()(r))
        r = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same", use_bias=False)(r))
        if stride != 1 or h.shape[-1] != filters:
            h = L.Conv2D(filters, 1, stride, use_bias=False)(h)
        h = L.ReLU()(L.Add()([h, r]))
    out = L.Dense(classes)(L.GlobalAveragePooling2D()(h))
    return tf.keras.Model(inp, out)


def build(cfg: TrialConfig, ds: Dataset) -> Model:
    """The model the config names; Keras weights drawn from the trial seed on every rank."""
    if cfg.model == "linear":
        return Linear(int(ds.x.shape[1]))
    tf.keras.utils.set_random_seed(cfg.seed)
    if cfg.model == "mlp":
        outputs = ds.classes or 1
        return Keras(
            _mlp(int(ds.x.shape[1]), outputs, cfg.hidden_units, cfg.hidden_layers), ds.classes
        )
    if cfg.cnn_arch == "resnet50":
        net = tf.keras.applications.ResNet50(
            weights=None,
            input_shape=(cfg.image_size, cfg.image_size, 3),
            classes=ds.classes,
            classifier_activation=None,
        )
        return Keras(net, ds.classes)
    return Keras(_resnet_small(cfg.image_size, ds.classes), ds.classes)
