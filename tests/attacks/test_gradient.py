"""Tests for FGSM, PGD/BIM, MI-FGSM and TI-DIM on the session's toy classifier.

Measured on the fixture (64 held-out images, clean accuracy 100%), robust accuracy:
eps (/255)        1     2     3     4     6     8
FGSM              1.0   1.0   .97   .91   .31   .03
PGD-10 (eps/4)    1.0   1.0   .89   .41   0     0
MI-FGSM-10        1.0   1.0   .94   .80   .06   0
TI-DIM-10         1.0   1.0   1.0   .95   .28   0
"""

from __future__ import annotations

import functools

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from capjax.attacks.gradient import (
    fgsm,
    gaussian_kernel,
    input_diversity,
    mifgsm,
    pgd,
    smooth_gradient,
    ti_dim,
)

KEY = jax.random.key(0)
MID_EPS = 4 / 255  # where PGD leaves about 40% and FGSM about 90% of the fixture


def accuracy(clf, x_adv, labels=None) -> float:
    labels = clf.y if labels is None else labels
    return float(jnp.mean(jnp.argmax(clf.logits_fn(x_adv), -1) == labels))


def small_attack(name: str, norm: str, logits_fn):
    """A jitted (x, y, eps, key) -> x_adv with few steps, eps traced."""
    calls = {
        "fgsm": lambda x, y, eps, key: fgsm(logits_fn, x, y, eps=eps, norm=norm),
        "pgd": lambda x, y, eps, key: pgd(
            logits_fn, x, y, eps=eps, step_size=eps / 2, steps=3, norm=norm, key=key
        ),
        "mifgsm": lambda x, y, eps, key: mifgsm(logits_fn, x, y, eps=eps, steps=3, norm=norm),
        "ti_dim": lambda x, y, eps, key: ti_dim(logits_fn, x, y, eps=eps, steps=3, key=key),
    }
    return jax.jit(calls[name])


@pytest.fixture(scope="module")
def small(trained_classifier):
    """(name, norm) -> cached jitted small attack, shared by the bounds/eps=0/key tests."""
    return functools.cache(
        lambda name, norm: small_attack(name, norm, trained_classifier.logits_fn)
    )


@pytest.fixture(scope="module")
def pgd_steps(trained_classifier):
    """steps -> jitted PGD (x, y, eps, key), step size eps / 4, eps traced."""

    @functools.cache
    def make(steps, restarts=1):
        return jax.jit(
            lambda x, y, eps, key: pgd(
                trained_classifier.logits_fn,
                x,
                y,
                eps=eps,
                step_size=eps / 4,
                steps=steps,
                restarts=restarts,
                key=key,
            )
        )

    return make


CASES = [
    ("fgsm", "linf"),
    ("fgsm", "l2"),
    ("pgd", "linf"),
    ("pgd", "l2"),
    ("mifgsm", "linf"),
    ("ti_dim", "linf"),
]


@pytest.mark.parametrize("name,norm", CASES)
def test_threat_model_holds_exactly(trained_classifier, small, name, norm):
    x, y = trained_classifier.x[:16], trained_classifier.y[:16]
    # 0.3 / 2.0 force the box and the ball to bind at once; 8/255 and 0.5 are typical.
    for eps in (8 / 255, 0.3) if norm == "linf" else (0.5, 2.0):
        x_adv = small(name, norm)(x, y, eps, KEY)
        assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
        assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
        if norm == "linf":
            assert jnp.abs(x_adv - x).max() <= eps  # float32, no tolerance
        else:
            delta = np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)
            assert np.sqrt((delta**2).sum(axis=(1, 2, 3))).max() <= eps
        assert not np.array_equal(x_adv, x)


@pytest.mark.parametrize("name", ["fgsm", "pgd", "mifgsm", "ti_dim"])
def test_eps_zero_returns_x(trained_classifier, small, name):
    x, y = trained_classifier.x[:16], trained_classifier.y[:16]
    np.testing.assert_array_equal(small(name, "linf")(x, y, 0.0, KEY), x)


@pytest.mark.parametrize("name", ["pgd", "ti_dim"])
def test_same_key_is_bit_identical(trained_classifier, small, name):
    x, y = trained_classifier.x[:16], trained_classifier.y[:16]
    attack = small(name, "linf")
    first, again = attack(x, y, 8 / 255, KEY), attack(x, y, 8 / 255, KEY)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, attack(x, y, 8 / 255, jax.random.key(1)))


def test_bfloat16_images_keep_their_dtype_and_bounds(trained_classifier):
    x = trained_classifier.x[:8].astype(jnp.bfloat16)
    y = trained_classifier.y[:8]
    x_adv = jax.jit(lambda x, y: fgsm(trained_classifier.logits_fn, x, y, eps=8 / 255))(x, y)
    assert x_adv.dtype == jnp.bfloat16
    assert jnp.abs(x_adv - x).max() <= jnp.asarray(8 / 255, jnp.bfloat16)
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1


def test_changing_eps_does_not_recompile(trained_classifier):
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def attack(x, y, eps):
        return pgd(
            trained_classifier.logits_fn,
            x,
            y,
            eps=eps,
            step_size=eps / 2,
            steps=2,
            random_start=False,
        )

    x, y = trained_classifier.x[:8], trained_classifier.y[:8]
    for eps in (1 / 255, 2 / 255, 8 / 255):
        attack(x, y, eps)  # a second trace would raise


def test_robust_accuracy_falls_with_eps_and_pgd_breaks_the_model(trained_classifier, pgd_steps):
    clf = trained_classifier
    attack = pgd_steps(10)
    accs = [accuracy(clf, attack(clf.x, clf.y, e / 255, KEY)) for e in (0, 2, 3, 4, 6, 8)]
    assert accs[0] == accuracy(clf, clf.x)
    assert all(a >= b for a, b in zip(accs, accs[1:], strict=False)), accs
    assert accs[-1] < 0.05, f"PGD-10 at 8/255 leaves {accs[-1]:.0%} (must be < 5%)"


def test_robust_accuracy_does_not_rise_with_steps_or_restarts(trained_classifier, pgd_steps):
    clf = trained_classifier
    by_steps = [accuracy(clf, pgd_steps(s)(clf.x, clf.y, MID_EPS, KEY)) for s in (1, 3, 10)]
    assert by_steps[0] >= by_steps[1] >= by_steps[2] and by_steps[0] > by_steps[2], by_steps
    by_restarts = [accuracy(clf, pgd_steps(3, r)(clf.x, clf.y, MID_EPS, KEY)) for r in (1, 3)]
    assert by_restarts[0] >= by_restarts[1], by_restarts
    assert by_restarts[0] == by_steps[1]  # restart 0 is the single run


def test_last_iterate_is_plain_sign_ascent_and_never_beats_the_best(trained_classifier):
    clf = trained_classifier
    x, y, eps, step = clf.x, clf.y, MID_EPS, MID_EPS / 4

    def ce(z):  # summed, so that each example's gradient is its own loss's
        logits = clf.logits_fn(z)
        return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    x_ref = x  # Madry et al.'s loop, written out
    for _ in range(5):
        x_ref = x_ref + step * jnp.sign(jax.grad(ce)(x_ref))
        x_ref = jnp.clip(jnp.clip(x_ref, x - eps, x + eps), 0, 1)
    options = dict(eps=eps, step_size=step, steps=5, random_start=False)
    last = jax.jit(lambda x, y: pgd(clf.logits_fn, x, y, best_iterate=False, **options))(x, y)
    np.testing.assert_allclose(last, x_ref, atol=1e-6)
    best = jax.jit(lambda x, y: pgd(clf.logits_fn, x, y, **options))(x, y)
    assert accuracy(clf, best) <= accuracy(clf, last)
    mi = jax.jit(lambda x, y: mifgsm(clf.logits_fn, x, y, eps=eps, steps=3, best_iterate=False))
    assert accuracy(clf, mifgsm(clf.logits_fn, x, y, eps=eps, steps=3)) <= accuracy(clf, mi(x, y))


def test_last_iterate_restarts_keep_the_better_run(trained_classifier):
    clf = trained_classifier

    def attack(restarts):
        return jax.jit(
            lambda x, y: pgd(
                clf.logits_fn,
                x,
                y,
                eps=MID_EPS,
                step_size=MID_EPS / 4,
                steps=3,
                restarts=restarts,
                key=KEY,
                best_iterate=False,
            )
        )(clf.x, clf.y)

    one, three = attack(1), attack(3)
    assert accuracy(clf, three) <= accuracy(clf, one)
    assert float(jnp.max(jnp.abs(three - clf.x))) <= MID_EPS + 1e-6


def test_iterative_attacks_beat_fgsm(trained_classifier, pgd_steps):
    clf = trained_classifier
    acc_fgsm = accuracy(clf, fgsm(clf.logits_fn, clf.x, clf.y, eps=MID_EPS))
    acc_pgd = accuracy(clf, pgd_steps(10)(clf.x, clf.y, MID_EPS, KEY))
    acc_mi = accuracy(
        clf, jax.jit(functools.partial(mifgsm, clf.logits_fn, eps=MID_EPS))(clf.x, clf.y)
    )
    assert acc_pgd < acc_fgsm - 0.2 and acc_mi < acc_fgsm, (acc_fgsm, acc_pgd, acc_mi)


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_targeted_pgd_hits_its_targets(trained_classifier, loss):
    clf = trained_classifier
    targets = (clf.y + 1) % 10
    attack = jax.jit(
        lambda x, t: pgd(
            clf.logits_fn,
            x,
            t,
            eps=8 / 255,
            step_size=2 / 255,
            steps=10,
            loss=loss,
            targeted=True,
            key=KEY,
        )
    )
    assert accuracy(clf, attack(clf.x, targets), targets) >= 0.9


def test_attacks_never_update_batch_statistics(trained_classifier, small):
    clf = trained_classifier
    before = jax.tree.map(np.array, clf.variables)
    logits_fn = lambda z: clf.model.apply(clf.variables, z, train=False)
    pgd(logits_fn, clf.x[:8], clf.y[:8], eps=8 / 255, step_size=2 / 255, steps=2, key=KEY)
    small("ti_dim", "linf")(clf.x[:16], clf.y[:16], 8 / 255, KEY)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, clf.variables))
    # A logits_fn that would update the statistics fails loudly rather than silently.
    training_fn = lambda z: clf.model.apply(clf.variables, z, train=True)
    with pytest.raises(flax.errors.ModifyScopeVariableError, match="batch_stats"):
        fgsm(training_fn, clf.x[:8], clf.y[:8], eps=8 / 255)


def test_sharded_batch_matches_unsharded(trained_classifier, pgd_steps):
    clf = trained_classifier
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    batch = NamedSharding(mesh, PartitionSpec("data"))
    x, y = jax.device_put(clf.x, batch), jax.device_put(clf.y, batch)
    attack = pgd_steps(3)
    sharded = attack(x, y, MID_EPS, KEY)
    assert sharded.sharding.is_equivalent_to(batch, x.ndim)
    np.testing.assert_allclose(sharded, attack(clf.x, clf.y, MID_EPS, KEY), atol=1e-6)


def test_ti_smoothing_is_the_papers_depthwise_convolution():
    g = jax.random.normal(KEY, (2, 32, 32, 3))
    k1 = gaussian_kernel(15, 3.0)
    kernel = jnp.outer(k1, k1)
    assert abs(float(kernel.sum()) - 1) < 1e-6 and int(jnp.argmax(kernel)) == 7 * 15 + 7
    rhs = jnp.tile(kernel[:, :, None, None], (1, 1, 1, 3))
    ref = jax.lax.conv_general_dilated(
        g, rhs, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=3
    )
    np.testing.assert_allclose(smooth_gradient(g, k1), ref, atol=1e-6)


def test_input_diversity_static_shapes_and_probability():
    diversify = jax.jit(lambda z, k, p: input_diversity(z, k, prob=p, canvas=36))
    x = jax.random.uniform(KEY, (16, 32, 32, 3))
    np.testing.assert_array_equal(diversify(x, KEY, 0.0), x)
    out = diversify(jnp.ones_like(x), KEY, 1.0)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1 + 1e-6
    # The zero padding shows: an image resized to s in [32, 36) keeps about (s / 36)^2 of its
    # mass (measured: 0.77 to 0.94, whole output pixels).
    mass = np.asarray(out.mean(axis=(1, 2, 3)))
    assert np.all(mass < 0.95) and np.all(mass > 0.75) and len(np.unique(mass)) > 1


def _bad(**overrides):
    return overrides


BAD_INPUTS = [
    ("pgd", _bad(x=lambda x: x + 0.5), r"must lie in \[0, 1\]"),
    ("pgd", _bad(x=lambda x: (x * 255).astype(jnp.uint8)), "floating"),
    ("pgd", _bad(x=lambda x: x.at[0, 0, 0, 0].set(jnp.nan)), "NaN"),
    ("pgd", _bad(x=lambda x: x[0]), r"\(N, H, W, C\)"),
    ("pgd", _bad(y=lambda y: y.at[0].set(10)), r"labels must lie in \[0, 10\)"),
    ("pgd", _bad(y=lambda y: y.at[0].set(-1)), "labels must lie"),
    ("pgd", _bad(y=lambda y: y[:, None]), "y must have shape"),
    ("pgd", _bad(y=lambda y: y.astype(jnp.float32)), "integer"),
    ("pgd", _bad(eps=-0.1), "eps must be"),
    ("pgd", _bad(eps=8.0), "did you mean 8/255"),
    ("pgd", _bad(steps=-1), "steps must be >= 0"),
    ("pgd", _bad(steps=2.0), "steps must be a Python int"),
    ("pgd", _bad(norm="l1"), "Unknown norm"),
    ("pgd", _bad(loss="hinge"), "Unknown loss"),
    ("pgd", _bad(step_size=-1.0), "step_size must be"),
    ("pgd", _bad(restarts=0), "restarts"),
    ("pgd", _bad(key=None), "key=jax.random.key"),
    ("fgsm", _bad(eps=float("nan")), "eps must be"),
    ("mifgsm", _bad(decay=-1.0), "decay must be"),
    ("ti_dim", _bad(key=None), "key=jax.random.key"),
    ("ti_dim", _bad(kernel_size=4), "odd"),
]
DEFAULTS = {
    "pgd": dict(eps=8 / 255, step_size=2 / 255, steps=2, key=KEY),
    "fgsm": dict(eps=8 / 255),
    "mifgsm": dict(eps=8 / 255, steps=2),
    "ti_dim": dict(eps=8 / 255, steps=2, key=KEY),
}


@pytest.mark.parametrize("name,overrides,match", BAD_INPUTS)
def test_bad_inputs_raise_clear_errors(trained_classifier, name, overrides, match):
    attack = {"pgd": pgd, "fgsm": fgsm, "mifgsm": mifgsm, "ti_dim": ti_dim}[name]
    overrides = dict(overrides)
    x = overrides.pop("x", lambda x: x)(trained_classifier.x[:4])
    y = overrides.pop("y", lambda y: y)(trained_classifier.y[:4])
    with pytest.raises(ValueError, match=match):
        attack(trained_classifier.logits_fn, x, y, **{**DEFAULTS[name], **overrides})
