"""VGG-11/16/19 with BatchNorm (Simonyan & Zisserman 2015), CIFAR variant (32x32 inputs).

Conv3x3-BN-ReLU stacks with the standard configurations, 2x2 stride-2 pooling between them,
then global average pooling and the `head` Dense layer. The classic CIFAR VGG pools once more
after the last stack (down to 1x1); here that final pool is skipped, so the returned
`features` are the last convolutional map, 2x2x512 at 32x32 input: CAFD's class activation
maps need a spatial map, and averaging 2x2 then classifying is what the dropped pool + Dense
did up to max-vs-mean.

Max pooling is written as reshape + max rather than `nn.max_pool`, whose gradient lowers to
select-and-scatter, slow on XLA:CPU: the pooling's gradient alone was several times slower,
though in a whole network the convolutions dominate (figures in docs/benchmarks.md). "avg"
uses `nn.avg_pool`, whose gradient was the cheapest of all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from capjax.core.errors import ConfigError
from capjax.models.layers import batch_norm, classifier_head, conv, normalize, pool2x2
from capjax.models.zoo import register_classifier

# Channel counts of the conv layers, "M" a 2x2 pool; the last "M" of the paper's configs is
# left out (see the module docstring).
VGG_CONFIGS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"),
        *(512, 512, 512, 512, "M", 512, 512, 512, 512),
    ),
}

POOLINGS = ("max", "avg")


class VGG(nn.Module):
    """VGG-depth with BatchNorm; the last conv map (unpooled) goes to the `head`.

    Attributes:
      depth: 11, 16 or 19.
      pooling: "max" (the paper's) or "avg" 2x2 pooling between stacks.
      width_multiplier: scales every conv's channel count (1.0 is the paper's 64...512;
        smaller values make cheap test models).
      num_classes: number of logits.
      mean, std: optional per-channel normalisation applied to the [0, 1] input.

    Raises:
      ValueError: at construction, for an unknown depth or pooling.
    """

    depth: int = 16
    pooling: str = "max"
    width_multiplier: float = 1.0
    num_classes: int = 10
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        # Validate at construction so a bad config fails before any tracing or compilation.
        if self.depth not in VGG_CONFIGS:
            raise ConfigError(f"VGG depth must be one of {sorted(VGG_CONFIGS)}, got {self.depth}.")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"VGG pooling must be one of {POOLINGS}, got {self.pooling!r}.")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        """x: (N, H, W, C) in [0, 1] -> logits (N, num_classes) float32.

        With return_features=True returns (logits, features); features is the last
        convolutional feature map before any final pooling, (N, H / 16, W / 16, 512 *
        width_multiplier), i.e. (N, 2, 2, 512) at 32x32, which the head average-pools.
        """
        x = normalize(x, self.mean, self.std).astype(self.dtype)
        for layer in VGG_CONFIGS[self.depth]:
            if layer == "M":
                x = pool2x2(x, self.pooling)
                continue
            # No conv bias: the following BatchNorm's offset makes it redundant.
            width = max(1, round(layer * self.width_multiplier))
            x = conv(width, 3, 1, self.dtype, self.param_dtype)(x)
            x = nn.relu(batch_norm(train, self.dtype, self.param_dtype)(x))
        features = x
        logits = classifier_head(features, self.num_classes, self.dtype, self.param_dtype)
        return (logits, features) if return_features else logits


@register_classifier("vgg11")
def vgg11(**kwargs) -> nn.Module:
    return VGG(depth=11, **kwargs)


@register_classifier("vgg16")
def vgg16(**kwargs) -> nn.Module:
    return VGG(depth=16, **kwargs)


@register_classifier("vgg19")
def vgg19(**kwargs) -> nn.Module:
    return VGG(depth=19, **kwargs)
