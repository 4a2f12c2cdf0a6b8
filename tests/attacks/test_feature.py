"""Tests for feature-space attacks: class activation features/maps, feature_pgd and CAFA."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capjax.attacks._common import random_init
from capjax.attacks.feature import (
    NORMALIZE_FLOOR,
    cafa,
    class_activation_features,
    class_activation_features_fn,
    class_activation_maps,
    feature_distance,
    feature_pgd,
    zoo_class_activation_fn,
)

EPS = 8 / 255


def accuracy(clf, x):
    return float(jnp.mean(jnp.argmax(clf.logits_fn(x), -1) == clf.y[: x.shape[0]]))


@pytest.fixture(scope="module")
def caf(trained_classifier):
    """CAFA's default representation: per-channel class activation features, 32x32."""
    clf = trained_classifier
    return zoo_class_activation_fn(clf.model, clf.variables)


@pytest.fixture(scope="module")
def cam(trained_classifier):
    """The summed class activation map (N, 32, 32), for measuring how much CAFA moves it."""
    clf = trained_classifier
    return jax.jit(zoo_class_activation_fn(clf.model, clf.variables, kind="map"))


@functools.cache
def cafa_runner(caf, steps):
    """One compiled CAFA per step count; eps and key are traced."""
    return jax.jit(lambda x, eps, key: cafa(caf, x, eps=eps, steps=steps, key=key, unroll=1))


# --- class activation features and maps -------------------------------------------------------


def hand_example():
    features = np.array(
        [
            [[[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]], [[3.0, 1.0, 0.0], [0.0, 0.0, 1.0]]],
            [[[0.5, 2.0, 1.0], [1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0], [2.0, 0.0, 4.0]]],
        ],
        np.float32,
    )  # (2, 2, 2, 3)
    kernel = np.array([[1.0, -1.0], [-2.0, 0.5], [0.5, 1.0]], np.float32)  # (3 channels, 2)
    classes = np.array([0, 1], np.int32)
    return features, kernel, classes


def test_maps_and_features_match_hand_computation():
    features, kernel, classes = hand_example()
    weighted = np.zeros_like(features)
    for n in range(2):
        for k in range(3):
            weighted[n, ..., k] = features[n, ..., k] * kernel[k, classes[n]]
    # Example 0 (class 0): maps [[1+0+1, 0-2+0], [3-2+0, 0+0+0.5]] -> ReLU [[2, 0], [1, 0.5]].
    expected_map = np.maximum(weighted.sum(-1), 0)
    np.testing.assert_allclose(expected_map[0], [[2.0, 0.0], [1.0, 0.5]])
    args = (jnp.asarray(features), jnp.asarray(kernel), jnp.asarray(classes))

    raw = class_activation_maps(*args, normalize=None)
    np.testing.assert_allclose(raw, expected_map, rtol=1e-6)
    per_image = class_activation_maps(*args)
    lo, hi = expected_map.min((1, 2), keepdims=True), expected_map.max((1, 2), keepdims=True)
    np.testing.assert_allclose(per_image, (expected_map - lo) / (hi - lo), rtol=1e-6)
    batch = class_activation_maps(*args, normalize="batch")
    expected_batch = (expected_map - expected_map.min()) / (expected_map.max() - expected_map.min())
    np.testing.assert_allclose(batch, expected_batch, rtol=1e-6)

    phi = class_activation_features(*args, normalize=None)
    np.testing.assert_allclose(phi, np.maximum(weighted, 0), rtol=1e-6)
    phi = class_activation_features(*args)
    assert phi.shape == (2, 2, 2, 3)
    np.testing.assert_allclose(phi.max((1, 2, 3)), 1.0, rtol=0, atol=2**-23)
    np.testing.assert_array_equal(phi.min((1, 2, 3)), 0.0)


def test_constant_map_normalises_to_zero_not_nan():
    features, kernel, _ = hand_example()
    zero_kernel = jnp.zeros_like(jnp.asarray(kernel))  # every map is identically 0
    for fn in (class_activation_maps, class_activation_features):
        out = fn(jnp.asarray(features), zero_kernel, jnp.array([0, 1]))
        assert np.all(np.asarray(out) == 0.0)
    assert NORMALIZE_FLOOR > 0


def test_upsampled_maps_shape_and_range(trained_classifier):
    clf = trained_classifier
    _, features = clf.model.apply(clf.variables, clf.x[:16], train=False, return_features=True)
    kernel = clf.variables["params"]["head"]["kernel"]
    classes = jnp.argmax(clf.logits_fn(clf.x[:16]), -1)
    maps = class_activation_maps(features, kernel, classes, size=(32, 32))
    assert maps.shape == (16, 32, 32) and maps.dtype == jnp.float32
    raw = class_activation_maps(features, kernel, classes, size=(32, 32), normalize=None)
    non_constant = np.asarray(raw.max((1, 2)) > raw.min((1, 2)))
    assert non_constant.sum() >= 12  # the test means something only if most maps vary
    maps = np.asarray(maps)
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    # Max is 1 to within an ulp (XLA divides by a broadcast via its reciprocal); min exactly 0.
    np.testing.assert_allclose(maps.max((1, 2))[non_constant], 1.0, rtol=0, atol=2**-23)
    np.testing.assert_array_equal(maps.min((1, 2))[non_constant], 0.0)
    phi = class_activation_features(features, kernel, classes, size=(32, 32))
    assert phi.shape == (16, 32, 32, features.shape[-1])


def test_normalize_order_before_upsampling_is_the_authors_order(trained_classifier):
    """With "before_upsampling", CAFA min-max normalises the feature-resolution maps, then upsamples
    (the authors' order); without upsampling both orders are the same map."""
    clf = trained_classifier
    _, features = clf.model.apply(clf.variables, clf.x[:8], train=False, return_features=True)
    kernel = clf.variables["params"]["head"]["kernel"]
    classes = jnp.argmax(clf.logits_fn(clf.x[:8]), -1)
    for fn in (class_activation_maps, class_activation_features):
        small = fn(features, kernel, classes, size=None)
        expected = jax.image.resize(small, small.shape[:1] + (32, 32) + small.shape[3:], "bilinear")
        before = fn(features, kernel, classes, size=(32, 32), normalize_order="before_upsampling")
        np.testing.assert_allclose(before, expected, rtol=0, atol=1e-6)
        after = fn(features, kernel, classes, size=(32, 32))
        # Half-pixel bilinear 4x upsampling never lands on a source pixel, so the upsampled
        # maxima fall below the normalised 1 where "after" rescales them back to 1.
        assert float(jnp.max(before)) < float(jnp.max(after))
        np.testing.assert_array_equal(
            fn(features, kernel, classes, size=None, normalize_order="before_upsampling"), small
        )
    with pytest.raises(ValueError, match="normalize_order"):
        class_activation_features_fn(clf.logits_fn, kernel, normalize_order="first")


def test_class_activation_fn_uses_the_predicted_class(trained_classifier):
    clf = trained_classifier
    x = clf.x[:16]
    logits, features = clf.model.apply(clf.variables, x, train=False, return_features=True)
    kernel = clf.variables["params"]["head"]["kernel"]
    predicted = jnp.argmax(logits, -1)
    cam_fn = zoo_class_activation_fn(clf.model, clf.variables, kind="map", size=None)
    expected = class_activation_maps(features, kernel, predicted)
    np.testing.assert_array_equal(cam_fn(x), expected)
    other = class_activation_maps(features, kernel, (predicted + 1) % logits.shape[-1])
    assert float(jnp.abs(cam_fn(x) - other).mean()) > 0.05
    # The generic builder with the same callable agrees, and its gradient is finite.
    apply = lambda z: clf.model.apply(clf.variables, z, train=False, return_features=True)
    generic = class_activation_features_fn(apply, kernel, kind="map", size=None)
    np.testing.assert_array_equal(generic(x), expected)
    grad = jax.grad(lambda z: jnp.sum(generic(z) ** 2))(x)
    assert np.all(np.isfinite(np.asarray(grad))) and float(jnp.abs(grad).max()) > 0


# --- feature_pgd and CAFA --------------------------------------------------------------------


def test_cafa_bounds_determinism_and_eps_zero(trained_classifier, caf):
    x = trained_classifier.x[:16]
    run = cafa_runner(caf, 3)
    key = jax.random.key(0)
    x_adv = run(x, EPS, key)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(jnp.abs(x_adv - x).max()) <= EPS  # float32, no tolerance
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert float(jnp.abs(x_adv - x).max()) > 0.9 * EPS  # it does use the budget
    np.testing.assert_array_equal(run(x, EPS, key), x_adv)  # same key: bit-identical
    assert not np.array_equal(run(x, EPS, jax.random.key(1)), x_adv)
    np.testing.assert_array_equal(run(x, 0.0, key), x)  # eps = 0 returns x
    eager = cafa(caf, x, steps=1, key=key, unroll=1)  # unjitted, with value checks
    assert float(jnp.abs(eager - x).max()) <= EPS


def test_feature_pgd_l2_bounds_and_l2_distance(trained_classifier, caf):
    x = trained_classifier.x[:16]
    eps = 0.5
    x_adv = feature_pgd(
        caf, x, eps=eps, step_size=0.1, steps=3, norm="l2", distance="l2",
        key=jax.random.key(0), unroll=1,
    )  # fmt: skip
    norms = np.sqrt(
        ((np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)) ** 2).sum((1, 2, 3))
    )
    assert norms.max() <= eps and norms.min() > 0.5 * eps
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def test_distance_gradient_is_zero_not_nan_at_zero_distance():
    """Algorithm 1 starts at x, where the distance is zero: its gradient must be 0, not NaN."""
    a = jnp.arange(12.0).reshape(2, 6)
    for distance in ("mse", "l2"):
        total = lambda z, d=distance: feature_distance(z, a, d).sum()
        value, grad = jax.value_and_grad(total)(a)
        assert float(value) == 0.0
        np.testing.assert_array_equal(grad, 0.0)
    np.testing.assert_allclose(feature_distance(a + 1.0, a, "l2"), np.sqrt(6.0), rtol=1e-6)
    np.testing.assert_allclose(feature_distance(a + 2.0, a, "mse"), 4.0, rtol=1e-6)


def test_no_random_start_needs_no_key_and_respects_bounds(trained_classifier, caf):
    x = trained_classifier.x[:8]
    x_adv = cafa(caf, x, steps=2, random_start=False, unroll=1)
    assert float(jnp.abs(x_adv - x).max()) <= EPS


def test_distance_grows_with_steps_and_beats_noise(trained_classifier, caf):
    x = trained_classifier.x
    key = jax.random.key(3)
    clean = caf(x)
    distance = lambda z: float(feature_distance(caf(z), clean).mean())
    noise = distance(random_init(key, x, EPS, "linf"))
    after_2 = distance(cafa_runner(caf, 2)(x, EPS, key))
    after_10 = distance(cafa_runner(caf, 10)(x, EPS, key))
    # Measured (64 images): uniform noise 0.00013, 2 steps 0.0083, 10 steps 0.041.
    assert after_10 >= after_2 >= 10 * noise


def test_cafa_fools_the_fixture_and_moves_its_cam(trained_classifier, caf, cam):
    clf = trained_classifier
    x = clf.x
    key = jax.random.key(0)
    x_adv = cafa_runner(caf, 10)(x, EPS, key)
    # Labels are never used, yet disrupting the class activation features misleads the
    # model. Measured: clean 100%, CAFA-10 23%, CAFA-100 5% (per-image normalisation).
    assert accuracy(clf, x) >= 0.9
    assert accuracy(clf, x_adv) <= 0.5
    change = float(jnp.abs(cam(x_adv) - cam(x)).mean())
    noise_change = float(jnp.abs(cam(random_init(key, x, EPS, "linf")) - cam(x)).mean())
    assert change >= 0.15 and change >= 4 * noise_change  # measured: 0.30 vs 0.023


def test_eps_change_does_not_recompile(trained_classifier, caf):
    x = trained_classifier.x[:8]
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(x, eps, step_size, key):
        return cafa(caf, x, eps=eps, step_size=step_size, steps=1, key=key)

    for eps in (2 / 255, 4 / 255, 8 / 255):
        x_adv = run(x, eps, eps / 4, jax.random.key(0))
        assert float(jnp.abs(x_adv - x).max()) <= eps


def test_batch_statistics_are_not_updated(trained_classifier):
    clf = trained_classifier
    before = jax.tree.map(np.array, clf.variables)
    caf = zoo_class_activation_fn(clf.model, clf.variables)
    cafa(caf, clf.x[:8], steps=1, key=jax.random.key(0), unroll=1)
    after = jax.tree.map(np.array, clf.variables)
    jax.tree.map(np.testing.assert_array_equal, before, after)
    assert "batch_stats" in clf.variables


def test_bad_inputs_raise(trained_classifier, caf):
    x = trained_classifier.x[:4]
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cafa(caf, x * 2, key=key)
    with pytest.raises(ValueError, match="floating"):
        cafa(caf, (x * 255).astype(jnp.uint8), key=key)
    with pytest.raises(ValueError, match="NaN"):
        cafa(caf, x.at[0, 0, 0, 0].set(jnp.nan), key=key)
    with pytest.raises(ValueError, match="8/255"):
        cafa(caf, x, eps=8.0, key=key)
    with pytest.raises(ValueError, match=">= 0"):
        cafa(caf, x, eps=-0.1, key=key)
    with pytest.raises(ValueError, match="steps"):
        cafa(caf, x, steps=-1, key=key)
    with pytest.raises(ValueError, match="key"):
        cafa(caf, x)
    with pytest.raises(ValueError, match="step_size"):
        cafa(caf, x, step_size=-0.01, key=key)
    with pytest.raises(ValueError, match="distance"):
        feature_pgd(caf, x, eps=EPS, step_size=0.01, steps=1, distance="cosine", key=key)
    with pytest.raises(ValueError, match="norm"):
        feature_pgd(caf, x, eps=EPS, step_size=0.01, steps=1, norm="l1", key=key)
    with pytest.raises(ValueError, match="features_fn"):
        feature_pgd(lambda z: z[0], x, eps=EPS, step_size=0.01, steps=1, key=key)
    clf = trained_classifier
    with pytest.raises(ValueError, match="kind"):
        zoo_class_activation_fn(clf.model, clf.variables, kind="gradcam")
    with pytest.raises(ValueError, match="normalize"):
        zoo_class_activation_fn(clf.model, clf.variables, normalize="l2")
    with pytest.raises(ValueError, match="size"):
        zoo_class_activation_fn(clf.model, clf.variables, size=32)
    features, kernel, classes = hand_example()
    with pytest.raises(ValueError, match="head_kernel"):
        class_activation_maps(jnp.asarray(features), jnp.asarray(kernel[:2]), classes)
    with pytest.raises(ValueError, match="classes"):
        class_activation_maps(jnp.asarray(features), jnp.asarray(kernel), classes[:1])
