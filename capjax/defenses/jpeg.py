"""JPEG compression as a purifier (Dziugaite et al., 2016; Guo et al., ICLR 2018).

The lossy part of baseline JPEG, written in JAX so that it runs on the whole batch inside
jit: RGB -> YCbCr (JFIF, on the 0-255 scale, rounded to 8-bit samples), level shift by
-128, orthonormal 8x8 block DCT-II (a matrix product per block; JPEG's FDCT is exactly
this transform), division by the IJG quantisation tables (Annex K) scaled to `quality` the
way libjpeg does, rounding (halves away from zero, as libjpeg), dequantisation, inverse
DCT, range limit and rounding of the decoded YCbCr samples, back to RGB, clipping to
[0, 255] and rounding to 8-bit levels. The Huffman stage is lossless and is left out.
Images whose sides are not multiples of the block (8, or 16 with 4:2:0) are padded by edge
replication, as libjpeg does, and cropped back. One-channel images are coded as luminance
only (subsampling does not apply). With subsampling "420" the chroma planes are averaged
over 2x2 pixels before coding and upsampled with libjpeg's default "fancy" triangle filter
after decoding, both with libjpeg's integer rounding.

It is close to, not bit-identical with, libjpeg (PIL): libjpeg computes the DCT and its
inverse in fixed point, so a coefficient that lies near a rounding boundary can land on
the other side and shift its 8x8 block by a few levels. Measured against PIL 13 (libjpeg-
turbo) at quality 75 on 8-bit 32x32 images, mean absolute difference in levels of 1/255:
4:4:4 0.34 (synthetic dataset), 0.09 (CIFAR-10 test images), 0.06 (smooth gradient and a
rectangle), 84-95% of the pixels equal; 4:2:0 0.38, 0.04, 0.63. JPEG itself moved the same
images by 6.2, 1.1 and 2.0 levels at 4:4:4. Recompressing a JPEG at about half its
original quality is the worst case (most coefficients sit on rounding ties): 1.8 levels
at quality 50 on the CIFAR-10 copy, which was saved at quality 75.

The input is taken as it is (continuous): its YCbCr conversion is rounded to 8-bit
samples, as libjpeg's fixed-point conversion of 8-bit RGB is.

Gradients: with `rounding="exact"` all roundings are exact, so the gradient is zero almost
everywhere (JPEG shatters gradients; attack it with BPDA or with the smooth version).
`rounding="smooth"` replaces the coefficient rounding by Shin & Song's (2017)
differentiable approximation round(t) + (t - round(t))**3 and passes the 8-bit sample
roundings straight through (forward rounds, backward is the identity): those steps are at
most half a level, and the cubic there would only multiply each pixel's gradient by a
noisy factor 3 (t - round(t))**2 that averages 1/4. Its forward pass differs from the
exact one by about 1 level on average (the cubic is not the rounding).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from capjax.core.errors import ConfigError
from capjax.defenses._checks import check_images

SUBSAMPLINGS = ("444", "420")
ROUNDINGS = ("exact", "smooth")
BLOCK = 8

# ITU-T T.81 Annex K (the IJG tables): luminance and chrominance quantisation at quality 50.
LUMINANCE_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.int64,
)
CHROMINANCE_TABLE = np.full((8, 8), 99, dtype=np.int64)
CHROMINANCE_TABLE[:4, :4] = [
    [17, 18, 24, 47],
    [18, 21, 26, 66],
    [24, 26, 56, 99],
    [47, 66, 99, 99],
]

# JFIF (ITU-T T.871) full-range conversion; Cb and Cr carry +128, removed by the level shift.
_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    dtype=np.float64,
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)

KeyedPurify = Callable[[jax.Array, jax.Array], jax.Array]


def quantization_table(quality: int, chroma: bool = False) -> np.ndarray:
    """libjpeg's `jpeg_quality_scaling` + `jpeg_add_quant_table` (baseline): (8, 8) int64.

    scale = 5000 // quality below 50, else 200 - 2 * quality; each entry
    (t * scale + 50) // 100 clipped to [1, 255].
    """
    _check_quality(quality)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    base = CHROMINANCE_TABLE if chroma else LUMINANCE_TABLE
    return np.clip((base * scale + 50) // 100, 1, 255)


def dct_matrix(n: int = BLOCK) -> np.ndarray:
    """The orthonormal DCT-II matrix D (n, n): coefficients of a block B are D @ B @ D.T."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    d[0] /= np.sqrt(2.0)
    return d


def _check_quality(quality: int) -> None:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise ConfigError(f"JPEG quality must be a Python int in 1..100, got {quality!r}.")
    if not 1 <= quality <= 100:
        raise ConfigError(f"JPEG quality must lie in 1..100 (75 is the usual), got {quality}.")


def _check_options(quality: int, subsampling: str, rounding: str) -> None:
    _check_quality(quality)
    if subsampling not in SUBSAMPLINGS:
        raise ConfigError(
            f"Unknown subsampling {subsampling!r}; choose '444' (none) or '420' (chroma 2x2)."
        )
    if rounding not in ROUNDINGS:
        raise ConfigError(f"Unknown rounding {rounding!r}; choose one of {ROUNDINGS}.")


def _round_half_away(t: jax.Array) -> jax.Array:
    """Rounds halves away from zero, as libjpeg's quantiser does (jnp.round goes to even)."""
    return jnp.sign(t) * jnp.floor(jnp.abs(t) + 0.5)


def _smooth_round(t: jax.Array) -> jax.Array:
    """Shin & Song (2017): round(t) + (t - round(t))**3, derivative 3 (t - round(t))**2."""
    r = jax.lax.stop_gradient(jnp.round(t))
    return r + (t - r) ** 3


def _straight_through(t: jax.Array, quantize: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """quantize(t) going forward, the identity going backward."""
    return t + jax.lax.stop_gradient(quantize(t) - t)


def _straight_through_round(t: jax.Array) -> jax.Array:
    return _straight_through(t, jnp.round)


def _pad_edge(x: jax.Array, height: int, width: int) -> jax.Array:
    """Edge-replication padding of (N, h, w, C) at the bottom and right to (height, width)."""
    pad_h, pad_w = height - x.shape[1], width - x.shape[2]
    if pad_h == 0 and pad_w == 0:
        return x
    return jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _pad_to(x: jax.Array, multiple: int) -> jax.Array:
    """Pads H and W up to multiples of `multiple` by edge replication, as libjpeg does."""
    return _pad_edge(x, x.shape[1] + -x.shape[1] % multiple, x.shape[2] + -x.shape[2] % multiple)


def _code_plane(
    plane: jax.Array, table: np.ndarray, round_fn: Callable[[jax.Array], jax.Array]
) -> jax.Array:
    """DCT, quantise, dequantise, inverse DCT of level-shifted planes (N, H, W, C), H, W % 8 = 0."""
    n, h, w, c = plane.shape
    d = jnp.asarray(dct_matrix(), plane.dtype)
    blocks = plane.reshape(n, h // BLOCK, BLOCK, w // BLOCK, BLOCK, c)
    coefficients = jnp.einsum("ui,nhiwjc,vj->nhuwvc", d, blocks, d)
    q = jnp.asarray(table, plane.dtype)[None, None, :, None, :, None]
    coefficients = round_fn(coefficients / q) * q
    blocks = jnp.einsum("ui,nhuwvc,vj->nhiwjc", d, coefficients, d)
    return blocks.reshape(n, h, w, c)


def _downsample(plane: jax.Array) -> jax.Array:
    n, h, w, c = plane.shape
    return plane.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _libjpeg_downsample_round(mean: jax.Array) -> jax.Array:
    """libjpeg's h2v2_downsample rounding of a 2x2 mean of integers: floor((sum + b) / 4)
    with the bias b alternating 1, 2 along each row, so that ties go down and up in turn."""
    bias = 1.0 + (jnp.arange(mean.shape[2]) % 2)[None, None, :, None]
    return jnp.floor((4.0 * mean + bias) / 4.0)


def _libjpeg_upsample_round(up: jax.Array) -> jax.Array:
    """libjpeg's h2v2_fancy_upsample rounding: 16 x the output is an integer sum s, and the
    sample is floor((s + b) / 16) with b = 8 on even, 7 on odd output columns."""
    bias = 8.0 - (jnp.arange(up.shape[2]) % 2)[None, None, :, None]
    return jnp.floor((jnp.round(16.0 * up) + bias) / 16.0)


def _upsample(plane: jax.Array) -> jax.Array:
    """libjpeg's "fancy" 2x2 upsampling: a triangle filter, weights 3/4 and 1/4 per axis.

    It is bilinear interpolation at half-pixel centres with edge replication, i.e.
    `jax.image.resize(..., "linear")`. Repeating pixels instead (libjpeg with
    do_fancy_upsampling off) put this module 4.5 levels (mean) from PIL's 4:2:0 on the
    synthetic images, against 0.4 with the triangle filter and libjpeg's rounding.
    """
    n, h, w, c = plane.shape
    return jax.image.resize(plane, (n, 2 * h, 2 * w, c), "linear")


def jpeg(
    x: jax.Array, quality: int = 75, subsampling: str = "444", rounding: str = "exact"
) -> jax.Array:
    """JPEG compression and decompression of a batch.

    Args:
      x: (N, H, W, C) float in [0, 1], C = 3 (RGB) or 1 (grayscale); any H, W.
      quality: IJG quality, a Python int in 1..100.
      subsampling: "444" (no chroma subsampling) or "420" (chroma averaged over 2x2,
        upsampled with libjpeg's triangle filter on decoding); ignored when C = 1.
      rounding: "exact" (gradient zero a.e.) or "smooth" (Shin & Song's cubic for the
        coefficients, straight-through for the 8-bit samples; see the module doc).

    Returns:
      (N, H, W, C) float32 in [0, 1] on the 8-bit grid (multiples of 1/255).
    """
    check_images(x, "jpeg", channels=(1, 3))
    _check_options(quality, subsampling, rounding)
    exact = rounding == "exact"
    round_coefficients = _round_half_away if exact else _smooth_round
    # 8-bit sample roundings (YCbCr in and out of the codec, RGB out): tiny steps, passed
    # straight through by the smooth version.
    round_samples = jnp.round if exact else _straight_through_round
    height, width, channels = x.shape[1:]
    x = x.astype(jnp.float32) * 255.0
    luma_table = quantization_table(quality)

    def codec(samples: jax.Array, table: np.ndarray) -> jax.Array:
        # 8-bit samples in, 8-bit samples out: libjpeg range-limits and rounds the IDCT.
        decoded = _code_plane(samples - 128.0, table, round_coefficients) + 128.0
        return round_samples(jnp.clip(decoded, 0.0, 255.0))

    if channels == 1:
        out = codec(round_samples(_pad_to(x, BLOCK)), luma_table)
    else:
        chroma_table = quantization_table(quality, chroma=True)
        x = _pad_to(x, 2 * BLOCK if subsampling == "420" else BLOCK)
        ycbcr = x @ jnp.asarray(_RGB_TO_YCBCR.T, jnp.float32) + jnp.asarray([0.0, 128.0, 128.0])
        ycbcr = round_samples(ycbcr)
        luma = codec(ycbcr[..., :1], luma_table)
        if subsampling == "420":
            # libjpeg's own integer roundings of the resampled chroma (ties alternate), passed
            # straight through in both modes (the codec's rounding already zeroes exact's).
            chroma = _straight_through(_downsample(ycbcr[..., 1:]), _libjpeg_downsample_round)
            chroma = codec(chroma, chroma_table)
            # libjpeg upsamples the real chroma columns/rows only, replicating past them.
            real = chroma[:, : -(-height // 2), : -(-width // 2)]
            chroma = _pad_edge(real, *chroma.shape[1:3])
            chroma = _straight_through(_upsample(chroma), _libjpeg_upsample_round)
        else:
            chroma = codec(ycbcr[..., 1:], chroma_table)
        ycbcr = jnp.concatenate([luma, chroma], axis=-1) - jnp.asarray([0.0, 128.0, 128.0])
        out = ycbcr @ jnp.asarray(_YCBCR_TO_RGB.T, jnp.float32)
    out = jnp.clip(out[:, :height, :width], 0.0, 255.0)
    out = round_samples(out)
    return out / 255.0


def jpeg_purifier(quality: int = 75, subsampling: str = "444") -> tuple[KeyedPurify, KeyedPurify]:
    """(purify, differentiable_purify) for `capjax.eval.defense.Defense`, both (x, key) -> x'.

    `purify` is exact JPEG; `differentiable_purify` its smooth-rounding version, for
    end-to-end attacks. JPEG is deterministic: both ignore the key. The options are checked
    here, once.
    """
    _check_options(quality, subsampling, "exact")

    def purify(x: jax.Array, key: jax.Array) -> jax.Array:
        del key
        return jpeg(x, quality, subsampling, rounding="exact")

    def differentiable_purify(x: jax.Array, key: jax.Array) -> jax.Array:
        del key
        return jpeg(x, quality, subsampling, rounding="smooth")

    return purify, differentiable_purify
