"""A fast CIFAR-10 classifier in the shape of the public speed-run nets, sized by its widths.

The layout is airbench's (Jordan, 2024), itself a descendant of the ResNet-9 DAWNBench
family (Page, 2018): a 3x3 stem, then three blocks of

    conv3x3 -> 2x2 max pool -> BN -> ReLU -> conv3x3 -> BN -> ReLU

so each block's second convolution already runs at the pooled size, and the classifier's
head is capjax's usual global average pooling + linear `head` (class activation maps work on
it as on every zoo model). What differs from airbench, and why:

- ReLU instead of GELU, and a learned 3x3 stem with BatchNorm instead of the frozen 2x2
  patch-whitening convolution: the whitening layer needs the training images at
  initialisation, and every zoo model initialises from a key and a shape alone.
- Average instead of max global pooling before the head, so the logits are the head of the
  pooled features (what CAM assumes), and no 1/9 logit scale.
- Max pooling by reshape + max (`capjax.models.layers.pool2x2`): same values as
  `nn.max_pool`, but a gradient XLA:CPU runs fast (select-and-scatter is slow there).

airbench94's widths are (64, 256, 256) with a 24-wide stem; `configs/cifar_cpu.py` uses a
narrower net sized for a 2-core CPU (its docstring has the measured time and accuracy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from capjax.models.layers import CONV_INIT, batch_norm, classifier_head, normalize, pool2x2
from capjax.models.registry import register_classifier


class SpeedrunCNN(nn.Module):
    """Stem, then one pooled two-convolution block per entry of `widths`.

    Attributes:
      num_classes: number of logits.
      stem_width: channels of the stem convolution (at full resolution).
      widths: channels of each block; each block halves the spatial size.
      mean, std: optional per-channel normalisation applied to the [0, 1] input.
    """

    num_classes: int = 10
    stem_width: int = 24
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

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        """x: (N, H, W, C) in [0, 1] -> logits (N, num_classes) float32.

        With return_features=True returns (logits, features), features being the last
        block's output (N, H / 2**len(widths), W / 2**len(widths), widths[-1]).
        """
        if not self.widths:
            raise ValueError("SpeedrunCNN needs at least one block width.")
        x = normalize(x, self.mean, self.std).astype(self.dtype)
        x = self._conv(self.stem_width, "stem")(x)
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
