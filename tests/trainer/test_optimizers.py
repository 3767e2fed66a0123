"""One step of each optimizer equals the paper's formula computed in numpy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from scalelab_trainer.config import TrialConfig
from scalelab_trainer.optimizers import Optimizer

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(3)
W0 = [RNG.normal(size=(4, 3)), RNG.normal(size=3)]
GRADS = [[RNG.normal(size=(4, 3)), RNG.normal(size=3)] for _ in range(2)]
LR = 0.5


def run(kind: str, steps: int, **overrides: float) -> list[np.ndarray]:
    cfg = dataclasses.replace(TrialConfig(), optimizer=kind, **overrides)  # type: ignore[arg-type]
    ws = [tf.Variable(w) for w in W0]
    opt = Optimizer(cfg, ws)
    for g in GRADS[:steps]:
        opt.apply([tf.constant(x) for x in g], ws, tf.constant(LR, tf.float64))
    return [w.numpy() for w in ws]


def test_lars_step_is_the_trust_ratio_formula_of_you_gitman_ginsburg() -> None:
    tau, beta, mu = 0.01, 0.0005, 0.9
    got = run("lars", 2, trust_coefficient=tau, weight_decay=beta, momentum=mu)
    for w0, g1, g2, w in zip(W0, *GRADS, got, strict=True):
        local = tau * np.linalg.norm(w0) / (np.linalg.norm(g1) + beta * np.linalg.norm(w0))
        v = LR * local * (g1 + beta * w0)
        w1 = w0 - v
        local = tau * np.linalg.norm(w1) / (np.linalg.norm(g2) + beta * np.linalg.norm(w1))
        v = mu * v + LR * local * (g2 + beta * w1)
        np.testing.assert_allclose(w, w1 - v, rtol=1e-12)


def test_lamb_step_is_the_layerwise_adam_trust_ratio_of_you_et_al() -> None:
    b1, b2, eps, lam = 0.9, 0.999, 1e-6, 0.01
    got = run("lamb", 2, momentum=b1, beta2=b2, epsilon=eps, weight_decay=lam)
    for w0, g1, g2, w in zip(W0, *GRADS, got, strict=True):
        m = s = np.zeros_like(w0)
        cur = w0
        for t, g in ((1, g1), (2, g2)):
            m = b1 * m + (1 - b1) * g
            s = b2 * s + (1 - b2) * g * g
            r = (m / (1 - b1**t)) / (np.sqrt(s / (1 - b2**t)) + eps)
            u = r + lam * cur
            cur = cur - LR * np.linalg.norm(cur) / np.linalg.norm(u) * u
        np.testing.assert_allclose(w, cur, rtol=1e-12)


def test_adam_and_momentum_steps_are_the_textbook_updates() -> None:
    got_adam, got_mom = run("adam", 2), run("momentum", 2, momentum=0.8)
    for w0, g1, g2, wa, wm in zip(W0, *GRADS, got_adam, got_mom, strict=True):
        m = 0.1 * g1
        s = 0.001 * g1 * g1
        w1 = w0 - LR * (m / 0.1) / (np.sqrt(s / 0.001) + 1e-6)
        m = 0.9 * m + 0.1 * g2
        s = 0.999 * s + 0.001 * g2 * g2
        w2 = w1 - LR * (m / (1 - 0.81)) / (np.sqrt(s / (1 - 0.999**2)) + 1e-6)
        np.testing.assert_allclose(wa, w2, rtol=1e-12)
        v = 0.8 * g1 + g2
        np.testing.assert_allclose(wm, w0 - LR * g1 - LR * v, rtol=1e-12)


def test_trust_ratio_is_one_for_weights_at_zero() -> None:
    cfg = dataclasses.replace(TrialConfig(), optimizer="lamb")
    w = tf.Variable(np.zeros(3))
    opt = Optimizer(cfg, [w])
    opt.apply([tf.constant([1.0, -2.0, 0.5], tf.float64)], [w], tf.constant(0.1, tf.float64))
    # First LAMB step with w = 0: r = m̂/(√ŝ+ε) ≈ sign(g), trust ratio 1.
    np.testing.assert_allclose(w.numpy(), [-0.1, 0.1, -0.1], rtol=1e-5)
    assert np.all(np.isfinite(w.numpy()))
