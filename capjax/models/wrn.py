"""Wide ResNet WRN-depth-k (Zagoruyko & Komodakis 2016), CIFAR variant.

A WRN is a pre-activation ResNet with a 16-channel stem, three stages of 16k, 32k and 64k
channels with (depth - 4) / 6 blocks each, and optional dropout between the two convolutions
of every block; it reuses `preact_trunk` from `resnet.py`. The last feature map is 8x8 at
32x32 input. WRN-28-10 has 36,479,194 parameters with 10 classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from capjax.core.errors import ConfigError
from capjax.models.layers import classifier_head, normalize
from capjax.models.resnet import preact_trunk
from capjax.models.zoo import register_classifier


class WideResNet(nn.Module):
    """WRN-depth-k.

    With `dropout_rate > 0` and `train=True`, callers must pass `rngs={"dropout": key}` to
    `apply` (together with `mutable=["batch_stats"]`); in eval mode dropout is off and no key
    is needed.

    Attributes:
      depth: total depth 6n + 4 (n blocks per stage), e.g. 16, 28, 34, 40.
      widen_factor: k, the width multiplier of the three stages.
      dropout_rate: dropout probability between the two convolutions of each block.
      num_classes: number of logits.
      mean, std: optional per-channel normalisation applied to the [0, 1] input.

    Raises:
      ValueError: at construction, if depth is not 6n + 4 with n >= 1, widen_factor < 1 or
        dropout_rate is outside [0, 1).
    """

    depth: int = 28
    widen_factor: int = 10
    dropout_rate: float = 0.0
    num_classes: int = 10
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        # Validate at construction so a bad config fails before any tracing or compilation.
        if self.depth < 10 or (self.depth - 4) % 6 != 0:
            raise ConfigError(
                f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, 40, ...), "
                f"got depth={self.depth}."
            )
        if self.widen_factor < 1:
            raise ConfigError(f"WideResNet widen_factor must be >= 1, got {self.widen_factor}.")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError(
                f"WideResNet dropout_rate must be in [0, 1), got {self.dropout_rate}."
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        """x: (N, H, W, C) in [0, 1] -> logits (N, num_classes) float32.

        With return_features=True returns (logits, features); features is the last stage's
        output after the final BN-ReLU, (N, H / 4, W / 4, 64 * widen_factor), e.g.
        (N, 8, 8, 640) for WRN-28-10 at 32x32.
        """
        k = self.widen_factor
        x = normalize(x, self.mean, self.std).astype(self.dtype)
        features = preact_trunk(
            x,
            stem_width=16,
            stage_widths=(16 * k, 32 * k, 64 * k),
            stage_sizes=((self.depth - 4) // 6,) * 3,
            train=train,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            dropout_rate=self.dropout_rate,
        )
        logits = classifier_head(features, self.num_classes, self.dtype, self.param_dtype)
        return (logits, features) if return_features else logits


@register_classifier("wrn")
def wrn(**kwargs) -> nn.Module:
    """WRN with `depth`, `widen_factor` and `dropout_rate` from kwargs (default 28-10)."""
    return WideResNet(**kwargs)


@register_classifier("wrn28_10")
def wrn28_10(**kwargs) -> nn.Module:
    """WRN-28-10; kwargs may still override depth or widen_factor."""
    return WideResNet(**{"depth": 28, "widen_factor": 10, **kwargs})
