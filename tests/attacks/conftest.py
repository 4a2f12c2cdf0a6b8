"""Fixtures for attack tests: a small, quickly trained classifier on a toy image task.

The task is deliberately easy and the model deliberately fragile (no robustness training),
so an undefended model has high clean accuracy and PGD at 8/255 should break it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from capjax.models import get_classifier

NUM_CLASSES = 10


def toy_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class c = a fixed smooth random template (shared across seeds) plus pixel noise."""
    templates = 0.5 + np.random.default_rng(1234).uniform(-0.08, 0.08, (NUM_CLASSES, 4, 4, 3))
    templates = templates.repeat(8, axis=1).repeat(8, axis=2)  # (10, 32, 32, 3)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n)
    noise = rng.normal(0, 0.05, (n, 32, 32, 3))
    images = np.clip(templates[labels] + noise, 0, 1).astype(np.float32)
    return images, labels.astype(np.int32)


@dataclasses.dataclass
class TrainedClassifier:
    model: object
    variables: dict
    x: jax.Array  # (64, 32, 32, 3) held-out images the model classifies
    y: jax.Array  # (64,) their labels

    def logits_fn(self, x):
        return self.model.apply(self.variables, x, train=False)

    def features_fn(self, x):
        return self.model.apply(self.variables, x, train=False, return_features=True)[1]


@pytest.fixture(scope="session")
def trained_classifier() -> TrainedClassifier:
    """A tiny BatchNorm CNN trained for a few seconds; clean accuracy is asserted >= 90%."""
    model = get_classifier("tiny", num_classes=NUM_CLASSES, widths=(8, 16, 32))
    images, labels = toy_images(1024, seed=0)
    variables = model.init(jax.random.key(0), jnp.asarray(images[:2]))
    params, batch_stats = variables["params"], variables["batch_stats"]
    tx = optax.adam(3e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, batch_stats, opt_state, x, y):
        def loss_fn(p):
            logits, updates = model.apply(
                {"params": p, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, updates["batch_stats"]

        grads, new_stats = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state

    for i in range(120):
        sl = slice((i * 64) % 1024, (i * 64) % 1024 + 64)
        params, batch_stats, opt_state = step(
            params, batch_stats, opt_state, images[sl], labels[sl]
        )
    variables = {"params": params, "batch_stats": batch_stats}
    x, y = toy_images(64, seed=1)
    clf = TrainedClassifier(model, variables, jnp.asarray(x), jnp.asarray(y))
    acc = float(jnp.mean(jnp.argmax(clf.logits_fn(clf.x), -1) == clf.y))
    assert acc >= 0.9, f"fixture classifier too weak to test attacks on: clean acc {acc}"
    return clf


@pytest.fixture(scope="session")
def clf(trained_classifier: TrainedClassifier) -> TrainedClassifier:
    """Short alias of `trained_classifier`."""
    return trained_classifier
