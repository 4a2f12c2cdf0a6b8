"""Square Attack: threat model, schedule, score-only access, strength, determinism, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attack_checks import accuracy, assert_in_threat_model

from capjax.attacks.square import p_schedule, square

EPS = 8 / 255
QUERIES = 300


def run_square(clf, logits_fn=None, eps=EPS, **kwargs):
    kwargs = {"steps": QUERIES, "key": jax.random.key(0), **kwargs}
    return square(logits_fn or clf.logits_fn, clf.x, clf.y, eps=eps, **kwargs)


@pytest.fixture(scope="module")
def square_8(clf):
    return run_square(clf)


def test_p_schedule_is_the_reference_one():
    steps = [0, 10, 11, 50, 51, 200, 201, 500, 501, 1000, 1001, 2000, 2001, 4000, 4001, 6001, 8001]
    p = [float(p_schedule(jnp.asarray(s), 10000, 0.8, False)) for s in steps]
    expected = [0.8, 0.8] + [0.8 / 2**k for k in (1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 8, 9)]
    np.testing.assert_allclose(p, expected)
    # Rescaled to 1000 queries, step i plays the reference's step 10 * i.
    assert float(p_schedule(jnp.asarray(5), 1000, 0.8, True)) == pytest.approx(0.4)
    assert float(p_schedule(jnp.asarray(5), 5000, 0.8, False)) == pytest.approx(0.8)


def reference_p(it: int, n_iters: int, p_init: float, rescale: bool) -> float:
    """fra31/auto-attack's `p_selection`, with its float rescaling."""
    if rescale:
        it = int(it / n_iters * 10000)
    halvings = sum(it > h for h in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
    return p_init / 2**halvings


@pytest.mark.parametrize("rescale", [True, False])
@pytest.mark.parametrize("steps", [7, 300, 1000, 5000, 9999, 400_000])
def test_p_schedule_matches_the_reference_at_every_length(steps, rescale):
    # 400,000 steps: step * 10000 passes int32 there, which once wrapped the schedule back to
    # p_init (step 300,000 gave 0.8 instead of 0.8 / 512).
    grid = np.unique(np.linspace(0, steps - 1, num=min(steps, 3000)).astype(int))
    changes = [int(np.ceil((h + 1) * steps / 10000)) + d for h in (10, 500, 8000) for d in (-1, 0)]
    grid = np.unique(np.concatenate([grid, np.clip(changes, 0, steps - 1)]))
    got = jax.vmap(lambda s: p_schedule(s, steps, 0.8, rescale))(jnp.asarray(grid))
    want = [reference_p(int(i), steps, 0.8, rescale) for i in grid]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


def test_square_300_queries_breaks_the_fixture_inside_the_ball(clf, square_8):
    assert_in_threat_model(square_8, clf.x, EPS, "linf")
    # Measured: 0.03 after 300 queries (clean 1.0).
    assert accuracy(clf.logits_fn, square_8, clf.y) <= 0.15


def test_l2_bounds_and_strength(clf):
    x, y = clf.x[:16], clf.y[:16]
    x_adv = square(clf.logits_fn, x, y, eps=4.0, norm="l2", steps=100, key=jax.random.key(0))
    assert_in_threat_model(x_adv, x, 4.0, "l2")
    # Measured: 0.0 after 100 queries at L2 eps 4 (0.06 after 1000 at eps 2; clean 1.0).
    assert accuracy(clf.logits_fn, x_adv, y) <= 0.25


def test_eps_zero_same_key_and_monotone_in_eps(clf, square_8):
    np.testing.assert_array_equal(run_square(clf, eps=0.0), clf.x)
    np.testing.assert_array_equal(run_square(clf), square_8)
    # Measured: 0.97 at 4/255, 0.03 at 8/255.
    at_4 = accuracy(clf.logits_fn, run_square(clf, eps=4 / 255), clf.y)
    assert at_4 > accuracy(clf.logits_fn, square_8, clf.y)


def test_uses_only_model_values_and_does_not_recompile_for_eps(clf, square_8):
    traces = []

    def no_gradient(z):
        traces.append(1)
        return jax.lax.stop_gradient(clf.logits_fn(z))

    grad = jax.grad(lambda z: jnp.sum(no_gradient(z)))(clf.x[:2])
    assert not np.any(np.asarray(grad))
    # The same values, no gradient: the same answer, bit for bit.
    np.testing.assert_array_equal(run_square(clf, no_gradient), square_8)
    count = len(traces)
    run_square(clf, no_gradient, eps=4 / 255)
    assert len(traces) == count


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loss": "dlr"}, "loss"),
        ({"key": None}, "key"),
        ({"p_init": -0.5}, "p_init"),
        ({"restarts": 0}, "restarts"),
        ({"norm": "l0"}, "norm"),
    ],
)
def test_bad_inputs_raise(clf, kwargs, message):
    with pytest.raises(ValueError, match=message):
        square(clf.logits_fn, clf.x, clf.y, **{"eps": EPS, "key": jax.random.key(0), **kwargs})
