"""On-device augmentation: ranges, identity, flips and crops as exact pixel moves."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capjax.data import augment_batch, to_float

augment = jax.jit(augment_batch, static_argnames=("crop_padding", "flip"))
# The reference pixels, converted under jit like augment's (XLA may turn x / 255 into a
# multiplication, which differs from eager division by one ulp).
jit_to_float = jax.jit(to_float)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)


def test_to_float(images):
    x = to_float(jnp.asarray(images))
    assert x.dtype == jnp.float32 and x.shape == images.shape
    np.testing.assert_allclose(x, images / 255.0, atol=1e-7)
    assert to_float(jnp.full((2,), 0.5, jnp.bfloat16)).dtype == jnp.float32
    with pytest.raises(ValueError, match="uint8 or floating"):
        to_float(jnp.zeros((2,), jnp.int32))


def test_shape_dtype_range(images):
    out = augment(images, jax.random.key(0))
    assert out.shape == images.shape and out.dtype == jnp.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    floats = augment(jit_to_float(images), jax.random.key(0))  # float input gives the same result
    np.testing.assert_array_equal(floats, out)


def test_off_is_identity(images):
    out = augment(images, jax.random.key(1), crop_padding=0, flip=False)
    np.testing.assert_array_equal(out, jit_to_float(images))


def test_flip_flips_about_half(images):
    x = np.asarray(jit_to_float(images))
    out = np.asarray(augment(images, jax.random.key(2), crop_padding=0, flip=True))
    flipped = np.array([np.array_equal(o, xi[:, ::-1]) for o, xi in zip(out, x, strict=True)])
    kept = np.array([np.array_equal(o, xi) for o, xi in zip(out, x, strict=True)])
    assert np.all(flipped | kept)
    assert 16 <= flipped.sum() <= 48  # p = 1/2 over 64 images
    other = np.asarray(augment(images, jax.random.key(3), crop_padding=0, flip=True))
    assert not np.array_equal(other, out)


@pytest.mark.parametrize("padding", [1, 3])
def test_crop_is_a_shifted_window(images, padding):
    x = np.asarray(jit_to_float(images))
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    out = np.asarray(augment(images, jax.random.key(4), crop_padding=padding, flip=False))
    offsets = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if np.array_equal(out[i], padded[i, dy : dy + 8, dx : dx + 8])
        ]
        assert len(matches) == 1, f"example {i}: not exactly one window matches"
        offsets.add(matches[0])
    # Independent per example: many different offsets, the unshifted one among them.
    assert len(offsets) >= (2 * padding + 1) ** 2 // 2
    assert (padding, padding) in offsets


def test_crop_and_flip_compose(images):
    x = np.asarray(jit_to_float(images))
    out = np.asarray(augment(images, jax.random.key(5), crop_padding=2, flip=True))
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    for i in range(len(x)):
        windows = [padded[i, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(np.array_equal(out[i], w) or np.array_equal(out[i], w[:, ::-1]) for w in windows)


def test_usable_inside_a_jitted_step(images):
    @functools.partial(jax.jit, static_argnums=2)
    def step(batch, key, padding):
        return augment_batch(batch, key, crop_padding=padding).mean()

    assert 0.0 < float(step(images, jax.random.key(0), 4)) < 1.0


@pytest.mark.parametrize("bad", [dict(crop_padding=-1), dict(crop_padding=1.5)])
def test_bad_arguments(images, bad):
    with pytest.raises(ValueError, match="crop_padding"):
        augment_batch(images, jax.random.key(0), **bad)


def test_bad_rank():
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        augment_batch(jnp.zeros((8, 8, 3), jnp.uint8), jax.random.key(0))
