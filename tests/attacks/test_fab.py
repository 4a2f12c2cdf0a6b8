"""FAB / FAB-T: the exact box-constrained projection, threat model, strength, errors."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from attack_checks import accuracy, assert_in_threat_model
from scipy.optimize import linprog, minimize

from capjax.attacks.fab import fab, project_to_hyperplane

EPS = 8 / 255
STEPS = 10


def brute_force_projection(p, w, r, norm):
    """min |d| s.t. w . d = r, 0 <= p + d <= 1, by a generic solver (None if infeasible)."""
    dim = len(p)
    bounds = list(zip(-p, 1 - p, strict=True))
    if norm == "linf":  # LP in (d, t): min t, -t <= d_i <= t
        cost = np.r_[np.zeros(dim), 1.0]
        a_ub = np.block([[np.eye(dim), -np.ones((dim, 1))], [-np.eye(dim), -np.ones((dim, 1))]])
        res = linprog(
            cost, A_ub=a_ub, b_ub=np.zeros(2 * dim), A_eq=np.r_[w, 0.0][None], b_eq=[r],
            bounds=bounds + [(0, None)],
        )  # fmt: skip
        return res.fun if res.status == 0 else None
    res = minimize(
        lambda d: d @ d, np.zeros(dim), jac=lambda d: 2 * d, bounds=bounds, method="SLSQP",
        constraints=[{"type": "eq", "fun": lambda d: w @ d - r, "jac": lambda d: w}],
        options={"ftol": 1e-14, "maxiter": 1000},
    )  # fmt: skip
    return np.sqrt(res.fun) if res.success and abs(w @ res.x - r) < 1e-6 else None


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_is_the_exact_minimiser(norm):
    rng = np.random.default_rng(0)
    rows, dim = 30, 10
    p = rng.uniform(0, 1, (rows, dim))
    w = rng.normal(0, 1, (rows, dim)) * rng.exponential(1, (rows, dim))
    w[:, 0] = 0.0  # coordinates the hyperplane ignores must not move
    r = rng.normal(0, 1.0, rows)
    d = np.asarray(project_to_hyperplane(jnp.asarray(p), jnp.asarray(w), jnp.asarray(r), norm))
    assert np.all(p + d >= -1e-6) and np.all(p + d <= 1 + 1e-6) and np.all(d[:, 0] == 0)
    feasible = 0
    for i in range(rows):
        best = brute_force_projection(p[i], w[i], r[i], norm)
        if best is None:  # out of the box: the closest corner, which overshoots nothing
            assert 0 <= (w[i] @ d[i]) * np.sign(r[i]) <= abs(r[i])
            continue
        feasible += 1
        assert w[i] @ d[i] == pytest.approx(r[i], abs=1e-4)
        size = np.abs(d[i]).max() if norm == "linf" else np.linalg.norm(d[i])
        assert size == pytest.approx(best, rel=1e-4, abs=1e-6)
    assert feasible >= rows // 2


def run_fab(clf, eps=EPS, **kwargs):
    kwargs = {"steps": STEPS, "num_target_classes": 3, **kwargs}
    return fab(clf.logits_fn, clf.x, clf.y, eps=eps, **kwargs)


def test_fab_t_breaks_the_fixture_inside_the_ball(clf):
    x_adv = run_fab(clf)
    assert_in_threat_model(x_adv, clf.x, EPS, "linf")
    # Measured: 0.0 (10 steps, 3 targets).
    assert accuracy(clf.logits_fn, x_adv, clf.y) < 0.05
    # Unbroken examples come back unchanged, broken ones are misclassified.
    unchanged = np.all(np.asarray(x_adv == clf.x).reshape(64, -1), axis=1)
    correct = np.asarray(jnp.argmax(clf.logits_fn(x_adv), -1) == clf.y)
    assert np.all(unchanged[correct])


def test_small_eps_gives_x_or_exactly_bounded_points(clf):
    x_adv = run_fab(clf, eps=2 / 255)
    assert_in_threat_model(x_adv, clf.x, 2 / 255, "linf")
    # The fixture is robust at 2/255 (PGD leaves 100%): FAB's minimal perturbations are
    # larger, projecting them into the ball fails, and x comes back.
    np.testing.assert_array_equal(run_fab(clf, eps=0.0), clf.x)
    assert accuracy(clf.logits_fn, x_adv, clf.y) >= accuracy(clf.logits_fn, run_fab(clf), clf.y)


def test_l2_and_untargeted(clf):
    x, y = clf.x[:16], clf.y[:16]
    x_l2 = fab(clf.logits_fn, x, y, eps=1.0, norm="l2", steps=STEPS, num_target_classes=3)
    assert_in_threat_model(x_l2, x, 1.0, "l2")
    # Measured: 0.0 for both.
    assert accuracy(clf.logits_fn, x_l2, y) <= 0.25
    x_untargeted = fab(clf.logits_fn, x, y, eps=EPS, steps=STEPS, targeted=False)
    assert_in_threat_model(x_untargeted, x, EPS, "linf")
    assert accuracy(clf.logits_fn, x_untargeted, y) <= 0.1


def test_deterministic_without_restarts(clf):
    np.testing.assert_array_equal(run_fab(clf, eps=4 / 255), run_fab(clf, eps=4 / 255))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_target_classes": 10}, "num_target_classes"),
        ({"restarts": 2}, "key"),
        ({"eta": -1.0}, "eta"),
        ({"norm": "l1"}, "norm"),
        ({"eps": 8.0}, "did you mean"),
    ],
)
def test_bad_inputs_raise(clf, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fab(clf.logits_fn, clf.x, clf.y, **{"eps": EPS, **kwargs})


def test_eps_rule_reference_counts_only_points_within_eps():
    """One FAB step on a linear model lands at eta = 1.05 times the minimal distance d*.
    With eps = 1.02 d*, fra31/auto-attack's rule (the default) does not count the example
    as broken; the "project" rule clips that point into the ball, still adversarial."""
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.choice([-1.0, 1.0], size=(4, 4, 3)), jnp.float32)
    d_star = 0.02  # L-inf distance to the boundary from x = 0.5 everywhere
    bias = d_star * float(jnp.abs(w).sum())

    def logits_fn(x):
        score = jnp.sum((x - 0.5) * w, axis=(1, 2, 3)) - bias
        return jnp.stack([jnp.zeros_like(score), score], axis=-1)

    x = jnp.full((2, 4, 4, 3), 0.5, jnp.float32)
    y = jnp.zeros((2,), jnp.int32)
    kwargs = dict(eps=1.02 * d_star, steps=1, targeted=False, unroll=1)
    reference = fab(logits_fn, x, y, **kwargs)
    projected = fab(logits_fn, x, y, eps_rule="project", **kwargs)
    assert accuracy(logits_fn, reference, y) == 1.0
    assert accuracy(logits_fn, projected, y) == 0.0
    assert_in_threat_model(projected, x, 1.02 * d_star, "linf")
    # with eps above the point found, both rules count it
    wide = fab(logits_fn, x, y, **dict(kwargs, eps=1.1 * d_star))
    assert accuracy(logits_fn, wide, y) == 0.0
    with pytest.raises(ValueError, match="eps_rule"):
        fab(logits_fn, x, y, eps_rule="nearest", **kwargs)
