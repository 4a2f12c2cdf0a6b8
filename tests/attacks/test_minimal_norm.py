"""Tests for the unbounded minimum-norm attacks Carlini-Wagner L2 and DDN.

Measured on the fixture (64 images): DDN (30 steps) and CW (30 steps x 2 binary-search rounds)
fool 100%, median L2 norms 0.53 and 0.72; DDN with the full 100 steps reaches 0.51. For scale,
an L-inf perturbation of 8/255 on every pixel, which PGD needs at most, has L2 norm 1.74.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capjax.attacks.minimal_norm import cw_l2, ddn

LINF_8_AS_L2 = 8 / 255 * np.sqrt(32 * 32 * 3)
# Without abort-early: its 10 checks every 3 steps would stop a 30-step round on noise.
CW_SETTINGS = dict(steps=30, binary_search_steps=2, abort_early=False)
DDN_SETTINGS = dict(steps=30)


@dataclasses.dataclass
class Results:
    x_cw: jax.Array
    x_ddn: jax.Array
    targets: jax.Array
    x_cw_targeted: jax.Array
    x_ddn_targeted: jax.Array
    variables_before: dict


@pytest.fixture(scope="module")
def results(trained_classifier) -> Results:
    clf = trained_classifier
    before = jax.tree.map(np.array, clf.variables)
    logits_fn = lambda z: clf.model.apply(clf.variables, z, train=False)
    targets = (clf.y + 3) % 10
    cw = jax.jit(
        lambda x, y, t: cw_l2(logits_fn, x, y, targeted=t, **CW_SETTINGS), static_argnums=2
    )
    dd = jax.jit(lambda x, y, t: ddn(logits_fn, x, y, targeted=t, **DDN_SETTINGS), static_argnums=2)
    return Results(
        cw(clf.x, clf.y, False),
        dd(clf.x, clf.y, False),
        targets,
        cw(clf.x, targets, True),
        dd(clf.x, targets, True),
        before,
    )


def l2_norms(x_adv, x) -> np.ndarray:
    delta = np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)
    return np.sqrt((delta**2).sum(axis=(1, 2, 3)))


def predictions(clf, x_adv) -> np.ndarray:
    return np.asarray(jnp.argmax(clf.logits_fn(x_adv), -1))


@pytest.mark.parametrize("name", ["cw", "ddn"])
def test_unbounded_attacks_fool_every_example_inside_the_box(trained_classifier, results, name):
    clf = trained_classifier
    x_adv = getattr(results, f"x_{name}")
    assert x_adv.shape == clf.x.shape and x_adv.dtype == clf.x.dtype
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert np.all(predictions(clf, x_adv) != np.asarray(clf.y))  # 100% success


def test_perturbations_are_small_and_ddn_is_at_least_as_small_as_short_cw(
    trained_classifier, results
):
    x = trained_classifier.x
    ddn_median = np.median(l2_norms(results.x_ddn, x))
    cw_median = np.median(l2_norms(results.x_cw, x))
    assert ddn_median < 0.5 * LINF_8_AS_L2, ddn_median
    assert cw_median < 0.5 * LINF_8_AS_L2, cw_median
    assert ddn_median <= 1.1 * cw_median, (ddn_median, cw_median)


@pytest.mark.parametrize("name", ["cw", "ddn"])
def test_targeted_attacks_hit_their_targets(trained_classifier, results, name):
    x_adv = getattr(results, f"x_{name}_targeted")
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert np.mean(predictions(trained_classifier, x_adv) == np.asarray(results.targets)) >= 0.9


def test_ddn_iterates_are_quantised_to_256_levels(trained_classifier, results):
    changed = np.any(np.asarray(results.x_ddn) != np.asarray(trained_classifier.x), axis=(1, 2, 3))
    assert changed.all()
    scaled = np.asarray(results.x_ddn, np.float64) * 255
    np.testing.assert_allclose(scaled, np.round(scaled), atol=1e-4)


def test_attacks_leave_batch_statistics_unchanged(trained_classifier, results):
    after = jax.tree.map(np.array, trained_classifier.variables)
    jax.tree.map(np.testing.assert_array_equal, results.variables_before, after)


@pytest.mark.parametrize("attack", [cw_l2, ddn])
def test_returns_x_exactly_where_it_never_succeeds(trained_classifier, attack):
    x, y = trained_classifier.x[:4], trained_classifier.y[:4]
    # An unfoolable model: it always predicts y, whatever the input.
    unfoolable = lambda z: 10.0 * jax.nn.one_hot(y, 10) + 0.0 * jnp.sum(z, axis=(1, 2, 3))[:, None]
    out = jax.jit(lambda x, y: attack(unfoolable, x, y, steps=3))(x, y)
    np.testing.assert_array_equal(out, x)


BAD_INPUTS = [
    (cw_l2, dict(steps=-1), "steps must be >= 0"),
    (cw_l2, dict(confidence=-1.0), "confidence must be"),
    (cw_l2, dict(learning_rate=-0.01), "learning_rate must be"),
    (cw_l2, dict(initial_const=float("inf")), "initial_const must be"),
    (cw_l2, dict(binary_search_steps=0), "binary_search_steps"),
    (cw_l2, dict(x=lambda x: x * 2), r"must lie in \[0, 1\]"),
    (ddn, dict(y=lambda y: y.at[0].set(10)), "labels must lie"),
    (ddn, dict(x=lambda x: x.astype(jnp.int32)), "floating"),
    (ddn, dict(gamma=-0.05), "gamma must be"),
    (ddn, dict(init_norm=-1.0), "init_norm must be"),
    (ddn, dict(steps=1.5), "steps must be a Python int"),
]


@pytest.mark.parametrize("attack,overrides,match", BAD_INPUTS)
def test_bad_inputs_raise_clear_errors(trained_classifier, attack, overrides, match):
    overrides = dict(overrides)
    x = overrides.pop("x", lambda x: x)(trained_classifier.x[:4])
    y = overrides.pop("y", lambda y: y)(trained_classifier.y[:4])
    with pytest.raises(ValueError, match=match):
        attack(trained_classifier.logits_fn, x, y, **overrides)


def test_cw_abort_early_stops_a_stalled_round_and_keeps_successes():
    """A linear model: the loss falls, abort-early changes nothing and every example is
    fooled. A constant model: the loss never moves, the round stops, x comes back."""
    from capjax.attacks.minimal_norm import CW_L2_PRESETS

    w = jax.random.normal(jax.random.key(0), (8 * 8 * 3, 10)) * 0.05
    linear = lambda x: x.reshape(x.shape[0], -1) @ w
    x = jax.random.uniform(jax.random.key(1), (8, 8, 8, 3))
    y = jnp.argmax(linear(x), -1)
    settings = dict(steps=50, binary_search_steps=2, learning_rate=0.05)
    with_abort = cw_l2(linear, x, y, abort_early=True, **settings)
    assert np.all(predictions_of(linear, with_abort) != np.asarray(y))
    constant = lambda x: jnp.zeros((x.shape[0], 10)).at[:, 0].set(1.0) + 0.0 * x.sum()
    same = cw_l2(constant, x, jnp.zeros(8, jnp.int32), abort_early=True, **settings)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(x))
    assert set(CW_L2_PRESETS) == {"cafd_paper", "carlini", "torchattacks"}
    assert CW_L2_PRESETS["cafd_paper"]["steps"] == 100


def predictions_of(logits_fn, x_adv) -> np.ndarray:
    return np.asarray(jnp.argmax(logits_fn(x_adv), -1))
