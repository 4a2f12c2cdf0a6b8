"""Small building blocks shared by the classifiers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


def normalize(x: jnp.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None):
    """(x - mean) / std per channel, or x unchanged when both are None.

    capjax images are [0, 1]; any mean/std normalisation lives inside the classifier so that
    attacks and purifiers always see [0, 1] pixels.
    """
    if mean is None and std is None:
        return x
    mean = jnp.asarray(mean if mean is not None else 0.0, x.dtype)
    std = jnp.asarray(std if std is not None else 1.0, x.dtype)
    return (x - mean) / std


def classifier_head(
    features: jnp.ndarray, num_classes: int, dtype: Dtype, param_dtype: Dtype
) -> jnp.ndarray:
    """Global average pooling, then the final linear layer, always named `head`.

    Call it inside a classifier's compact `__call__`. Class activation maps need this layer's
    kernel: `params["head"]["kernel"]`, shape (C, num_classes), C being the channel count of
    the last convolutional feature map. Logits come out in float32 whatever the compute dtype.
    """
    pooled = jnp.mean(features, axis=(1, 2))
    dense = nn.Dense(num_classes, dtype=dtype, param_dtype=param_dtype, name="head")
    return dense(pooled).astype(jnp.float32)


def batch_norm(train: bool, dtype: Dtype, param_dtype: Dtype, name: str | None = None, **kw):
    """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5)."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
        **kw,
    )
