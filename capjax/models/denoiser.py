"""CAFD's networks: the DUNet denoiser and the VGG-style image discriminator.

CAFD (Zhou et al., ICCV 2021, Section 4.1) uses the "DUNET" of HGD (Liao et al., CVPR 2018)
as its denoiser and a VGG-style discriminator (BasicSR / ESRGAN). The paper names them only;
the layer-by-layer layout below is taken from the facts of the authors' code
(dwDavidxd/CAFD, see `docs/sources.md`), scaled by configurable attributes so tests and
smoke configs can build small versions. Neither network is a classifier, so neither is
registered in the classifier registry.

Upsampling is bilinear `jax.image.resize`, not a transposed convolution: transposed
convolutions are slow on XLA:GPU, and HGD's DUNET upsamples bilinearly too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from capjax.core.errors import ConfigError
from capjax.models.layers import batch_norm

Dtype = Any

# Facts from the authors' code (dwDavidxd/CAFD): HGD's DUNET at CIFAR scale.
DUNET_WIDTHS = (64, 128, 256, 256, 256)
DUNET_ENCODER_BLOCKS = (2, 3, 3, 3, 3)
DUNET_DECODER_BLOCKS = (3, 3, 3, 2)
# Facts from the authors' code: VGG-style discriminator widths and head.
DISCRIMINATOR_WIDTHS = (32, 64, 128, 128)
DISCRIMINATOR_HIDDEN = 100


class ConvBNReLU(nn.Module):
    """`num_convs` x (conv3x3 - BatchNorm - ReLU); the first conv may have stride 2."""

    width: int
    num_convs: int
    first_stride: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i in range(self.num_convs):
            stride = self.first_stride if i == 0 else 1
            # No conv bias: the BatchNorm right after it has its own shift.
            x = nn.Conv(
                self.width,
                (3, 3),
                strides=stride,
                use_bias=False,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
            )(x)
            x = batch_norm(train, self.dtype, self.param_dtype)(x)
            x = nn.relu(x)
        return x


class DUNet(nn.Module):
    """HGD's DUNET denoiser, predicting a residual: x_hat = clip(x + D(x), 0, 1).

    Encoder: block i has `encoder_blocks[i]` conv3x3-BN-ReLU layers of `widths[i]` channels;
    every block after the first starts with a stride-2 conv (32 -> 16 -> 8 -> 4 -> 2 at the
    default depth). Decoder: one block per encoder block but the last, deepest first; each
    upsamples bilinearly to its skip's size, concatenates the skip (the matching encoder
    block's output) and applies `decoder_blocks[j]` stride-1 conv3x3-BN-ReLU layers whose
    width is the skip's, so the decoder widths mirror the encoder (256, 256, 128, 64 by
    default). A final 1x1 conv, named `residual`, maps to the image channels.

    Facts from the authors' code (dwDavidxd/CAFD): encoder [2, 3, 3, 3, 3] with widths
    64, 128, 256, 256, 256; decoder [3, 3, 3, 2] with widths 256, 256, 128, 64; residual
    output. Their decoder blocks also start with a stride-2 conv right after upsampling, which
    undoes the upsampling; that slip is not reproduced. Their output is not clipped; here it
    is, so the purifier's output obeys the [0, 1] pixel convention.

    Attributes:
      widths: channels of the encoder blocks (the decoder mirrors `widths[:-1]`).
      encoder_blocks: conv layers per encoder block, one entry per width.
      decoder_blocks: conv layers per decoder block, `len(widths) - 1` entries.
      zero_init_residual: start the final 1x1 conv at zero, so that the untrained denoiser
        is the identity and training starts from the undefended CAF distance. With a random
        init (False; neither paper nor facts fix the init) its residual has an RMS of about
        0.3 on [0, 1] images, and short runs spend their steps undoing that noise.
      dtype: compute dtype; param_dtype: storage dtype of the parameters.
    """

    widths: Sequence[int] = DUNET_WIDTHS
    encoder_blocks: Sequence[int] = DUNET_ENCODER_BLOCKS
    decoder_blocks: Sequence[int] = DUNET_DECODER_BLOCKS
    zero_init_residual: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        if len(self.encoder_blocks) != len(self.widths) or len(self.widths) < 2:
            raise ConfigError(
                f"DUNet needs one encoder block per width and at least two widths; got "
                f"widths={tuple(self.widths)}, encoder_blocks={tuple(self.encoder_blocks)}."
            )
        if len(self.decoder_blocks) != len(self.widths) - 1:
            raise ConfigError(
                f"DUNet needs len(widths) - 1 = {len(self.widths) - 1} decoder blocks, got "
                f"decoder_blocks={tuple(self.decoder_blocks)}."
            )
        super().__post_init__()

    def _block(self, width: int, convs: int, first_stride: int, name: str) -> ConvBNReLU:
        return ConvBNReLU(
            width=width,
            num_convs=convs,
            first_stride=first_stride,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: (N, H, W, C) float in [0, 1] -> x_hat: (N, H, W, C) float32 in [0, 1]."""
        if x.ndim != 4:
            raise ConfigError(f"DUNet expects NHWC images, got shape {tuple(x.shape)}.")
        x = x.astype(jnp.float32)
        h = x.astype(self.dtype)
        skips = []
        for i, (width, convs) in enumerate(zip(self.widths, self.encoder_blocks, strict=True)):
            h = self._block(width, convs, 1 if i == 0 else 2, f"encoder_{i}")(h, train)
            skips.append(h)
        skips.pop()  # the deepest block's output is `h` itself, not a skip
        for j, convs in enumerate(self.decoder_blocks):
            skip = skips.pop()
            h = jax.image.resize(h, skip.shape[:3] + h.shape[3:], "bilinear")
            h = jnp.concatenate([h, skip], axis=-1)
            h = self._block(skip.shape[-1], convs, 1, f"decoder_{j}")(h, train)
        kernel_init = (
            nn.initializers.zeros if self.zero_init_residual else nn.linear.default_kernel_init
        )
        residual = nn.Conv(
            x.shape[-1],
            (1, 1),
            kernel_init=kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="residual",
        )(h)
        return jnp.clip(x + residual.astype(jnp.float32), 0.0, 1.0)


class CAFDDiscriminator(nn.Module):
    """VGG-style image discriminator returning one raw (pre-sigmoid) logit per image.

    Per width: conv3x3 then conv4x4 stride 2, each followed by BatchNorm and LeakyReLU(0.2);
    then flatten, Dense(hidden), LeakyReLU(0.2), Dense(1). The flatten size follows from the
    input (2 * 2 * 128 = 512 for 32x32 inputs and the default widths).

    Facts from the authors' code (dwDavidxd/CAFD): widths 32, 64, 128, 128 and Linear
    512 -> 100 -> 1 on 32x32 inputs. As in BasicSR's VGGStyleDiscriminator, which the paper
    cites ([35]), the very first conv has a bias and no BatchNorm (normalising the raw image
    statistics would only discard information).

    Attributes:
      widths: channels of the conv pairs.
      hidden: units of the hidden Dense layer.
      output_bias: give the last Dense layer a bias (PyTorch's Linear has one). Off by
        default: CAFD's relativistic losses (Eq. 8, 9) only see differences of logits, in
        which that bias cancels, so its gradient is pure round-off that Adam would blow up
        into lr-sized random steps.
      dtype: compute dtype; param_dtype: storage dtype of the parameters.
    """

    widths: Sequence[int] = DISCRIMINATOR_WIDTHS
    hidden: int = DISCRIMINATOR_HIDDEN
    output_bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: (N, H, W, C) float in [0, 1] -> logits: (N,) float32."""
        if x.ndim != 4:
            raise ConfigError(f"CAFDDiscriminator expects NHWC images, got {tuple(x.shape)}.")
        h = x.astype(self.dtype)
        first = True
        for width in self.widths:
            for kernel, stride in (((3, 3), 1), ((4, 4), 2)):
                # PyTorch pads its 4x4 stride-2 convs by 1: exactly half the size, as here.
                h = nn.Conv(
                    width,
                    kernel,
                    strides=stride,
                    padding=1,
                    use_bias=first,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                )(h)
                if not first:
                    h = batch_norm(train, self.dtype, self.param_dtype)(h)
                h = nn.leaky_relu(h, 0.2)
                first = False
        h = h.reshape(h.shape[0], -1)
        h = nn.Dense(self.hidden, dtype=self.dtype, param_dtype=self.param_dtype)(h)
        h = nn.leaky_relu(h, 0.2)
        logits = nn.Dense(
            1, use_bias=self.output_bias, dtype=self.dtype, param_dtype=self.param_dtype
        )(h)
        return logits[:, 0].astype(jnp.float32)


__all__ = ["CAFDDiscriminator", "ConvBNReLU", "DUNet"]
