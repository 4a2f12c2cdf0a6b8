"""Assertions shared by the attack tests (imported by name; pytest puts this folder on the path)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def accuracy(logits_fn, x, y) -> float:
    """Top-1 accuracy of logits_fn on (x, y), recounted by a fresh forward pass."""
    return float(jnp.mean(jnp.argmax(logits_fn(x), -1) == y))


def assert_in_threat_model(x_adv, x, eps, norm):
    """Shape and dtype kept, [0, 1] box, and the eps ball exactly (L-inf in float32, L2 in
    float64)."""
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    if norm == "linf":
        assert float(jnp.abs(x_adv - x).max()) <= np.float32(eps)
    else:
        delta = np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)
        assert np.sqrt((delta**2).reshape(len(x), -1).sum(1)).max() <= eps
