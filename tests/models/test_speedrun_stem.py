"""The speedrun CNN's stem options: the frozen patch-whitening stem and the stride-2 stem."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from capjax.models.speedrun import WHITEN_NAME, SpeedrunCNN
from capjax.train.classifier import ClassifierTrainer
from capjax.train.optim import make_optimizer

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def _images(n=16, seed=0):
    # Correlated channels and neighbouring pixels, as in natural images, plus pixel noise.
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, (n, 16, 16, 1))
    x = np.repeat(np.repeat(base, 2, 1), 2, 2) + 0.5 * rng.uniform(0, 1, (n, 32, 32, 3))
    return (x / 1.5 * 255).astype(np.uint8)


def _model(**kw):
    return SpeedrunCNN(stem="whiten", widths=(8, 16), mean=MEAN, std=STD, **kw)


def test_whitening_decorrelates_the_patches():
    images = _images()
    kernel = _model().fit_to_data(images)[WHITEN_NAME]
    assert kernel.shape == (2, 2, 3, 24)
    x = (images / 255.0 - np.asarray(MEAN)) / np.asarray(STD)
    out = jax.lax.conv_general_dilated(
        jnp.asarray(x, jnp.float32),
        jnp.asarray(kernel),
        (1, 1),
        "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision="highest",
    )
    positive = np.asarray(out).reshape(-1, 24)[:, :12].astype(np.float64)
    cov = positive.T @ positive / len(positive)
    np.testing.assert_allclose(np.diag(cov), 1.0, atol=0.02)  # up to the eps regulariser
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0.0, atol=0.02)
    np.testing.assert_allclose(np.asarray(out)[..., 12:], -np.asarray(out)[..., :12], atol=1e-4)


def test_learned_stem_has_nothing_to_fit():
    assert SpeedrunCNN(widths=(8, 16)).fit_to_data(_images()) == {}


@pytest.mark.parametrize("stride, features", [(1, (2, 8, 8, 16)), (2, (2, 4, 4, 16))])
def test_whitened_stem_is_frozen_and_keeps_the_pools_exact(stride, features):
    model = _model(stem_stride=stride)
    trainer = ClassifierTrainer(
        model=model,
        tx=make_optimizer(kind="sgd", schedule=optax.constant_schedule(0.5), weight_decay=5e-3),
        schedule=optax.constant_schedule(0.5),
    )
    images = _images()
    trainer.fitted_params = model.fit_to_data(images)
    state = trainer.init_state(jax.random.key(0), (32, 32, 3))
    np.testing.assert_array_equal(state.params[WHITEN_NAME], trainer.fitted_params[WHITEN_NAME])
    _, feats = model.apply(state.variables, jnp.asarray(images[:2] / 255.0), return_features=True)
    assert feats.shape == features
    batch = {"image": jnp.asarray(images), "label": jnp.arange(16) % 10}
    new, _ = jax.jit(trainer.train_step)(state, batch, jax.random.key(1))
    # No gradient and no weight decay reach the whitening; every other kernel moves.
    np.testing.assert_array_equal(new.params[WHITEN_NAME], state.params[WHITEN_NAME])
    assert not np.allclose(new.params["head"]["kernel"], state.params["head"]["kernel"])


def test_whitening_needs_two_filters_per_patch_dimension():
    model = SpeedrunCNN(stem="whiten", stem_width=16, widths=(8,))
    with pytest.raises(ValueError, match="stem_width"):
        model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
