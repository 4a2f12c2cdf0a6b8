"""Total variation minimisation as a purifier (Guo et al., ICLR 2018).

"Countering adversarial images using input transformations", Section 3: drop pixels at
random, then reconstruct the simplest image consistent with the kept ones. For each image,

    z* = argmin_{z in [0, 1]^(H x W x C)}  sum_{i,j,c} m_ij (z_ijc - x_ijc)^2
                                          + weight * sum_{i,j,c} |grad z_ijc|_2

with m_ij ~ Bernoulli(keep_prob) one mask per pixel shared by the channels (1 keeps the
pixel), and the isotropic total variation per channel,
|grad z_ijc|_2 = sqrt((z_(i+1)jc - z_ijc)^2 + (z_i(j+1)c - z_ijc)^2) with forward
differences set to 0 past the last row and column (no smoothing epsilon: the solver
handles the kink). Guo et al. write the data term as an unsquared L2 norm; the squared one
used here makes the balance with the TV term per pixel and independent of the image size.

The solver is Chambolle & Pock's (2011) primal-dual algorithm, `steps` iterations from
z = x (dual p = 0) inside `jax.lax.fori_loop`:

    p <- p + sigma grad(z_bar), projected per pixel and channel on the disk |p|_2 <= weight
    z' <- clip((z + tau div p + 2 tau m x) / (1 + 2 tau m), 0, 1)      (the data prox)
    z_bar <- 2 z' - z

with tau = `step_size` and sigma = 1 / (8 tau) (|grad|^2 <= 8). It converges for every
tau; tau sets how fast (defaults, measured at `DEFAULT_STEPS`: 50 iterations with
tau = 0.025 / weight). The loop is differentiable (unrolled by reverse mode, memory
`steps` times the batch), so an attacker can differentiate the solve end to end; BPDA
with the identity applies too.

What it does to images, measured on 32x32 images with Gaussian noise of sigma 8/255 at the
defaults (keep 0.5, weight 0.003, 50 iterations; mean L2 distance to the clean image):
a smooth image without edges 1.74 -> 1.34, a ramp image with a sharp rectangle 1.71 ->
1.69, the synthetic dataset 1.70 -> 2.87 and CIFAR-10 test images 1.72 -> 3.12 (their
clean versions land 2.57 and 2.81 away). At this weight the kept pixels move by about a
level at most (the TV subgradient times weight / 2); the dropped ones, which have no data
term, are refilled from their neighbours, which removes their noise but also blurs edges
and textures of 32x32 images (Guo et al. worked at 224x224, and trained the classifier on
transformed images). The TV term alone (keep_prob=1) moves the synthetic images 1.70 ->
1.60 at weight 0.003 and -> 1.15 at 0.03.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from capjax.core.errors import ConfigError
from capjax.defenses._checks import check_images

DEFAULT_KEEP_PROB = 0.5
DEFAULT_WEIGHT = 0.003
# Measured on 32 noisy 32x32 synthetic images, keep_prob 0.5: the fastest primal step is
# about STEP_SIZE_SCALE / weight (tau = 8 at weight 0.003, 0.5-1 at 0.03). There 50
# iterations end 0.12% above the 3,000-iteration objective (mean pixel difference 0.17/255,
# the largest at dropped pixels in flat surroundings, where the optimum is nearly flat),
# 25 iterations 0.55% (0.53/255), 10 iterations 3% (1.5/255).
DEFAULT_STEPS = 50
STEP_SIZE_SCALE = 0.025

KeyedPurify = Callable[[jax.Array, jax.Array], jax.Array]


def _to_planes(x: jax.Array) -> jax.Array:
    """(N, H, W, C) -> (N, C, H, W): with W minor the shifts below are contiguous, which
    made the solve about 2x faster on XLA:CPU than in NHWC (C = 3 minor)."""
    return jnp.transpose(x, (0, 3, 1, 2))


def _gradient(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Forward differences along the last two axes (H, W), 0 past the last row/column."""
    dh = jnp.pad(z[..., 1:, :] - z[..., :-1, :], ((0, 0),) * (z.ndim - 2) + ((0, 1), (0, 0)))
    dw = jnp.pad(z[..., 1:] - z[..., :-1], ((0, 0),) * (z.ndim - 1) + ((0, 1),))
    return dh, dw


def _divergence(ph: jax.Array, pw: jax.Array) -> jax.Array:
    """-grad^T: the negative adjoint of `_gradient` (backward differences)."""
    lead = ((0, 0),) * (ph.ndim - 2)
    ph, pw = ph[..., :-1, :], pw[..., :-1]
    dh = jnp.pad(ph, lead + ((0, 1), (0, 0))) - jnp.pad(ph, lead + ((1, 0), (0, 0)))
    dw = jnp.pad(pw, lead + ((0, 0), (0, 1))) - jnp.pad(pw, lead + ((0, 0), (1, 0)))
    return dh + dw


def total_variation(z: jax.Array) -> jax.Array:
    """Isotropic TV per image, summed over pixels and channels: (N, H, W, C) -> (N,)."""
    dh, dw = _gradient(_to_planes(z))
    return jnp.sum(jnp.sqrt(dh**2 + dw**2), axis=(1, 2, 3))


def tvm_objective(z: jax.Array, x: jax.Array, mask: jax.Array, weight: Any) -> jax.Array:
    """The objective TVM minimises, per image (N,); mask (N, H, W, 1) is 1 on kept pixels."""
    data = jnp.sum(mask * (z - x) ** 2, axis=(1, 2, 3))
    return data + weight * total_variation(z)


def dropout_mask(key: jax.Array, shape: tuple[int, ...], keep_prob: Any) -> jax.Array:
    """(N, H, W, 1) float32 mask, 1 with probability keep_prob, one draw per pixel."""
    n, h, w = shape[:3]
    return jax.random.bernoulli(key, keep_prob, (n, h, w, 1)).astype(jnp.float32)


def solve_tv(x: jax.Array, mask: jax.Array, weight: Any, steps: int, step_size: Any) -> jax.Array:
    """`steps` Chambolle-Pock iterations of the module's objective from z = x.

    x: (N, H, W, C); mask: (N, H, W, 1), 1 on kept pixels. Returns z (N, H, W, C) float32.
    """
    x = _to_planes(x.astype(jnp.float32))
    mask = _to_planes(mask.astype(jnp.float32))
    tau = jnp.asarray(step_size, jnp.float32)
    sigma = 1.0 / (8.0 * tau)
    data_weight = 2.0 * tau * mask

    def iteration(_, carry):
        z, z_bar, ph, pw = carry
        dh, dw = _gradient(z_bar)
        ph, pw = ph + sigma * dh, pw + sigma * dw
        # Projection on the disk of radius weight, as a scale <= 1. The max is taken on the
        # squared norm, so that reverse mode never differentiates sqrt at 0 (p starts at 0
        # and stays 0 wherever the image is flat); the floor keeps weight = 0 finite.
        squared = jnp.maximum(ph**2 + pw**2, jnp.maximum(weight**2, 1e-12))
        scale = weight * jax.lax.rsqrt(squared)
        ph, pw = ph * scale, pw * scale
        z_new = (z + tau * _divergence(ph, pw) + data_weight * x) / (1.0 + data_weight)
        z_new = jnp.clip(z_new, 0.0, 1.0)
        return z_new, 2.0 * z_new - z, ph, pw

    zeros = jnp.zeros_like(x)
    z, _, _, _ = jax.lax.fori_loop(0, steps, iteration, (x, x, zeros, zeros))
    return jnp.transpose(z, (0, 2, 3, 1))


def _check_options(keep_prob: Any, weight: Any, steps: Any, step_size: Any) -> None:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ConfigError(
            f"steps must be a Python int >= 0 (it fixes the compiled loop), got {steps!r}."
        )
    for name, value, ok, need in [
        ("keep_prob", keep_prob, lambda v: 0 < v <= 1, "in (0, 1]"),
        ("weight", weight, lambda v: v >= 0, ">= 0"),
        ("step_size", step_size, lambda v: v > 0, "> 0"),
    ]:
        if value is None and name == "step_size":
            continue
        if isinstance(value, jax.core.Tracer):
            continue
        number = float(np.asarray(value))
        if not np.isfinite(number) or not ok(number):
            raise ConfigError(f"TVM's {name} must be a finite number {need}, got {number}.")


def tvm(
    x: jax.Array,
    key: jax.Array,
    *,
    keep_prob: Any = DEFAULT_KEEP_PROB,
    weight: Any = DEFAULT_WEIGHT,
    steps: int = DEFAULT_STEPS,
    step_size: Any = None,
) -> jax.Array:
    """Total variation minimisation of randomly dropped pixels (module docstring).

    Args:
      x: (N, H, W, C) float in [0, 1].
      key: `jax.random.key` for the pixel dropout; the same key gives the same output.
      keep_prob: probability that a pixel keeps its data term (Guo et al.'s 1 - drop rate).
      weight: the TV weight lambda.
      steps: primal-dual iterations (static).
      step_size: the primal step tau (the dual one is 1 / (8 tau)); None picks
        0.025 / weight, the fastest measured (any positive value converges).

    Returns:
      (N, H, W, C) float32 in [0, 1].

    keep_prob, weight and step_size may be traced (changing them does not recompile).
    """
    check_images(x, "tvm")
    _check_options(keep_prob, weight, steps, step_size)
    weight = jnp.asarray(weight, jnp.float32)
    if step_size is None:
        step_size = STEP_SIZE_SCALE / jnp.maximum(weight, 1e-4)
    mask = dropout_mask(key, x.shape, keep_prob)
    return solve_tv(x, mask, weight, steps, step_size)


def tvm_purifier(**options: Any) -> KeyedPurify:
    """The keyed purify (x, key) -> tvm(x, key, **options) for `capjax.eval.defense.Defense`.

    TVM is random (its dropout mask) and differentiable, so it needs no separate
    differentiable_purify: attack it end to end with EOT over keys, or with BPDA.
    """
    unknown = set(options) - {"keep_prob", "weight", "steps", "step_size"}
    if unknown:
        raise ConfigError(
            f"Unknown TVM options {sorted(unknown)}; use keep_prob, weight, steps, step_size."
        )
    merged = dict(
        keep_prob=DEFAULT_KEEP_PROB,
        weight=DEFAULT_WEIGHT,
        steps=DEFAULT_STEPS,
        step_size=None,
    )
    merged.update(options)
    _check_options(**merged)
    return lambda x, key: tvm(x, key, **merged)
