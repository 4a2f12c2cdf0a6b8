"""A tiny CNN for tests, the demo and CPU work.

It uses strided convolutions instead of max pooling: on XLA:CPU the gradient of max pooling
(select-and-scatter) is about twice as slow as the convolutions around it (docs/design.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from capjax.models.layers import batch_norm, classifier_head, normalize
from capjax.models.zoo import register_classifier


class TinyCNN(nn.Module):
    """conv-BN-ReLU x (2 per stage) over `widths`, each stage after the first halving the size.

    Attributes:
      num_classes: number of logits.
      widths: channels per stage.
      use_bn: BatchNorm after each convolution (exercises batch statistics in tests).
      mean, std: optional per-channel normalisation applied to the [0, 1] input.
    """

    num_classes: int = 10
    widths: Sequence[int] = (16, 32, 64)
    use_bn: bool = True
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        """x: (N, H, W, C) in [0, 1] -> logits (N, num_classes) float32.

        With return_features=True returns (logits, features), features being the last
        convolutional feature map (N, h, w, widths[-1]) that the head pools.
        """
        x = normalize(x, self.mean, self.std).astype(self.dtype)
        for stage, width in enumerate(self.widths):
            for i in range(2):
                stride = 2 if (stage > 0 and i == 0) else 1
                x = nn.Conv(
                    width,
                    (3, 3),
                    strides=stride,
                    use_bias=not self.use_bn,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                )(x)
                if self.use_bn:
                    x = batch_norm(train, self.dtype, self.param_dtype)(x)
                x = nn.relu(x)
        features = x
        logits = classifier_head(features, self.num_classes, self.dtype, self.param_dtype)
        return (logits, features) if return_features else logits


@register_classifier("tiny")
def tiny(**kwargs) -> nn.Module:
    return TinyCNN(**kwargs)
