"""Fixtures for the evaluation-suite tests: a tiny classifier trained in seconds on toy data.

Same task as tests/attacks (class templates plus pixel noise), stored as uint8 images as the
suite takes them. The model is fragile on purpose: PGD at 8/255 breaks it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from capjax.eval.defense import Defense
from capjax.models import get_classifier

NUM_CLASSES = 10
NUM_EVAL = 64


def toy_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32, 32, 3) uint8 images: a smooth class template (shared by seeds) plus noise."""
    templates = 0.5 + np.random.default_rng(1234).uniform(-0.08, 0.08, (NUM_CLASSES, 4, 4, 3))
    templates = templates.repeat(8, axis=1).repeat(8, axis=2)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
    noise = rng.normal(0, 0.05, (n, 32, 32, 3))
    images = np.round(np.clip(templates[labels] + noise, 0, 1) * 255).astype(np.uint8)
    return images, labels


def train_tiny(seed: int, steps: int = 60):
    """(model, variables) of a tiny CNN trained with Adam on 1024 toy images."""
    model = get_classifier("tiny", num_classes=NUM_CLASSES, widths=(8, 16, 32))
    images, labels = toy_images(1024, seed=seed)
    x_all = images.astype(np.float32) / 255
    # An "rbg" key: threefry initialisers compile for ~15 s on the 2 shared CPU cores.
    init_key = jax.random.key(seed, impl="rbg")
    variables = jax.jit(model.init)(init_key, jnp.asarray(x_all[:2]))
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

    for i in range(steps):
        sl = slice((i * 64) % 1024, (i * 64) % 1024 + 64)
        params, batch_stats, opt_state = step(params, batch_stats, opt_state, x_all[sl], labels[sl])
    return model, {"params": params, "batch_stats": batch_stats}


@dataclasses.dataclass
class Toy:
    classifier: object  # x -> logits
    images: np.ndarray  # (NUM_EVAL, 32, 32, 3) uint8
    labels: np.ndarray  # (NUM_EVAL,) int32


@pytest.fixture(scope="session")
def toy() -> Toy:
    model, variables = train_tiny(seed=0)
    images, labels = toy_images(NUM_EVAL, seed=1)
    classifier = jax.jit(lambda x: model.apply(variables, x, train=False))
    acc = float(np.mean(np.argmax(classifier(images.astype(np.float32) / 255), -1) == labels))
    assert acc >= 0.9, f"fixture classifier too weak: clean accuracy {acc}"
    return Toy(classifier, images, labels)


@pytest.fixture(scope="session")
def bare(toy) -> Defense:
    return Defense(name="none", classifier=toy.classifier)
