"""Tests for the BPDA, EOT and defended-classifier wrappers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capjax.attacks._common import cross_entropy
from capjax.attacks.gradient import pgd
from capjax.attacks.wrappers import bpda, defended, eot


def quantize(x):
    """A purifier whose true gradient is zero almost everywhere (8-bit rounding)."""
    return jnp.round(x * 255) / 255


def loss_gradient(logits_fn, x, y):
    return jax.grad(lambda z: jnp.sum(cross_entropy(logits_fn(z), y)))(x)


def test_bpda_gradient_is_the_models_gradient_at_purify_x(trained_classifier):
    clf = trained_classifier
    x, y = clf.x[:8], clf.y[:8]
    through_bpda = loss_gradient(defended(clf.logits_fn, bpda(quantize)), x, y)
    at_purified = loss_gradient(clf.logits_fn, quantize(x), y)
    np.testing.assert_array_equal(through_bpda, at_purified)
    assert float(jnp.abs(at_purified).max()) > 0
    # The true gradient through the quantiser vanishes: that is what BPDA works around.
    assert float(jnp.abs(loss_gradient(defended(clf.logits_fn, quantize), x, y)).max()) == 0
    # The forward pass is the purifier's, unchanged.
    np.testing.assert_array_equal(bpda(quantize)(x), quantize(x))


def test_bpda_backward_follows_the_approximation():
    x = jnp.linspace(0, 1, 24).reshape(1, 2, 3, 4)
    approx = lambda z: z**2  # vjp at x: 2 x * cotangent
    grad = jax.grad(lambda z: jnp.sum(3.0 * bpda(quantize, approx)(z)))(x)
    np.testing.assert_allclose(grad, 6.0 * x, rtol=1e-6)
    # Works under jit with a purifier that closes over traced values.
    f = jax.jit(jax.grad(lambda z, s: jnp.sum(bpda(lambda v: jnp.round(v * s) / s)(z)), 0))
    np.testing.assert_array_equal(f(x, 7.0), jnp.ones_like(x))


def test_pgd_through_bpda_breaks_a_quantised_model_that_plain_pgd_cannot(trained_classifier):
    clf = trained_classifier
    key = jax.random.key(0)

    def robust_acc(logits_fn):
        x_adv = pgd(logits_fn, clf.x, clf.y, eps=8 / 255, step_size=2 / 255, steps=5, key=key)
        return float(jnp.mean(jnp.argmax(defended(clf.logits_fn, quantize)(x_adv), -1) == clf.y))

    assert robust_acc(defended(clf.logits_fn, bpda(quantize))) < 0.05
    assert robust_acc(defended(clf.logits_fn, quantize)) > 0.9  # zero gradients: no progress


def test_eot_is_the_mean_over_its_draws_and_so_is_its_gradient():
    x = jnp.linspace(0.1, 0.9, 12).reshape(1, 2, 2, 3)
    key = jax.random.key(3)
    scales = lambda k: jax.random.uniform(k, (), minval=0.0, maxval=2.0)
    random_fn = lambda z, k: jnp.sin(z * scales(k))
    averaged = eot(random_fn, n=5, key=key)
    draws = [scales(k) for k in jax.random.split(key, 5)]
    expected = sum(jnp.sin(x * s) for s in draws) / 5
    np.testing.assert_allclose(averaged(x), expected, rtol=1e-6)
    grad = jax.grad(lambda z: jnp.sum(averaged(z)))(x)
    np.testing.assert_allclose(grad, sum(s * jnp.cos(x * s) for s in draws) / 5, rtol=1e-5)
    # Vectorised draws give the same function.
    np.testing.assert_allclose(eot(random_fn, n=5, key=key, batch_size=5)(x), expected, rtol=1e-6)


def test_eot_converges_to_the_known_expectation():
    # E[x * u] = x for u ~ U(0, 2); E[x + noise] = x for zero-mean noise.
    x = jnp.full((2, 4, 4, 3), 0.5)
    multiplicative = eot(
        lambda z, k: z * jax.random.uniform(k, (), maxval=2.0),
        4000,
        jax.random.key(0),
        batch_size=1000,
    )
    np.testing.assert_allclose(multiplicative(x), x, atol=0.03)
    noisy = lambda z: z
    additive = eot(
        noisy,
        2000,
        jax.random.key(1),
        transform=lambda z, k: z + jax.random.normal(k, z.shape),
        batch_size=2000,
    )
    assert float(jnp.abs(additive(x) - x).mean()) < 0.03
    # The same key gives the same function; another key other draws.
    np.testing.assert_array_equal(multiplicative(x), multiplicative(x))


def test_eot_of_a_randomised_defense_works_inside_an_attack(trained_classifier):
    clf = trained_classifier

    def noisy_defense(z, k):
        return clf.logits_fn(jnp.clip(z + 0.01 * jax.random.normal(k, z.shape), 0, 1))

    averaged = eot(noisy_defense, n=2, key=jax.random.key(5))
    x_adv = jax.jit(
        lambda x, y: pgd(
            averaged, x, y, eps=8 / 255, step_size=2 / 255, steps=5, random_start=False
        )
    )(clf.x[:16], clf.y[:16])
    assert jnp.abs(x_adv - clf.x[:16]).max() <= 8 / 255
    assert float(jnp.mean(jnp.argmax(averaged(x_adv), -1) == clf.y[:16])) < 0.1


def test_defended_composes_classifier_and_purifier(trained_classifier):
    clf = trained_classifier
    purify = lambda z: jnp.clip(z * 0.9 + 0.05, 0, 1)
    np.testing.assert_array_equal(
        defended(clf.logits_fn, purify)(clf.x[:4]), clf.logits_fn(purify(clf.x[:4]))
    )


@pytest.mark.parametrize("n", [0, -1, 2.0])
def test_eot_rejects_bad_draw_counts(n):
    with pytest.raises(ValueError, match="n >= 1"):
        eot(lambda z, k: z, n, jax.random.key(0))
