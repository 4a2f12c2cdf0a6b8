"""A fast CIFAR-10 classifier in the shape of the public speed-run nets, sized by its widths.

The layout is airbench's (Jordan, 2024), itself a descendant of the ResNet-9 DAWNBench
family (Page, 2018): a 3x3 stem, then three blocks of

    conv3x3 -> 2x2 max pool -> BN -> ReLU -> conv3x3 -> BN -> ReLU

so each block's second convolution already runs at the pooled size, and the classifier's
head is capjax's usual global average pooling + linear `head` (class activation maps work on
it as on every zoo model). What differs from airbench, and why:

- ReLU instead of GELU. The stem is a learned 3x3 convolution with BatchNorm by default;
  `stem="whiten"` is airbench's frozen 2x2 patch-whitening convolution (the eigenvectors of
  the training patches' covariance, scaled by 1 / sqrt(eigenvalue), each with its negative),
  followed by BatchNorm. Its kernel is a parameter that a zoo init fills with a plain
  initialiser; `fit_to_data` (which the classifier task calls on the training images before
  the first step) sets the whitening, and the forward pass stops its gradient. It is padded
  to keep 32x32 (airbench's is "VALID", 31x31), so the 2x2 pools stay exact.
- `stem_stride=2` runs the stem at stride 2, so no layer runs at full resolution.
- Average instead of max global pooling before the head, so the logits are the head of the
  pooled features (what CAM assumes), and no 1/9 logit scale.
- Max pooling by reshape + max (`capjax.models.layers.pool2x2`): same values as
  `nn.max_pool`, but a gradient XLA:CPU runs fast (select-and-scatter is slow there).

airbench94's widths are (64, 256, 256) with a 24-wide stem; `configs/cifar_cpu.py` uses a
narrower net sized for a CPU (its docstring says how the widths were chosen).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from capjax.core.errors import ConfigError
from capjax.models.layers import CONV_INIT, batch_norm, classifier_head, normalize, pool2x2
from capjax.models.zoo import register_classifier

WHITEN_PATCH = 2
# The frozen whitening kernel's parameter name: `capjax.train.optim` leaves parameters named
# `frozen_*` out of weight decay (their gradient is zero).
WHITEN_NAME = "frozen_whiten"


class SpeedrunCNN(nn.Module):
    """Stem, then one pooled two-convolution block per entry of `widths`.

    Attributes:
      num_classes: number of logits.
      stem_width: channels of the stem convolution (twice the patch size, 2 * 2 * 2 * C = 24
        for RGB, with stem="whiten").
      stem: "conv" (learned 3x3) or "whiten" (frozen 2x2 patch whitening; `fit_to_data`).
      stem_stride: 1, or 2 to halve the resolution in the stem.
      widths: channels of each block; each block halves the spatial size.
      mean, std: optional per-channel normalisation applied to the [0, 1] input.
    """

    num_classes: int = 10
    stem_width: int = 24
    stem: str = "conv"
    stem_stride: int = 1
    widths: Sequence[int] = (64, 256, 256)
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _conv(self, width: int, name: str):
        return nn.Conv(
            width,
            (3, 3),
            use_bias=False,
            kernel_init=CONV_INIT,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )

    def _stem(self, x):
        if self.stem == "conv":
            conv = nn.Conv(
                self.stem_width,
                (3, 3),
                strides=self.stem_stride,
                use_bias=False,
                kernel_init=CONV_INIT,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="stem",
            )
            return conv(x)
        if self.stem != "whiten":
            raise ConfigError(f"SpeedrunCNN.stem={self.stem!r}: choose 'conv' or 'whiten'.")
        if self.stem_width != 2 * WHITEN_PATCH * WHITEN_PATCH * x.shape[-1]:
            raise ConfigError(
                f"stem='whiten' needs stem_width = 2 x {WHITEN_PATCH}x{WHITEN_PATCH} x channels "
                f"= {2 * WHITEN_PATCH * WHITEN_PATCH * x.shape[-1]}, got {self.stem_width}."
            )
        kernel = self.param(
            WHITEN_NAME,
            CONV_INIT,
            (WHITEN_PATCH, WHITEN_PATCH, x.shape[-1], self.stem_width),
            self.param_dtype,
        )
        pad = (0, WHITEN_PATCH - self.stem_stride)  # keeps H / stride, so pools stay exact
        return jax.lax.conv_general_dilated(
            x,
            jax.lax.stop_gradient(kernel).astype(self.dtype),
            (self.stem_stride, self.stem_stride),
            (pad, pad),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )

    def fit_to_data(self, images: np.ndarray, eps: float = 5e-4) -> dict[str, np.ndarray]:
        """The data-dependent parameters, from training `images` (uint8 or [0, 1], NHWC):
        {WHITEN_NAME: kernel} for the whitening stem, {} for a learned one. Airbench's
        estimate: the uncentred covariance of every 2x2 patch of the normalised images,
        eigenvectors / sqrt(eigenvalue + eps), each filter with its negative."""
        if self.stem != "whiten":
            return {}
        x = np.asarray(images, np.float32)
        if np.asarray(images).dtype == np.uint8:
            x = x / 255.0
        if self.mean is not None:
            x = x - np.asarray(self.mean, np.float32)
        if self.std is not None:
            x = x / np.asarray(self.std, np.float32)
        p = WHITEN_PATCH
        n, h, w, c = x.shape
        patches = np.stack(
            [x[:, i : h - p + 1 + i, j : w - p + 1 + j, :] for i in range(p) for j in range(p)],
            axis=3,
        ).reshape(-1, p * p * c)  # (patches, (h, w, c)) as the HWIO kernel orders them
        patches = patches.astype(np.float64)
        cov = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = np.linalg.eigh(cov)
        scaled = eigenvectors / np.sqrt(eigenvalues + eps)  # columns: (h, w, c) filters
        kernel = np.concatenate([scaled, -scaled], axis=1).reshape(p, p, c, 2 * p * p * c)
        return {WHITEN_NAME: kernel.astype(np.float32)}

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        """x: (N, H, W, C) in [0, 1] -> logits (N, num_classes) float32.

        With return_features=True returns (logits, features), features being the last
        block's output (N, H / 2**len(widths), W / 2**len(widths), widths[-1]).
        """
        if not self.widths:
            raise ConfigError("SpeedrunCNN needs at least one block width.")
        x = normalize(x, self.mean, self.std).astype(self.dtype)
        x = self._stem(x)
        x = nn.relu(batch_norm(train, self.dtype, self.param_dtype, name="stem_bn")(x))
        for block, width in enumerate(self.widths):
            x = self._conv(width, f"block{block}_conv0")(x)
            x = pool2x2(x, "max")
            x = nn.relu(batch_norm(train, self.dtype, self.param_dtype, f"block{block}_bn0")(x))
            x = self._conv(width, f"block{block}_conv1")(x)
            x = nn.relu(batch_norm(train, self.dtype, self.param_dtype, f"block{block}_bn1")(x))
        features = x
        logits = classifier_head(features, self.num_classes, self.dtype, self.param_dtype)
        return (logits, features) if return_features else logits


@register_classifier("speedrun")
def speedrun(**kwargs) -> nn.Module:
    return SpeedrunCNN(**kwargs)
