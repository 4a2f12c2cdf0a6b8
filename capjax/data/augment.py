"""On-device data augmentation: pure jax functions to call inside a jitted train step.

Batches travel host -> device as uint8 (4x less transfer than float32) and become float32
in [0, 1] here, on the device, which is the pixel convention everywhere else in capjax.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from capjax.core.errors import ConfigError


def to_float(images: jax.Array) -> jax.Array:
    """uint8 pixels to float32 in [0, 1]; floating images are taken to be in [0, 1] already.

    Args:
      images: (..., H, W, C) uint8 in [0, 255] or floating in [0, 1].

    Returns:
      float32 array of the same shape in [0, 1].
    """
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ConfigError(f"Images must be uint8 or floating, got {images.dtype}.")
    return images.astype(jnp.float32)


def augment_batch(
    images: jax.Array, key: jax.Array, *, crop_padding: int = 4, flip: bool = True
) -> jax.Array:
    """Random crops with zero padding and random horizontal flips, independent per example.

    Jit-compatible; `crop_padding` and `flip` must be static (Python values), e.g.
    `jax.jit(augment_batch, static_argnames=("crop_padding", "flip"))`.

    Args:
      images: (N, H, W, C) uint8 or float in [0, 1].
      key: a `jax.random` key.
      crop_padding: pad each side with this many zero pixels, then crop back to (H, W) at a
        uniformly random offset (a shift of up to `crop_padding` pixels); 0 turns it off.
      flip: flip each image left-right with probability 1/2.

    Returns:
      (N, H, W, C) float32 in [0, 1].
    """
    if images.ndim != 4:
        raise ConfigError(f"augment_batch expects (N, H, W, C) images, got shape {images.shape}.")
    if not isinstance(crop_padding, int) or crop_padding < 0:
        raise ConfigError(f"crop_padding must be a non-negative int, got {crop_padding!r}.")
    x = to_float(images)
    n, height, width, channels = x.shape
    crop_key, flip_key = jax.random.split(key)
    if crop_padding:
        p = crop_padding
        padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * p + 1)

        def crop(image: jax.Array, offset: jax.Array) -> jax.Array:
            start = (offset[0], offset[1], 0)
            return jax.lax.dynamic_slice(image, start, (height, width, channels))

        # Pad once, then one dynamic slice per example: a single gather under vmap.
        x = jax.vmap(crop)(padded, offsets)
    if flip:
        flipped = jax.random.bernoulli(flip_key, 0.5, (n,))
        x = jnp.where(flipped[:, None, None, None], x[:, :, ::-1, :], x)
    return x
