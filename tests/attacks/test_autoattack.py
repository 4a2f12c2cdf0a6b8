"""AutoAttack: worst case over components, gather vs full batch, jit, rand version, errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capjax.attacks.apgd import apgd, apgd_t
from capjax.attacks.autoattack import COMPONENTS, VERSIONS, autoattack, component_options
from capjax.attacks.fab import fab
from capjax.attacks.square import square

EPS = 4 / 255  # where the fixture is neither robust nor broken by every component
KEY = jax.random.key(0)
# The standard components, made cheap.
OPTIONS = {
    "apgd-ce": {"steps": 5},
    "apgd-t": {"steps": 5, "num_target_classes": 3},
    "fab-t": {"steps": 5, "num_target_classes": 3},
    "square": {"steps": 100},
}


@pytest.fixture(scope="module")
def data(trained_classifier):
    return trained_classifier, trained_classifier.x[:32], trained_classifier.y[:32]


@pytest.fixture(scope="module")
def runs(data):
    """{gather_robust: (x_adv, details)} of the cheap standard version."""
    clf, x, y = data
    return {
        gather: autoattack(
            clf.logits_fn,
            x,
            y,
            eps=EPS,
            key=KEY,
            options=OPTIONS,
            gather_robust=gather,
            return_details=True,
        )  # fmt: skip
        for gather in (True, False)
    }


def test_reference_parameters():
    standard = component_options("standard")
    assert VERSIONS["standard"] == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert standard["apgd-ce"] == {"steps": 100, "restarts": 1}
    assert standard["apgd-t"]["num_target_classes"] == 9
    assert standard["fab-t"] == {"steps": 100, "restarts": 1, "num_target_classes": 9}
    assert standard["square"] == {
        "steps": 5000, "p_init": 0.8, "restarts": 1, "rescale_schedule": False,
    }  # fmt: skip
    assert component_options("plus")["apgd-ce"]["restarts"] == 5
    assert component_options("rand")["apgd-dlr"]["eot_iter"] == 20


def test_gathered_and_full_batch_runs_agree(runs):
    (x_g, d_g), (x_f, d_f) = runs[True], runs[False]
    assert list(d_g) == ["clean", *VERSIONS["standard"]]
    for name in d_g:
        np.testing.assert_array_equal(d_g[name], d_f[name])
    np.testing.assert_array_equal(x_g, x_f)


def test_robust_mask_is_the_intersection_of_the_components(data, runs):
    clf, x, y = data
    x_adv, details = runs[True]
    key = lambda name: jax.random.fold_in(KEY, COMPONENTS.index(name))  # noqa: E731
    alone = {
        "apgd-ce": apgd(clf.logits_fn, x, y, eps=EPS, steps=5, key=key("apgd-ce")),
        "apgd-t": apgd_t(
            clf.logits_fn, x, y, eps=EPS, steps=5, num_target_classes=3, key=key("apgd-t")
        ),
        "fab-t": fab(clf.logits_fn, x, y, eps=EPS, steps=5, num_target_classes=3),
        "square": square(
            clf.logits_fn, x, y, eps=EPS, steps=100, rescale_schedule=False, key=key("square")
        ),
    }
    correct = lambda z: np.asarray(jnp.argmax(clf.logits_fn(z), -1) == y)  # noqa: E731
    robust_alone = {name: correct(z) for name, z in alone.items()}
    robust = np.asarray(details["square"])
    for name, mask in robust_alone.items():
        assert np.all(robust <= mask), name  # no better for the defender than any component
    np.testing.assert_array_equal(
        robust, correct(x) & np.logical_and.reduce(list(robust_alone.values()))
    )
    # Measured: clean 1.0, after APGD-CE 0.375, after APGD-T 0.25, then unchanged.
    assert robust.mean() < np.asarray(details["apgd-ce"]).mean() < 1.0
    # The verdict holds for the returned points: broken ones are misclassified, robust ones
    # come back as x.
    np.testing.assert_array_equal(correct(x_adv), robust)
    np.testing.assert_array_equal(np.asarray(x_adv)[robust], np.asarray(x)[robust])
    assert float(jnp.abs(x_adv - x).max()) <= np.float32(EPS)


def test_batch_size_attacks_in_parts_with_the_same_result(data, runs):
    """Five examples per call (the last part padded) give every example what one call gives:
    each example's randomness is its own."""
    clf, x, y = data
    x_adv, details = autoattack(
        clf.logits_fn, x, y, eps=EPS, key=KEY, options=OPTIONS, batch_size=5,
        return_details=True,
    )  # fmt: skip
    whole_adv, whole = runs[True]
    for name in whole:
        np.testing.assert_array_equal(details[name], whole[name], err_msg=name)
    np.testing.assert_allclose(x_adv, whole_adv, atol=1e-6)


def test_eps_zero_returns_x_and_clean_accuracy(data):
    clf, x, y = data
    x_adv, details = autoattack(
        clf.logits_fn, x, y, eps=0.0, key=KEY, options=OPTIONS, gather_robust=False,
        return_details=True,
    )  # fmt: skip
    np.testing.assert_array_equal(x_adv, x)
    np.testing.assert_array_equal(details["square"], details["clean"])


def test_works_under_jit_without_retracing(data, runs):
    clf, x, y = data

    @jax.jit
    @chex.assert_max_traces(n=1)
    def evaluate(eps):
        return autoattack(
            clf.logits_fn, x, y, eps=eps, version="custom", attacks_to_run=("apgd-ce", "apgd-t"),
            options=OPTIONS, key=KEY, return_details=True,
        )  # fmt: skip

    x_adv, details = evaluate(EPS)
    evaluate(EPS / 2)
    np.testing.assert_array_equal(details["apgd-t"], runs[False][1]["apgd-t"])
    np.testing.assert_array_equal(x_adv, evaluate(EPS)[0])


def test_rand_version_with_a_randomized_defense(data):
    clf, x, y = data

    def noisy_logits(z, key):
        return clf.logits_fn(jnp.clip(z + 0.01 * jax.random.normal(key, z.shape), 0, 1))

    cheap = {"steps": 3, "eot_iter": 2}
    x_adv, details = autoattack(
        noisy_logits, x[:8], y[:8], eps=8 / 255, version="rand", key=KEY,
        options={"apgd-ce": cheap, "apgd-dlr": cheap}, return_details=True,
    )  # fmt: skip
    assert list(details) == ["clean", "apgd-ce", "apgd-dlr"]
    assert float(jnp.abs(x_adv - x[:8]).max()) <= np.float32(8 / 255)
    assert float(details["apgd-dlr"].mean()) <= 0.25


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"version": "fast"}, "version"),
        ({"attacks_to_run": ("apgd-ce",)}, "custom"),
        ({"version": "custom"}, "attacks_to_run"),
        ({"version": "custom", "attacks_to_run": ("pgd",)}, "Unknown AutoAttack"),
        ({"options": {"squares": {}}}, "Unknown AutoAttack"),
        ({"key": None}, "key"),
        ({"eps": 8.0}, "did you mean"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 8, "gather_robust": False}, "gather mode"),
    ],
)
def test_bad_inputs_raise(data, kwargs, message):
    clf, x, y = data
    with pytest.raises(ValueError, match=message):
        autoattack(clf.logits_fn, x, y, **{"eps": EPS, "key": KEY, **kwargs})
