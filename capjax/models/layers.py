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


# He et al. (2015) init for ReLU networks, fan-out mode as in torchvision's ResNet/VGG and the
# WRN reference code: it keeps activation variance roughly constant through depth, so even
# an untrained deep model in eval mode (running stats 0/1, no normalisation yet) produces
# non-vanishing features, unlike Flax's default LeCun init (variance halves per ReLU layer).
CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv(
    features: int,
    kernel: int,
    stride: int,
    dtype: Dtype,
    param_dtype: Dtype,
    name: str | None = None,
) -> nn.Conv:
    """Bias-free square convolution padded by kernel // 2 on each side, He-initialised.

    Symmetric padding (not XLA "SAME", which pads (0, 1) at stride 2) gives the same
    windows as the PyTorch reference models. Shared by the zoo's ResNets, WRN and VGG.
    """
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=stride,
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=CONV_INIT,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


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
