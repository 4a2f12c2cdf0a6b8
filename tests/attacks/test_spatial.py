"""Tests for stAdv (spatially transformed adversarial examples) and its flow warp."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capjax.attacks.spatial import FLOW_SMOOTHING, flow_loss, flow_warp, stadv

# The toy fixture classifies 8x8 blocks of constant colour plus pixel noise, so it only
# notices flows that move pixels by a good fraction of a pixel. With the paper's tau = 0.05 the
# smoothness term wins on it (measured: 0% success at the defaults, 100 steps; 100% with
# tau = 0), so the success tests weaken tau and take larger Adam steps.
TAU, LEARNING_RATE, STEPS = 0.001, 0.05, 20


def images(n=4, h=6, w=7, c=3, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(0, 1, (n, h, w, c)).astype(np.float32))


# --- flow_warp and flow_loss ---------------------------------------------------------------


def test_zero_flow_is_the_identity_exactly():
    x = images()
    np.testing.assert_array_equal(flow_warp(x, jnp.zeros(x.shape[:3] + (2,))), x)


def test_integer_flow_shifts_the_image_exactly():
    x = images()
    flow = jnp.zeros(x.shape[:3] + (2,)).at[..., 0].set(1.0).at[..., 1].set(-2.0)
    out = flow_warp(x, flow)
    # out[i, j] = x[i + 1, j - 2] wherever that pixel exists.
    np.testing.assert_array_equal(out[:, :-1, 2:], x[:, 1:, :-2])
    # Beyond the border the sampling position is clamped: the last row repeats.
    np.testing.assert_array_equal(out[:, -1, 2:], x[:, -1, :-2])


def test_fractional_flow_interpolates_bilinearly():
    x = images()
    flow = jnp.zeros(x.shape[:3] + (2,)).at[..., 0].set(0.25).at[..., 1].set(0.5)
    out = np.asarray(flow_warp(x, flow))
    xn = np.asarray(x, np.float64)
    top = 0.5 * xn[:, :-1, :-1] + 0.5 * xn[:, :-1, 1:]
    bottom = 0.5 * xn[:, 1:, :-1] + 0.5 * xn[:, 1:, 1:]
    np.testing.assert_allclose(out[:, :-1, :-1], 0.75 * top + 0.25 * bottom, rtol=1e-6)
    # Derivative at zero flow: the forward difference toward the next row.
    zero = jnp.zeros(x.shape[:3] + (2,))
    tangent = zero.at[..., 0].set(1.0)
    _, deriv = jax.jvp(lambda f: flow_warp(x, f), (zero,), (tangent,))
    # Including the first row, where the sampling position sits on the clamp's bound.
    np.testing.assert_allclose(deriv[:, :-1], x[:, 1:] - x[:, :-1], rtol=1e-6, atol=1e-7)


def test_flow_loss_matches_hand_computation():
    zero = jnp.zeros((2, 3, 4, 2))
    pairs = 3 * 3 + 2 * 4  # horizontal + vertical neighbour pairs in a 3x4 grid
    np.testing.assert_allclose(flow_loss(zero), 2 * pairs * np.sqrt(FLOW_SMOOTHING), rtol=1e-5)
    # One pixel moved by (3, 4) differs by 5 from each of its neighbours (2 at a corner).
    flow = zero.at[0, 0, 0].set(jnp.array([3.0, 4.0]))
    expected = 2 * (2 * np.sqrt(25 + FLOW_SMOOTHING) + (pairs - 2) * np.sqrt(FLOW_SMOOTHING))
    np.testing.assert_allclose(flow_loss(flow)[0], expected, rtol=1e-6)
    # A constant flow (a pure translation) costs nothing beyond the smoothing constant.
    np.testing.assert_allclose(flow_loss(zero + 1.5), flow_loss(zero), rtol=1e-5)


# --- stadv --------------------------------------------------------------------------------------


@functools.cache
def stadv_runner(logits_fn, targeted, steps=STEPS, max_flow=None):
    """One compiled attack per configuration; tau and the learning rate are traced."""

    def run(x, y, tau, learning_rate):
        return stadv(
            logits_fn, x, y, steps=steps, tau=tau, learning_rate=learning_rate,
            targeted=targeted, max_flow=max_flow, return_flow=True, unroll=1,
        )  # fmt: skip

    return jax.jit(run)


def check_output(x, x_adv, flow):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert flow.shape == x.shape[:3] + (2,)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    # Recomputed outside the attack's jit, the warp may differ by round-off.
    np.testing.assert_allclose(x_adv, jnp.clip(flow_warp(x, flow), 0, 1), rtol=0, atol=1e-6)


def test_untargeted_stadv_fools_the_fixture(trained_classifier):
    clf = trained_classifier
    x, y = clf.x[:32], clf.y[:32]
    run = stadv_runner(clf.logits_fn, False)
    x_adv, flow = run(x, y, TAU, LEARNING_RATE)
    check_output(x, x_adv, flow)
    success = float(jnp.mean(jnp.argmax(clf.logits_fn(x_adv), -1) != y))
    assert success >= 0.9  # measured: 100%, mean |flow| 0.20 px, max 0.8 px
    assert 0.0 < float(jnp.abs(flow).mean()) < 0.5
    np.testing.assert_array_equal(run(x, y, TAU, LEARNING_RATE)[0], x_adv)  # deterministic


def test_targeted_stadv_hits_its_targets(trained_classifier):
    clf = trained_classifier
    x = clf.x[:32]
    targets = (clf.y[:32] + 3) % 10
    x_adv, flow = stadv_runner(clf.logits_fn, True)(x, targets, TAU, LEARNING_RATE)
    check_output(x, x_adv, flow)
    hit = float(jnp.mean(jnp.argmax(clf.logits_fn(x_adv), -1) == targets))
    assert hit >= 0.9  # measured: 100%


def test_max_flow_bounds_the_flow_and_tau_does_not_recompile(trained_classifier):
    clf = trained_classifier
    x, y = clf.x[:8], clf.y[:8]
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(x, y, tau, max_flow):
        return stadv(
            clf.logits_fn, x, y, steps=3, tau=tau, learning_rate=0.2, max_flow=max_flow,
            return_flow=True, unroll=1,
        )  # fmt: skip

    for tau, max_flow in ((0.05, 0.1), (0.01, 0.3)):
        x_adv, flow = run(x, y, tau, max_flow)
        assert float(jnp.abs(flow).max()) <= np.float32(max_flow)
        check_output(x, x_adv, flow)


def test_zero_steps_returns_x(trained_classifier):
    clf = trained_classifier
    x, y = clf.x[:4], clf.y[:4]
    run = jax.jit(lambda x, y: stadv(clf.logits_fn, x, y, steps=0, return_flow=True))
    x_adv, flow = run(x, y)
    np.testing.assert_array_equal(x_adv, x)
    np.testing.assert_array_equal(flow, 0.0)


def test_bad_inputs_raise(trained_classifier):
    clf = trained_classifier
    x, y = clf.x[:4], clf.y[:4]
    f = clf.logits_fn
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stadv(f, x + 1.5, y)
    with pytest.raises(ValueError, match="floating"):
        stadv(f, (x * 255).astype(jnp.uint8), y)
    with pytest.raises(ValueError, match="labels must lie"):
        stadv(f, x, y.at[0].set(10))
    with pytest.raises(ValueError, match="shape"):
        stadv(f, x, y[:3])
    with pytest.raises(ValueError, match="integer"):
        stadv(f, x, y.astype(jnp.float32))
    with pytest.raises(ValueError, match="steps"):
        stadv(f, x, y, steps=-1)
    with pytest.raises(ValueError, match="tau"):
        stadv(f, x, y, tau=-0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        stadv(f, x, y, learning_rate=-0.01)
    with pytest.raises(ValueError, match="max_flow"):
        stadv(f, x, y, max_flow=-1.0)
    with pytest.raises(ValueError, match="flow must have shape"):
        flow_warp(x, jnp.zeros((4, 32, 32, 3)))
