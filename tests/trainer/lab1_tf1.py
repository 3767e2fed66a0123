"""The lab's own way, kept as the reference for the trainer's tests and bench: TF1-style graphs.

`tf.compat.v1` graph, placeholders, `GradientDescentOptimizer`, one `Session.run` per update, the
loss read before each update and the relative-change rule on the recorded losses, as Lab 1 did it;
the loss surface evaluated one `Session.run` per grid point. Also the lab's data generator, with
numpy's global legacy RandomState. Used by tests/trainer and bench/trainer_lab1_vs_tf1.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1


def lab_data(
    seed: int, n: int = 100, w: float = 10, b: float = 2, std: float = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The lab's generator verbatim: global seed, uniform x, one normal draw per point in a loop."""
    np.random.seed(seed)
    x = np.random.uniform(0, 10, n)
    y = [w * (xi + np.random.normal(loc=0, scale=std, size=None)) + b for xi in x]
    return x, np.array(y)


@dataclass
class LabRun:
    epochs: int
    w: float
    b: float
    losses: list[float]  # the lab's recorded loss per epoch (GD: before the update; SGD: mean)
    updates: list[float] = field(default_factory=list)  # SGD: every update's loss


class LabGraph:
    """y = w·x + b, w = b = 0, MSE, plain gradient descent: the lab's graph."""

    def __init__(self, lr: float) -> None:
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.x = v1.placeholder(tf.float64, [None])
            self.y = v1.placeholder(tf.float64, [None])
            self.w = v1.Variable(0.0, dtype=tf.float64)
            self.b = v1.Variable(0.0, dtype=tf.float64)
            self.loss = tf.reduce_mean(tf.square(self.w * self.x + self.b - self.y))
            # The lab fetches [loss, train] together; the loss is the one before the update.
            # A Python float rate becomes a float32 constant inside the optimizer (0.001 turns into
            # 0.0010000000475); a float64 tensor keeps the algorithm exact in float64.
            rate = tf.constant(lr, tf.float64)
            with tf.control_dependencies([self.loss]):
                self.train = v1.train.GradientDescentOptimizer(rate).minimize(self.loss)
            self.init = v1.global_variables_initializer()
        self.sess = v1.Session(graph=self.graph)
        self.sess.run(self.init)

    def close(self) -> None:
        self.sess.close()

    def params(self) -> tuple[float, float]:
        w, b = self.sess.run([self.w, self.b])
        return float(w), float(b)


def lab_gd(
    x: np.ndarray, y: np.ndarray, lr: float = 0.001, tol: float = 0.001, max_epochs: int = 1000
) -> LabRun:
    """Gradient descent: one update per epoch on all points, the lab's stopping rule."""
    g = LabGraph(lr)
    losses: list[float] = []
    for epoch in range(max_epochs):
        loss, _ = g.sess.run([g.loss, g.train], {g.x: x, g.y: y})
        losses.append(float(loss))
        if epoch > 0 and abs(losses[-1] - losses[-2]) / losses[-2] < tol:
            break
    w, b = g.params()
    g.close()
    return LabRun(len(losses), w, b, losses)


def lab_sgd(
    x: np.ndarray, y: np.ndarray, lr: float = 0.001, tol: float = 0.001, max_epochs: int = 1000
) -> LabRun:
    """SGD: one update per point in data order; the rule on epoch-averaged losses."""
    g = LabGraph(lr)
    losses: list[float] = []
    updates: list[float] = []
    for epoch in range(max_epochs):
        per_update: list[float] = []
        for xi, yi in zip(x, y, strict=True):
            loss, _ = g.sess.run([g.loss, g.train], {g.x: [xi], g.y: [yi]})
            per_update.append(float(loss))
        losses.append(float(np.mean(per_update)))
        updates += per_update
        if epoch > 0 and abs(losses[-1] - losses[-2]) / losses[-2] < tol:
            break
    w, b = g.params()
    g.close()
    return LabRun(len(losses), w, b, losses, updates)


def lab_surface(x: np.ndarray, y: np.ndarray, w_grid: np.ndarray, b_grid: np.ndarray) -> np.ndarray:
    """The loss on the (b, w) grid, one Session.run per point, as the lab plotted it."""
    graph = tf.Graph()
    with graph.as_default():
        X, Y = v1.placeholder(tf.float64, [None]), v1.placeholder(tf.float64, [None])
        W, B = v1.placeholder(tf.float64, []), v1.placeholder(tf.float64, [])
        loss = tf.reduce_mean(tf.square(W * X + B - Y))
    out = np.zeros((len(b_grid), len(w_grid)))
    with v1.Session(graph=graph) as sess:
        for i, bv in enumerate(b_grid):
            for j, wv in enumerate(w_grid):
                out[i, j] = sess.run(loss, {X: x, Y: y, W: wv, B: bv})
    return out
