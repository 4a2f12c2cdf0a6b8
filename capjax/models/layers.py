"""Small building blocks shared by the classifiers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
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
    Convolutions with tiny outputs run as one matrix product (`conv_or_matmul`).
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
        conv_general_dilated=conv_or_matmul,
    )


# Outputs of at most this many pixels (per image) are computed as a matrix product.
MATMUL_MAX_OUTPUT_PIXELS = 4
_NHWC = jax.lax.ConvDimensionNumbers(
    lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2)
)


def conv_or_matmul(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
):
    """`lax.conv_general_dilated`, except that a plain NHWC convolution with an output of at
    most `MATMUL_MAX_OUTPUT_PIXELS` pixels runs as gathered windows times the kernel (one dot).

    XLA:CPU is pathologically slow at 3x3 convolutions over 2x2 maps (VGG-19's four
    512-channel ones took most of its forward pass); as one dot the same layer is about two
    orders of magnitude faster, forward and backward (figures in docs/benchmarks.md). Same
    values up to float rounding.
    """
    plain = (
        dimension_numbers == _NHWC
        and not any(d != 1 for d in (lhs_dilation or ()))
        and not any(d != 1 for d in (rhs_dilation or ()))
        and feature_group_count == 1
        and not isinstance(padding, str)
    )
    if plain:
        (kh, kw), (sh, sw) = rhs.shape[:2], window_strides
        x = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
        oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
        if 0 < oh * ow <= MATMUL_MAX_OUTPUT_PIXELS:
            windows = [
                x[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]
                for i in range(kh)
                for j in range(kw)
            ]
            cols = jnp.concatenate(windows, axis=-1)  # (N, oh, ow, kh * kw * C_in)
            return jnp.matmul(cols, rhs.reshape(-1, rhs.shape[-1]), precision=precision)
    return jax.lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        precision=precision,
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


def pool2x2(x: jnp.ndarray, pooling: str) -> jnp.ndarray:
    """2x2 stride-2 pooling ("max" by reshape + max); odd trailing rows/columns are dropped.

    "max" gives the values of `nn.max_pool(x, (2, 2), (2, 2))` ("VALID"), but its gradient is
    a compare-and-broadcast instead of XLA's select-and-scatter (slow on CPU). At ties the
    max gradient is split evenly among the tied inputs, where select-and-scatter picks one;
    both are valid subgradients. "avg" is `nn.avg_pool(x, (2, 2), (2, 2))`.

    Args:
      x: (N, H, W, C).
      pooling: "max" or "avg".

    Returns:
      (N, H // 2, W // 2, C).
    """
    if pooling == "avg":
        # reduce_window-sum's gradient is a cheap pad + window sum on CPU, faster than the
        # reshape + mean gradient (measured in `capjax.models.vgg`), so avg keeps the Flax op.
        return nn.avg_pool(x, (2, 2), (2, 2))
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2, :].reshape(n, h // 2, 2, w // 2, 2, c)
    return x.max(axis=(2, 4))
