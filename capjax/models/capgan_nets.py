"""CAP-GAN's networks: the attentional generator T and the attentional discriminators D.

CAP-GAN (Kang et al., IJCNN 2021, Section III-B) takes its generator and discriminators from
U-GAT-IT (Kim et al., the paper's [17]); the paper gives their parts (encoder E, auxiliary
domain classifier eta, attention map M, decoder G or convolutional classifier) but no layer
layout. The layout below follows the public facts of the U-GAT-IT authors' code
(znxlwm/UGATIT-pytorch, see `docs/sources.md`), scaled to 32x32 inputs by configurable
attributes: 64 base channels, 4 residual blocks, AdaILN with a `rho` the trainer clips to
[0, 1], and a global plus a local spectrally normalised discriminator per domain. The
gamma/beta MLP is capjax's default `light=True` (U-GAT-IT's `--light` option, on pooled
features); U-GAT-IT's own default is the full MLP on the flattened map (`light=False`,
config field `capgan.generator.light`).

The attention is the paper's M = sum_k w^k * psi(E^k): eta is a bias-free Dense layer on the
globally average-pooled (`gap_fc`) and max-pooled (`gmp_fc`) encoder features, and each
layer's kernel, the per-channel importance w^k, reweights the feature maps themselves
(`attention_features`). Upsampling is nearest-neighbour `jax.image.resize` followed by a
convolution, as in U-GAT-IT, and never a transposed convolution, which is slow on XLA:GPU.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from capjax.core.errors import ConfigError

Dtype = Any

# PyTorch's InstanceNorm2d and U-GAT-IT's AdaILN/ILN all use this epsilon.
NORM_EPSILON = 1e-5
# U-GAT-IT's initial mixing weights: AdaILN starts mostly instance-normalised, ILN (the
# decoder's upsampling norm) starts as a pure layer norm.
ADAILN_RHO_INIT = 0.9
ILN_RHO_INIT = 0.0


def attention_features(
    features: jax.Array, gap_kernel: jax.Array, gmp_kernel: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """eta's two logits and the attention features M built from eta's own weights.

    eta (the auxiliary domain classifier) is a bias-free linear layer on the globally pooled
    features; its kernel holds one importance weight per channel, and M = sum_k w^k *
    psi(E^k) reweights each channel of the feature map by it. As in U-GAT-IT, eta has an
    average-pooled and a max-pooled half, whose reweighted maps are concatenated.

    Args:
      features: (N, h, w, C) encoder features E(x).
      gap_kernel: (C, 1) kernel of eta's average-pool half (`gap_fc`).
      gmp_kernel: (C, 1) kernel of eta's max-pool half (`gmp_fc`).

    Returns:
      gap_logits: (N, 1) float32, mean_hw(E) @ gap_kernel.
      gmp_logits: (N, 1) float32, max_hw(E) @ gmp_kernel.
      attended: (N, h, w, 2C) in the features' dtype, [E * gap_kernel, E * gmp_kernel].
    """
    channels = features.shape[-1]
    for name, kernel in (("gap_kernel", gap_kernel), ("gmp_kernel", gmp_kernel)):
        if kernel.shape != (channels, 1):
            raise ConfigError(
                f"attention_features needs {name} of shape ({channels}, 1) for features with "
                f"{channels} channels, got {tuple(kernel.shape)}."
            )
    # The logits are (N, C) @ (C, 1): cheap enough to take in float32 whatever the compute
    # dtype, and the CAM losses compare them with 0/1 targets at weight 1000.
    pooled_avg = jnp.mean(features.astype(jnp.float32), axis=(1, 2))
    pooled_max = jnp.max(features.astype(jnp.float32), axis=(1, 2))
    gap_logits = pooled_avg @ gap_kernel.astype(jnp.float32)
    gmp_logits = pooled_max @ gmp_kernel.astype(jnp.float32)
    attended = jnp.concatenate(
        [
            features * gap_kernel[:, 0].astype(features.dtype),
            features * gmp_kernel[:, 0].astype(features.dtype),
        ],
        axis=-1,
    )
    return gap_logits, gmp_logits, attended


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
    """Reflection padding of the two spatial axes of an NHWC array (PyTorch ReflectionPad2d)."""
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def _instance_and_layer_norm(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x normalised per (image, channel) and per image, both in float32.

    Variances are biased (divide by n), as in PyTorch's InstanceNorm2d; U-GAT-IT's AdaILN
    uses the unbiased torch.var, a factor n / (n - 1) inside the square root (64/63 on 8x8
    maps) that is dropped here so that 1x1 feature maps do not divide by zero.
    """
    x = x.astype(jnp.float32)
    in_mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    in_var = jnp.var(x, axis=(1, 2), keepdims=True)
    ln_mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    ln_var = jnp.var(x, axis=(1, 2, 3), keepdims=True)
    out_in = (x - in_mean) * jax.lax.rsqrt(in_var + NORM_EPSILON)
    out_ln = (x - ln_mean) * jax.lax.rsqrt(ln_var + NORM_EPSILON)
    return out_in, out_ln


def instance_norm(x: jax.Array) -> jax.Array:
    """Affine-free instance norm computed in float32 (bfloat16-safe), returned in x's dtype."""
    out_in, _ = _instance_and_layer_norm(x)
    return out_in.astype(x.dtype)


class AdaILN(nn.Module):
    """Adaptive instance-layer norm: (rho * IN(x) + (1 - rho) * LN(x)) * gamma + beta.

    gamma and beta come from the generator's attention MLP, one per image and channel; `rho`
    is learned per channel and must be clipped to [0, 1] by the trainer after each update
    (U-GAT-IT's RhoClipper), which finds it by its name.

    Attributes:
      dtype: compute dtype of the output (statistics are always float32).
      param_dtype: storage dtype of `rho`.
    """

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, gamma: jax.Array, beta: jax.Array) -> jax.Array:
        """x: (N, h, w, C); gamma, beta: (N, C) -> (N, h, w, C) in `dtype`."""
        channels = x.shape[-1]
        rho = self.param(
            "rho", nn.initializers.constant(ADAILN_RHO_INIT), (channels,), self.param_dtype
        )
        out_in, out_ln = _instance_and_layer_norm(x)
        rho = rho.astype(jnp.float32)
        out = rho * out_in + (1.0 - rho) * out_ln
        gamma = gamma.astype(jnp.float32)[:, None, None, :]
        beta = beta.astype(jnp.float32)[:, None, None, :]
        return (out * gamma + beta).astype(self.dtype)


class ILN(nn.Module):
    """Instance-layer norm with its own learned per-channel `rho`, `gamma` and `beta`.

    Attributes:
      dtype: compute dtype of the output (statistics are always float32).
      param_dtype: storage dtype of the parameters.
    """

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (N, h, w, C) -> (N, h, w, C) in `dtype`."""
        channels = x.shape[-1]
        rho = self.param(
            "rho", nn.initializers.constant(ILN_RHO_INIT), (channels,), self.param_dtype
        )
        gamma = self.param("gamma", nn.initializers.ones, (channels,), self.param_dtype)
        beta = self.param("beta", nn.initializers.zeros, (channels,), self.param_dtype)
        out_in, out_ln = _instance_and_layer_norm(x)
        rho = rho.astype(jnp.float32)
        out = rho * out_in + (1.0 - rho) * out_ln
        out = out * gamma.astype(jnp.float32) + beta.astype(jnp.float32)
        return out.astype(self.dtype)


def _conv(features: int, kernel: int, stride: int, use_bias: bool, dtype, param_dtype, name):
    """Unpadded square convolution; callers reflect-pad first, as U-GAT-IT does."""
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=stride,
        padding="VALID",
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


class ResnetBlock(nn.Module):
    """x + IN(conv3x3(ReLU(IN(conv3x3(x))))), reflect-padded, bias-free convs (encoder)."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (N, h, w, C) -> (N, h, w, C)."""
        channels = x.shape[-1]
        h = _conv(channels, 3, 1, False, self.dtype, self.param_dtype, "conv1")(reflect_pad(x, 1))
        h = nn.relu(instance_norm(h))
        h = _conv(channels, 3, 1, False, self.dtype, self.param_dtype, "conv2")(reflect_pad(h, 1))
        return x + instance_norm(h)


class ResnetAdaILNBlock(nn.Module):
    """x + AdaILN(conv3x3(ReLU(AdaILN(conv3x3(x))))), with the image's gamma/beta (decoder)."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, gamma: jax.Array, beta: jax.Array) -> jax.Array:
        """x: (N, h, w, C); gamma, beta: (N, C) -> (N, h, w, C)."""
        channels = x.shape[-1]
        h = _conv(channels, 3, 1, False, self.dtype, self.param_dtype, "conv1")(reflect_pad(x, 1))
        h = AdaILN(self.dtype, self.param_dtype, name="norm1")(h, gamma, beta)
        h = nn.relu(h)
        h = _conv(channels, 3, 1, False, self.dtype, self.param_dtype, "conv2")(reflect_pad(h, 1))
        h = AdaILN(self.dtype, self.param_dtype, name="norm2")(h, gamma, beta)
        return x + h


class AttentionGenerator(nn.Module):
    """T: encoder -> auxiliary domain classifier eta_T and CAM attention -> AdaILN decoder.

    U-GAT-IT's ResnetGenerator. Encoder: reflect-pad 3, conv7x7, IN, ReLU; `num_downsamples`
    x (reflect-pad 1, conv3x3 stride 2, IN, ReLU) doubling the width; `num_blocks` residual
    blocks. Attention: eta_T (`gap_fc`, `gmp_fc`) gives the domain logits and, through its
    kernels, the attended features (`attention_features`), fused by a 1x1 conv and ReLU; the
    heatmap is their channel sum. An MLP on the (globally pooled, when `light`) attended
    features gives the per-image AdaILN gamma and beta. Decoder: `num_blocks` AdaILN residual
    blocks, then `num_downsamples` x (nearest x2 resize, reflect-pad 1, conv3x3, ILN, ReLU)
    halving the width, then reflect-pad 3, conv7x7 to the image channels, tanh.

    Every conv is bias-free (each is followed by a norm with its own shift) except the 1x1
    fusion conv, as in U-GAT-IT. The network works on [-1, 1] images like U-GAT-IT's, so
    [0, 1] inputs are mapped by 2x - 1 and the tanh output back by (t + 1) / 2.

    Attributes:
      base_width: channels after the stem (U-GAT-IT's ngf); the bottleneck has
        base_width * 2**num_downsamples.
      num_downsamples: stride-2 convs; 2 maps 32x32 images to 8x8 features.
      num_blocks: residual blocks in the encoder and AdaILN blocks in the decoder.
      light: compute gamma/beta from globally average-pooled attended features (U-GAT-IT's
        `--light` option, capjax's default); False: from the flattened map, as U-GAT-IT does
        by default, which ties the parameters to the input size.
      stem_kernel: kernel size of the first and the last convolution (U-GAT-IT: 7). On
        XLA:CPU a 7x7 convolution with 3 channels at full resolution is the slowest layer by
        far (measured: forward + backward of the generator at base width 8, batch 64, was
        dominated by these two), so the CPU-sized configs use 3.
      dtype: compute dtype; param_dtype: storage dtype of the parameters.
    """

    base_width: int = 64
    num_downsamples: int = 2
    num_blocks: int = 4
    light: bool = True
    stem_kernel: int = 7
    residual: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, return_attention: bool = False):
        """Translates images to the other domain.

        Args:
          x: (N, H, W, C) float in [0, 1]; H and W divisible by 2**num_downsamples.
          return_attention: also return eta_T's logits and the attention heatmap.

        Returns:
          x_out: (N, H, W, C) float32 in [0, 1]; with `return_attention`, the tuple
          (x_out, cam_logits (N, 2) float32 [gap, gmp], heatmap (N, h, w) float32), where
          h, w = H / 2**num_downsamples, W / 2**num_downsamples.
        """
        if x.ndim != 4:
            raise ConfigError(f"AttentionGenerator expects NHWC images, got {tuple(x.shape)}.")
        factor = 2**self.num_downsamples
        if x.shape[1] % factor or x.shape[2] % factor or min(x.shape[1:3]) // factor < 2:
            raise ConfigError(
                f"AttentionGenerator with num_downsamples={self.num_downsamples} needs H and W "
                f"divisible by {factor} and at least {2 * factor} (so the decoder restores the "
                f"size and the bottleneck can be reflect-padded); got {tuple(x.shape)}."
            )
        conv = lambda f, k, s, b, name: _conv(f, k, s, b, self.dtype, self.param_dtype, name)
        channels = x.shape[-1]
        h = (2.0 * x.astype(jnp.float32) - 1.0).astype(self.dtype)

        # Encoder E_T.
        width = self.base_width
        k = self.stem_kernel
        h = nn.relu(instance_norm(conv(width, k, 1, False, "stem")(reflect_pad(h, k // 2))))
        for i in range(self.num_downsamples):
            width *= 2
            h = nn.relu(instance_norm(conv(width, 3, 2, False, f"down_{i}")(reflect_pad(h, 1))))
        for i in range(self.num_blocks):
            h = ResnetBlock(self.dtype, self.param_dtype, name=f"block_{i}")(h)
        self.sow("intermediates", "features", h)

        # eta_T and the attention map. The kernels are read through the layers (applied to
        # the identity) so that the attention uses exactly the weights that make the logits.
        eye = jnp.eye(width, dtype=self.dtype)
        dense = lambda f, name: nn.Dense(
            f, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype, name=name
        )
        gap_kernel = dense(1, "gap_fc")(eye)
        gmp_kernel = dense(1, "gmp_fc")(eye)
        gap_logits, gmp_logits, attended = attention_features(h, gap_kernel, gmp_kernel)
        cam_logits = jnp.concatenate([gap_logits, gmp_logits], axis=-1)
        h = nn.relu(conv(width, 1, 1, True, "conv1x1")(attended))
        heatmap = jnp.sum(h.astype(jnp.float32), axis=-1)

        # gamma/beta for the decoder's AdaILN, from the attended features.
        style = jnp.mean(h, axis=(1, 2)) if self.light else h.reshape(h.shape[0], -1)
        style = nn.relu(dense(width, "fc_0")(style))
        style = nn.relu(dense(width, "fc_1")(style))
        gamma = dense(width, "gamma")(style)
        beta = dense(width, "beta")(style)

        # Decoder G.
        for i in range(self.num_blocks):
            h = ResnetAdaILNBlock(self.dtype, self.param_dtype, name=f"up_block_{i}")(
                h, gamma, beta
            )
        for i in range(self.num_downsamples):
            width //= 2
            n, hh, ww, c = h.shape
            h = jax.image.resize(h, (n, 2 * hh, 2 * ww, c), "nearest")
            h = conv(width, 3, 1, False, f"up_{i}")(reflect_pad(h, 1))
            h = nn.relu(ILN(self.dtype, self.param_dtype, name=f"up_norm_{i}")(h))
        if self.residual:
            h = nn.Conv(
                channels,
                (k, k),
                padding="VALID",
                use_bias=False,
                kernel_init=nn.initializers.zeros,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="to_image",
            )(reflect_pad(h, k // 2))
            x_out = jnp.clip(x.astype(jnp.float32) + jnp.tanh(h).astype(jnp.float32), 0.0, 1.0)
        else:
            h = conv(channels, k, 1, False, "to_image")(reflect_pad(h, k // 2))
            x_out = (jnp.tanh(h).astype(jnp.float32) + 1.0) / 2.0
        if return_attention:
            return x_out, cam_logits, heatmap
        return x_out


class AttentionDiscriminator(nn.Module):
    """D: encoder -> eta_D (GAP/GMP fc) attention -> conv classifier; PatchGAN output.

    U-GAT-IT's Discriminator. Encoder: `num_downsamples` x (reflect-pad 1, conv4x4 stride 2,
    LeakyReLU 0.2) from `base_width` channels doubling after the first, then reflect-pad 1,
    conv4x4 stride 1 doubling once more, LeakyReLU. Attention: eta_D (`gap_fc`, `gmp_fc`)
    and the attended features as in the generator, fused by a 1x1 conv and LeakyReLU 0.2;
    the heatmap is their channel sum. Classifier: reflect-pad 1, bias-free conv4x4 to one
    channel. Sizes: an H x W input gives features and heatmap of H / 2**d - 1 and patch
    logits of H / 2**d - 2 per side (d = num_downsamples): 3x3 and 2x2 for the global
    discriminator on 32x32 (d = 3), 7x7 and 6x6 for the local one (d = 2).

    Spectral normalisation (`flax.linen.SpectralNorm`, one power iteration per call, as
    PyTorch's default) wraps every conv and dense layer, except the 1x1 fusion conv, which
    U-GAT-IT leaves unnormalised. Its power-iteration state lives in `batch_stats` and moves
    only with `update_stats=True` (apply with `mutable=["batch_stats"]`). The attention uses
    eta's normalised kernels, the weights that make its logits; U-GAT-IT reads the raw
    kernels there, which differ by a positive factor per half that the linear 1x1 conv
    absorbs.

    Attributes:
      base_width: channels of the first conv (U-GAT-IT's ndf).
      num_downsamples: stride-2 convs; 3 for the global and 2 for the local discriminator.
      spectral_norm: spectrally normalise the layers (U-GAT-IT does); without it the module
        has no `batch_stats` collection.
      dtype: compute dtype; param_dtype: storage dtype of params and spectral-norm state.
    """

    base_width: int = 64
    num_downsamples: int = 3
    spectral_norm: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _maybe_normalised(self, layer: nn.Module, x: jax.Array, update_stats: bool) -> jax.Array:
        """Calls `layer`, through spectral normalisation when it is on."""
        if not self.spectral_norm:
            return layer(x)
        normalised = nn.SpectralNorm(
            layer, dtype=self.param_dtype, param_dtype=self.param_dtype, name=f"{layer.name}_sn"
        )
        return normalised(x, update_stats=update_stats)

    @nn.compact
    def __call__(self, x: jax.Array, update_stats: bool = False):
        """Scores images as real or translated (the LSGAN targets are the trainer's).

        Args:
          x: (N, H, W, C) float in [0, 1]; H, W at least 3 * 2**num_downsamples.
          update_stats: advance the spectral-norm power iteration (training steps of D).

        Returns:
          patch_logits: (N, h - 1, w - 1) float32; cam_logits: (N, 2) float32 [gap, gmp];
          heatmap: (N, h, w) float32; h, w = H / 2**num_downsamples - 1, likewise for W.
        """
        if x.ndim != 4:
            raise ConfigError(f"AttentionDiscriminator expects NHWC images, got {tuple(x.shape)}.")
        min_size = 3 * 2**self.num_downsamples
        if self.num_downsamples < 1 or min(x.shape[1:3]) < min_size:
            raise ConfigError(
                f"AttentionDiscriminator with num_downsamples={self.num_downsamples} needs "
                f"num_downsamples >= 1 and H, W >= {min_size} to leave a patch output; got "
                f"{tuple(x.shape)}."
            )
        conv = lambda f, k, s, b, name: _conv(f, k, s, b, self.dtype, self.param_dtype, name)
        h = (2.0 * x.astype(jnp.float32) - 1.0).astype(self.dtype)

        # Encoder E_D.
        width = self.base_width
        for i in range(self.num_downsamples):
            if i > 0:
                width *= 2
            h = self._maybe_normalised(
                conv(width, 4, 2, True, f"down_{i}"), reflect_pad(h, 1), update_stats
            )
            h = nn.leaky_relu(h, 0.2)
        width *= 2
        h = self._maybe_normalised(
            conv(width, 4, 1, True, "down_last"), reflect_pad(h, 1), update_stats
        )
        h = nn.leaky_relu(h, 0.2)
        self.sow("intermediates", "features", h)

        # eta_D and the attention map, from the (normalised) weights that make the logits.
        eye = jnp.eye(width, dtype=self.dtype)
        kernels = []
        for name in ("gap_fc", "gmp_fc"):
            fc = nn.Dense(
                1, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype, name=name
            )
            kernels.append(self._maybe_normalised(fc, eye, update_stats))
        gap_logits, gmp_logits, attended = attention_features(h, *kernels)
        cam_logits = jnp.concatenate([gap_logits, gmp_logits], axis=-1)
        h = nn.leaky_relu(conv(width, 1, 1, True, "conv1x1")(attended), 0.2)
        heatmap = jnp.sum(h.astype(jnp.float32), axis=-1)

        # Convolutional classifier: one logit per patch.
        logits = self._maybe_normalised(
            conv(1, 4, 1, False, "classifier"), reflect_pad(h, 1), update_stats
        )
        return logits[..., 0].astype(jnp.float32), cam_logits, heatmap


class MultiScaleDiscriminator(nn.Module):
    """One domain's discriminator: a global and a local AttentionDiscriminator (U-GAT-IT).

    Each scale sees the whole image; they differ only in depth, hence in receptive field:
    U-GAT-IT's global D has 7 layers and its local D 5 at 256x256, here `num_downsamples`
    3 (32 -> 4) and 2 (32 -> 8). Submodules are named `scale_0`, `scale_1`, ...

    Attributes:
      base_width: channels of each scale's first conv.
      scales: `num_downsamples` of each scale's AttentionDiscriminator.
      spectral_norm: spectrally normalise every scale's layers.
      dtype: compute dtype; param_dtype: storage dtype of the parameters.
    """

    base_width: int = 64
    scales: tuple[int, ...] = (3, 2)
    spectral_norm: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, update_stats: bool = False
    ) -> list[tuple[jax.Array, jax.Array, jax.Array]]:
        """x: (N, H, W, C) in [0, 1] -> [(patch_logits, cam_logits, heatmap)] per scale."""
        if not self.scales:
            raise ConfigError("MultiScaleDiscriminator needs at least one scale.")
        return [
            AttentionDiscriminator(
                base_width=self.base_width,
                num_downsamples=depth,
                spectral_norm=self.spectral_norm,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"scale_{i}",
            )(x, update_stats=update_stats)
            for i, depth in enumerate(self.scales)
        ]


__all__ = [
    "AdaILN",
    "AttentionDiscriminator",
    "AttentionGenerator",
    "ILN",
    "MultiScaleDiscriminator",
    "ResnetAdaILNBlock",
    "ResnetBlock",
    "attention_features",
    "instance_norm",
    "reflect_pad",
]
