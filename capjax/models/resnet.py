"""ResNet-18/34/50 and PreAct-ResNet-18, CIFAR variants (32x32 inputs).

CIFAR variant: a 3x3 stride-1 stem and no max pool, so the four stages (64, 128, 256, 512
channels, times 4 for the bottleneck) see 32, 16, 8 and 4 pixels and the last feature map is
4x4. The pre-activation trunk (`preact_trunk`) is shared with the Wide ResNet in `wrn.py`: a
WRN is a PreAct-ResNet with other widths, three stages and dropout inside the blocks.

Convolutions carry no bias: each one feeds a BatchNorm whose offset makes a bias redundant,
which also keeps parameter counts equal to the usual PyTorch CIFAR models (11,173,962 for
ResNet-18 with 10 classes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from capjax.models.layers import Dtype, batch_norm, classifier_head, conv, normalize
from capjax.models.zoo import register_classifier


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU (He et al. 2015).

    The shortcut is a 1x1 conv + BN when the stride or the channel count changes.

    Attributes:
      features: output channels.
      stride: stride of the first convolution (and of the projection shortcut).
    """

    features: int
    stride: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """x: (N, H, W, C) -> (N, H / stride, W / stride, features)."""
        dt, pdt = self.dtype, self.param_dtype
        y = conv(self.features, 3, self.stride, dt, pdt, "conv1")(x)
        y = nn.relu(batch_norm(train, dt, pdt, name="bn1")(y))
        y = conv(self.features, 3, 1, dt, pdt, "conv2")(y)
        y = batch_norm(train, dt, pdt, name="bn2")(y)
        return nn.relu(y + _projection(x, self.features, self.stride, train, dt, pdt))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand to 4 * features, each with BN; shortcut; ReLU.

    Attributes:
      features: width of the inner 3x3 convolution; the block outputs 4 * features channels.
      stride: stride of the 3x3 convolution (and of the projection shortcut).
    """

    features: int
    stride: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    expansion = 4  # output channels per `features` (a class constant, not a field)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """x: (N, H, W, C) -> (N, H / stride, W / stride, 4 * features)."""
        dt, pdt = self.dtype, self.param_dtype
        out = self.features * self.expansion
        y = conv(self.features, 1, 1, dt, pdt, "conv1")(x)
        y = nn.relu(batch_norm(train, dt, pdt, name="bn1")(y))
        y = conv(self.features, 3, self.stride, dt, pdt, "conv2")(y)
        y = nn.relu(batch_norm(train, dt, pdt, name="bn2")(y))
        y = conv(out, 1, 1, dt, pdt, "conv3")(y)
        y = batch_norm(train, dt, pdt, name="bn3")(y)
        return nn.relu(y + _projection(x, out, self.stride, train, dt, pdt))


def _projection(x, features: int, stride: int, train: bool, dtype: Dtype, param_dtype: Dtype):
    """Identity, or 1x1 conv + BN where the residual's shape differs from x's (option B)."""
    if stride == 1 and x.shape[-1] == features:
        return x
    x = conv(features, 1, stride, dtype, param_dtype, "shortcut_conv")(x)
    return batch_norm(train, dtype, param_dtype, name="shortcut_bn")(x)


class ResNet(nn.Module):
    """CIFAR ResNet: conv3x3-BN-ReLU stem, four stages, global average pool, `head`.

    Attributes:
      stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
      block: `BasicBlock` or `Bottleneck`.
      base_width: channels of the stem and first stage; stages use 1, 2, 4, 8 times it
        (64 in the paper; smaller values make cheap test models).
      num_classes: number of logits.
      mean, std: optional per-channel normalisation applied to the [0, 1] input.
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block: type[nn.Module] = BasicBlock
    base_width: int = 64
    num_classes: int = 10
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        """x: (N, H, W, C) in [0, 1] -> logits (N, num_classes) float32.

        With return_features=True returns (logits, features); features is the output of the
        last stage, (N, H / 8, W / 8, 8 * base_width (x4 for Bottleneck)), e.g. (N, 4, 4, 512) for
        ResNet-18 and (N, 4, 4, 2048) for ResNet-50 at 32x32.
        """
        dt, pdt = self.dtype, self.param_dtype
        x = normalize(x, self.mean, self.std).astype(dt)
        x = conv(self.base_width, 3, 1, dt, pdt, "stem_conv")(x)
        x = nn.relu(batch_norm(train, dt, pdt, name="stem_bn")(x))
        for stage, num_blocks in enumerate(self.stage_sizes):
            for i in range(num_blocks):
                stride = 2 if (stage > 0 and i == 0) else 1
                x = self.block(
                    self.base_width * 2**stage,
                    stride,
                    dtype=dt,
                    param_dtype=pdt,
                    name=f"stage{stage + 1}_block{i + 1}",
                )(x, train)
        features = x
        logits = classifier_head(features, self.num_classes, dt, pdt)
        return (logits, features) if return_features else logits


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3 plus shortcut (He et al. 2016, WRN).

    Nothing follows the addition: the next block (or the trunk's final BN-ReLU) activates it.
    When the shape changes the shortcut is a 1x1 conv of the *activated* input, as in both
    papers' reference code, so the raw stem output is never added across a projection.

    Attributes:
      features: output channels.
      stride: stride of the first convolution (and of the projection shortcut).
      dropout_rate: dropout between the two convolutions (Wide ResNet); 0 disables it, in
        which case no "dropout" rng is needed.
    """

    features: int
    stride: int = 1
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """x: (N, H, W, C) -> (N, H / stride, W / stride, features)."""
        dt, pdt = self.dtype, self.param_dtype
        activated = nn.relu(batch_norm(train, dt, pdt, name="bn1")(x))
        if self.stride == 1 and x.shape[-1] == self.features:
            shortcut = x
        else:
            shortcut = conv(self.features, 1, self.stride, dt, pdt, "shortcut_conv")(activated)
        y = conv(self.features, 3, self.stride, dt, pdt, "conv1")(activated)
        y = nn.relu(batch_norm(train, dt, pdt, name="bn2")(y))
        if self.dropout_rate > 0:
            y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        y = conv(self.features, 3, 1, dt, pdt, "conv2")(y)
        return y + shortcut


def preact_trunk(
    x: jnp.ndarray,
    *,
    stem_width: int,
    stage_widths: Sequence[int],
    stage_sizes: Sequence[int],
    train: bool,
    dtype: Dtype,
    param_dtype: Dtype,
    dropout_rate: float = 0.0,
) -> jnp.ndarray:
    """Pre-activation trunk: bare conv3x3 stem, stages of `PreActBlock`, final BN-ReLU.

    Call it inside a compact `__call__` (its layers become the caller's submodules). The
    first stage keeps the resolution, every later one halves it.

    Args:
      x: (N, H, W, C) normalised input in the compute dtype.
      stem_width: channels of the stem convolution.
      stage_widths, stage_sizes: channels and number of blocks of each stage.
      train: BatchNorm in training mode, dropout active.

    Returns:
      (N, H / 2**(S-1), W / 2**(S-1), stage_widths[-1]) after the final BN-ReLU, S stages.
    """
    x = conv(stem_width, 3, 1, dtype, param_dtype, "stem_conv")(x)
    for stage, (width, num_blocks) in enumerate(zip(stage_widths, stage_sizes, strict=True)):
        for i in range(num_blocks):
            x = PreActBlock(
                width,
                2 if (stage > 0 and i == 0) else 1,
                dropout_rate,
                dtype=dtype,
                param_dtype=param_dtype,
                name=f"stage{stage + 1}_block{i + 1}",
            )(x, train)
    # Pre-activation blocks end on an addition, so the trunk owes one last BN-ReLU; features
    # are taken after it so class activation maps see the same tensor the head pools.
    return nn.relu(batch_norm(train, dtype, param_dtype, name="final_bn")(x))


class PreActResNet(nn.Module):
    """CIFAR PreAct-ResNet (He et al. 2016, "Identity Mappings in Deep Residual Networks").

    Attributes:
      stage_sizes: blocks per stage, (2, 2, 2, 2) for PreAct-ResNet-18.
      base_width: stem and first-stage channels; stages use 1, 2, 4, 8 times it.
      num_classes: number of logits.
      mean, std: optional per-channel normalisation applied to the [0, 1] input.
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    base_width: int = 64
    num_classes: int = 10
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        """x: (N, H, W, C) in [0, 1] -> logits (N, num_classes) float32.

        With return_features=True returns (logits, features); features is the last stage's
        output after the final BN-ReLU, (N, H / 8, W / 8, 8 * base_width), (N, 4, 4, 512) at
        32x32.
        """
        x = normalize(x, self.mean, self.std).astype(self.dtype)
        features = preact_trunk(
            x,
            stem_width=self.base_width,
            stage_widths=[self.base_width * 2**s for s in range(len(self.stage_sizes))],
            stage_sizes=self.stage_sizes,
            train=train,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        logits = classifier_head(features, self.num_classes, self.dtype, self.param_dtype)
        return (logits, features) if return_features else logits


@register_classifier("resnet18")
def resnet18(**kwargs) -> nn.Module:
    return ResNet(stage_sizes=(2, 2, 2, 2), block=BasicBlock, **kwargs)


@register_classifier("resnet34")
def resnet34(**kwargs) -> nn.Module:
    return ResNet(stage_sizes=(3, 4, 6, 3), block=BasicBlock, **kwargs)


@register_classifier("resnet50")
def resnet50(**kwargs) -> nn.Module:
    return ResNet(stage_sizes=(3, 4, 6, 3), block=Bottleneck, **kwargs)


@register_classifier("preact_resnet18")
def preact_resnet18(**kwargs) -> nn.Module:
    return PreActResNet(stage_sizes=(2, 2, 2, 2), **kwargs)
