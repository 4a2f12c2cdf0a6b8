"""SPSA: threat model, score-only access, strength, determinism, no recompiles, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attack_checks import accuracy, assert_in_threat_model

from capjax.attacks.spsa import spsa

EPS = 8 / 255
# A cheap configuration for the properties that do not need a strong attack.
CHEAP = {"steps": 3, "num_pairs": 8, "key": jax.random.key(0)}


def test_spsa_breaks_the_fixture_inside_the_ball(clf):
    x, y = clf.x[:8], clf.y[:8]
    x_adv = spsa(
        clf.logits_fn, x, y, eps=EPS, steps=40, num_pairs=64, pairs_per_batch=32,
        key=jax.random.key(0),
    )  # fmt: skip
    assert_in_threat_model(x_adv, x, EPS, "linf")
    # Measured on the first 16 images: 0.125 (40 steps x 64 directions = 5120 queries
    # per image); 0.0 with 30 x 128. Clean accuracy 1.0.
    assert accuracy(clf.logits_fn, x_adv, y) <= 0.5


@pytest.mark.parametrize("norm, eps", [("linf", EPS), ("l2", 0.5)])
def test_bounds_eps_zero_and_same_key(clf, norm, eps):
    x, y = clf.x[:4], clf.y[:4]
    x_adv = spsa(clf.logits_fn, x, y, eps=eps, norm=norm, **CHEAP)
    assert_in_threat_model(x_adv, x, eps, norm)
    np.testing.assert_array_equal(x_adv, spsa(clf.logits_fn, x, y, eps=eps, norm=norm, **CHEAP))
    np.testing.assert_array_equal(spsa(clf.logits_fn, x, y, eps=0.0, norm=norm, **CHEAP), x)


def test_uses_only_model_values_and_does_not_recompile_for_eps(clf):
    x, y = clf.x[:4], clf.y[:4]
    traces = []

    def no_gradient(z):
        traces.append(1)
        return jax.lax.stop_gradient(clf.logits_fn(z))

    assert not np.any(np.asarray(jax.grad(lambda z: jnp.sum(no_gradient(z)))(x)))
    np.testing.assert_array_equal(
        spsa(no_gradient, x, y, eps=EPS, **CHEAP), spsa(clf.logits_fn, x, y, eps=EPS, **CHEAP)
    )
    count = len(traces)
    spsa(no_gradient, x, y, eps=4 / 255, **CHEAP)
    assert len(traces) == count


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pairs_per_batch": 5}, "divide"),
        ({"num_pairs": 0}, "num_pairs"),
        ({"perturbation_size": -0.01}, "perturbation_size"),
        ({"loss": "dlr"}, "loss"),
        ({"key": None}, "key"),
        ({"eps": 8.0}, "did you mean"),
    ],
)
def test_bad_inputs_raise(clf, kwargs, message):
    with pytest.raises(ValueError, match=message):
        spsa(clf.logits_fn, clf.x, clf.y, **{"eps": EPS, **CHEAP, **kwargs})


def test_num_pairs_is_the_unit_and_the_old_name_explains_itself(trained_classifier):
    clf = trained_classifier
    x, y = clf.x[:4], clf.y[:4]
    with pytest.raises(ValueError, match="num_pairs"):
        spsa(clf.logits_fn, x, y, eps=EPS, num_samples=8, steps=1, key=jax.random.key(0))


def test_early_stop_off_runs_every_step(trained_classifier):
    """Without early stopping (cleverhans' default) the attack returns the last iterate; it
    stays in the threat model and differs from the early-stopped result where that froze."""
    clf = trained_classifier
    x, y = clf.x[:16], clf.y[:16]
    kwargs = dict(eps=EPS, steps=6, num_pairs=8, key=jax.random.key(0))
    stopped = spsa(clf.logits_fn, x, y, **kwargs)
    running = spsa(clf.logits_fn, x, y, early_stop=False, **kwargs)
    assert_in_threat_model(running, x, EPS, "linf")
    assert not np.array_equal(np.asarray(stopped), np.asarray(running))
