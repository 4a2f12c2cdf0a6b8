"""APE-GAN's networks (Shen et al., 2017, "APE-GAN: adversarial perturbation elimination with
GAN"): a small encoder-decoder generator and a strided-conv discriminator, for CIFAR-size
images.

The paper's CIFAR generator: conv3x3 stride 2 (64) - BN - LeakyReLU(0.2), conv3x3 stride 2
(128) - BN - LeakyReLU, deconv (64) - BN - ReLU, deconv (3) - tanh. Its discriminator:
conv3x3 stride 2 (64) - LeakyReLU, conv3x3 stride 2 (128) - BN - LeakyReLU, conv3x3 stride 2
(256) - BN - LeakyReLU, a linear layer and a sigmoid (here the logit; the losses apply the
sigmoid). Widths are attributes, so tests and smoke configs can build small versions.

Departures, each for a reason:
- Upsampling is a resize (nearest by default, or bilinear) followed by a conv3x3, not a
  transposed convolution: transposed convolutions are slow on XLA:GPU (as in
  `capjax.models.denoiser`), and resize-convolution avoids their checkerboard artefacts
  (Odena et al., 2016). Each stage resizes back to the size its encoder stage started from,
  so any input size comes back whole.
- The tanh output is mapped to [0, 1] by (tanh + 1) / 2, capjax's pixel convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from capjax.core.errors import ConfigError
from capjax.models.layers import batch_norm

Dtype = Any

GENERATOR_WIDTHS = (64, 128)
DISCRIMINATOR_WIDTHS = (64, 128, 256)
UPSAMPLING = ("nearest", "bilinear")


def _check_images(x: jax.Array, who: str) -> None:
    if x.ndim != 4:
        raise ConfigError(f"{who} expects NHWC images, got shape {tuple(x.shape)}.")


class APEGANGenerator(nn.Module):
    """x (N, H, W, C) in [0, 1] -> G(x), same shape, float32 in [0, 1].

    Encoder: per width, conv3x3 stride 2 - BN - LeakyReLU(0.2). Decoder: per encoder stage
    but the first, resize x2 (to that stage's input size) - conv3x3 - BN - ReLU with the
    previous encoder width; then resize to the input size - conv3x3 to the image channels -
    tanh, mapped to [0, 1]. At the default widths: 64, 128, then 64, then 3 channels.

    Attributes:
      widths: channels of the strided encoder convs (the decoder mirrors them).
      upsampling: "nearest" (default) or "bilinear" resize before each decoder conv.
      dtype: compute dtype; param_dtype: storage dtype of the parameters.
    """

    widths: Sequence[int] = GENERATOR_WIDTHS
    upsampling: str = "nearest"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        if self.upsampling not in UPSAMPLING:
            raise ConfigError(
                f"Unknown upsampling {self.upsampling!r}; choose one of {UPSAMPLING}."
            )
        if len(self.widths) < 1:
            raise ConfigError("APEGANGenerator needs at least one encoder width.")
        super().__post_init__()

    def _conv(self, width: int, stride: int = 1, use_bias: bool = False) -> nn.Conv:
        return nn.Conv(
            width,
            (3, 3),
            strides=stride,
            padding=1,
            use_bias=use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )

    def _upsample(self, h: jax.Array, size: tuple[int, int]) -> jax.Array:
        return jax.image.resize(h, h.shape[:1] + size + h.shape[3:], self.upsampling)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_images(x, "APEGANGenerator")
        h = x.astype(self.dtype)
        sizes = []
        for width in self.widths:
            sizes.append(h.shape[1:3])
            # No conv bias: the BatchNorm right after it has its own shift.
            h = self._conv(width, stride=2)(h)
            h = batch_norm(train, self.dtype, self.param_dtype)(h)
            h = nn.leaky_relu(h, 0.2)
        for width, size in zip(reversed(self.widths[:-1]), reversed(sizes[1:]), strict=True):
            h = self._conv(width)(self._upsample(h, size))
            h = batch_norm(train, self.dtype, self.param_dtype)(h)
            h = nn.relu(h)
        h = self._conv(x.shape[-1], use_bias=True)(self._upsample(h, sizes[0]))
        return (jnp.tanh(h.astype(jnp.float32)) + 1.0) / 2.0


class APEGANDiscriminator(nn.Module):
    """x (N, H, W, C) in [0, 1] -> one raw logit per image, (N,) float32.

    Per width: conv3x3 stride 2 - [BN, except the first] - LeakyReLU(0.2); then flatten and
    Dense(1). The flatten size follows the input (4 * 4 * 256 at 32x32 and the defaults).

    Attributes:
      widths: channels of the strided convs.
      dtype: compute dtype; param_dtype: storage dtype of the parameters.
    """

    widths: Sequence[int] = DISCRIMINATOR_WIDTHS
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_images(x, "APEGANDiscriminator")
        h = x.astype(self.dtype)
        for i, width in enumerate(self.widths):
            h = nn.Conv(
                width,
                (3, 3),
                strides=2,
                padding=1,
                use_bias=i == 0,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
            )(h)
            if i > 0:
                h = batch_norm(train, self.dtype, self.param_dtype)(h)
            h = nn.leaky_relu(h, 0.2)
        h = h.reshape(h.shape[0], -1)
        logits = nn.Dense(1, dtype=self.dtype, param_dtype=self.param_dtype)(h)
        return logits[:, 0].astype(jnp.float32)


__all__ = ["APEGANDiscriminator", "APEGANGenerator"]
