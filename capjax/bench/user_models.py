"""Benchmark models that are not in capjax's zoo: the shapes users bring.

capjax's zoo models are written for XLA (strided convolutions, max pooling as reshape + max,
a global-average-pool head). A figure measured on them alone flatters capjax, so the
benchmarks also run a model written the way a user writes one with plain `flax.linen`:

- `maxpool_cnn`: conv3x3(32)-ReLU-`nn.max_pool`, conv3x3(64)-ReLU-`nn.max_pool`, flatten,
  dense (the model of issue #17's AutoAttack report). Its input gradient goes through
  XLA's select-and-scatter, which is slow on CPU.

`bench_classifier(name, **kwargs)` builds one of these or, for any other name, the zoo
classifier registered under it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from capjax.models import get_classifier
from capjax.models.layers import normalize


class MaxPoolCNN(nn.Module):
    """conv3x3-ReLU-max-pool(2x2) per width, then flatten and a dense head named "head".

    Attributes:
      num_classes: number of logits.
      widths: channels of each convolution.
      mean, std: optional per-channel normalisation of the [0, 1] input.
    """

    num_classes: int = 10
    widths: Sequence[int] = (32, 64)
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        """x: (N, H, W, C) in [0, 1] -> logits (N, num_classes) float32 (and, with
        return_features, the last pooled feature map)."""
        del train  # no BatchNorm or dropout
        x = normalize(x, self.mean, self.std).astype(self.dtype)
        for i, width in enumerate(self.widths):
            x = nn.Conv(
                width, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype, name=f"conv{i + 1}"
            )(x)
            x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
        features = x
        logits = nn.Dense(
            self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="head"
        )(x.reshape(x.shape[0], -1))
        logits = logits.astype(jnp.float32)
        return (logits, features) if return_features else logits


BENCH_MODELS: dict[str, Callable[..., nn.Module]] = {"maxpool_cnn": MaxPoolCNN}


def bench_classifier(name: str, **kwargs: Any) -> nn.Module:
    """The benchmark model `name` (see `BENCH_MODELS`) or the zoo classifier of that name."""
    if name in BENCH_MODELS:
        return BENCH_MODELS[name](**kwargs)
    return get_classifier(name, **kwargs)


class TiledPoolModel:
    """`model` whose `apply` runs through `attacks.tiled_max_pool` (the benches'
    `--tiled-max-pool`): its tiling max pools become reshape + max, everything else is
    `model.apply` unchanged. `init` is the model's."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.init = model.init

    def apply(self, variables: Any, x: Any, **kwargs: Any) -> Any:
        from capjax.attacks import flax_logits_fn, tiled_max_pool

        return tiled_max_pool(flax_logits_fn(self.model, variables, **kwargs))(x)
