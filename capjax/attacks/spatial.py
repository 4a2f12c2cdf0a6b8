"""Spatially transformed adversarial examples (stAdv; Xiao et al., ICLR 2018).

Instead of adding noise, stAdv moves pixels: a per-pixel flow field (N, H, W, 2) says where
each output pixel samples the input, bilinearly. The flow minimises

    L_adv(x_adv) + tau * L_flow(flow)

where L_adv is the Carlini-Wagner margin loss (Eq. 3 of the paper, with confidence kappa) and
L_flow the total variation of the flow (Eq. 4): for every pixel p and each of its 4 neighbours
q inside the image, sqrt(|du_p - du_q|^2 + |dv_p - dv_q|^2 + 1e-8). The paper optimises with
L-BFGS; capjax takes first-order Adam steps (lr 0.01, zero initial flow) inside a static
`fori_loop` so that the attack jits, batches and shards like every other attack. CAFD's
evaluation runs "STA" for 100 iterations, capjax's default; tau = 0.05 is the paper's value.

CAFD's scripts (dwDavidxd/CAFD, `example_other.py`) ran advertorch's SpatialTransformAttack
(max_iterations=100, search_steps=20): scipy L-BFGS from the identity grid, restarted 20
times, on the CW margin plus, with weight 1, the *L2 norm* of the whole flow gradient (one
square root per image, not one per neighbour pair) in normalised grid units (1 pixel = 2/32),
with the flow bounded to the grid; it returns zeros for examples it fails on. That is a much
weaker smoothness penalty than the paper's L_flow; capjax implements the paper's.

The threat model of stAdv is the flow's smoothness, not a norm ball: the attack returns, per
example, the successful flow of smallest L_flow seen (or the last flow when none succeeded),
optionally with each flow component bounded by `max_flow` pixels. Outputs lie in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from capjax.attacks._common import (
    attack_loop,
    check_attack_inputs,
    check_nonnegative,
    is_adversarial,
    margin,
    num_classes_of,
)

# Inside the square root of L_flow: keeps its gradient finite where neighbouring flows agree.
FLOW_SMOOTHING = 1e-8


def _clamp(position: jax.Array, last: int) -> jax.Array:
    """Clamps positions to [0, last] with gradient 1 on the bounds (jnp.clip halves it there,
    which would halve the first step from zero flow along the image's first row and column)."""
    return jnp.where(position < 0, 0.0, jnp.where(position > last, float(last), position))


def flow_warp(x: jax.Array, flow: jax.Array) -> jax.Array:
    """Bilinear resampling of images at pixel positions displaced by a flow field.

    out[n, i, j] = x[n, i + flow[n, i, j, 0], j + flow[n, i, j, 1]], interpolated bilinearly
    between the 4 surrounding pixels, with sampling positions clamped to the image (the
    border is replicated). Differentiable in flow (and x). Zero flow returns x exactly, and an
    integer flow returns exactly shifted pixels.

    Args:
      x: (N, H, W, C) images.
      flow: (N, H, W, 2) displacements in pixels: [..., 0] along rows (down), [..., 1] along
        columns (right).

    Returns:
      (N, H, W, C) in x.dtype (a convex combination of pixels of x, up to round-off).
    """
    n, h, w, c = x.shape
    if flow.shape != (n, h, w, 2):
        raise ValueError(f"flow must have shape (N, H, W, 2) = {(n, h, w, 2)}, got {flow.shape}.")
    dtype = jnp.promote_types(jnp.promote_types(x.dtype, flow.dtype), jnp.float32)
    rows = jnp.arange(h, dtype=dtype)[None, :, None] + flow[..., 0].astype(dtype)
    cols = jnp.arange(w, dtype=dtype)[None, None, :] + flow[..., 1].astype(dtype)
    rows, cols = _clamp(rows, h - 1), _clamp(cols, w - 1)
    row0, col0 = jnp.floor(rows), jnp.floor(cols)
    row_weight, col_weight = (rows - row0)[..., None], (cols - col0)[..., None]
    row0, col0 = row0.astype(jnp.int32), col0.astype(jnp.int32)
    row1, col1 = jnp.minimum(row0 + 1, h - 1), jnp.minimum(col0 + 1, w - 1)
    pixels = x.astype(dtype).reshape(n, h * w, c)

    def sample(r, q):
        index = (r * w + q).reshape(n, h * w, 1)
        return jnp.take_along_axis(pixels, index, axis=1).reshape(n, h, w, c)

    # Nested (1 - a) * p + a * q: with zero weights this is exactly the pixel at (row0, col0).
    top = (1 - col_weight) * sample(row0, col0) + col_weight * sample(row0, col1)
    bottom = (1 - col_weight) * sample(row1, col0) + col_weight * sample(row1, col1)
    return ((1 - row_weight) * top + row_weight * bottom).astype(x.dtype)


def flow_loss(flow: jax.Array) -> jax.Array:
    """stAdv's L_flow per example: (N, H, W, 2) -> (N,) float32 (Xiao et al., Eq. 4).

    Sums, over every pixel p and each of its 4-neighbours q inside the image,
    sqrt(|flow_p - flow_q|^2 + FLOW_SMOOTHING); each neighbouring pair thus counts twice, once
    from either end, as in the paper's double sum.
    """
    flow = flow.astype(jnp.promote_types(flow.dtype, jnp.float32))

    def pair_sum(diff):
        return jnp.sum(jnp.sqrt(jnp.sum(jnp.square(diff), axis=-1) + FLOW_SMOOTHING), axis=(1, 2))

    vertical = pair_sum(flow[:, 1:] - flow[:, :-1])
    horizontal = pair_sum(flow[:, :, 1:] - flow[:, :, :-1])
    return 2 * (vertical + horizontal)


def stadv(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    steps: int = 100,
    tau: Any = 0.05,
    learning_rate: Any = 0.01,
    targeted: bool = False,
    confidence: Any = 0.0,
    max_flow: Any = None,
    return_flow: bool = False,
    unroll: bool | int | None = None,
    validate: bool = True,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """stAdv: spatially transformed adversarial examples (Xiao et al., ICLR 2018).

    Minimises `max(-margin, -confidence) + tau * flow_loss(flow)` over a per-pixel flow with
    Adam from zero flow (the paper uses L-BFGS; see the module docstring), where margin is
    `max_{j != y} z_j - z_y` (untargeted) or `z_t - max_{j != t} z_j` (targeted). Each step
    records, per example, the flow with the smallest `flow_loss` among those that succeed
    (prediction != y, or == target; and the CW margin >= confidence). Deterministic: no key.

    Args:
      logits_fn: x (N, H, W, C) -> logits (N, num_classes).
      x: (N, H, W, C) float images in [0, 1].
      y: (N,) int labels, or the targets when `targeted=True`.
      steps: Adam steps (static); 100 as in CAFD's evaluation.
      tau: weight of the flow loss (traced); 0.05 as in the paper.
      learning_rate: Adam's learning rate in pixels (traced).
      targeted: push toward y instead of away from it.
      confidence: the CW kappa (traced): the margin the loss stops rewarding.
      max_flow: optional bound (pixels, traced) on each flow component, applied after every
        step; None leaves the flow unbounded, as in the paper.
      return_flow: also return the (N, H, W, 2) float32 flow that produced x_adv.
      unroll: loop unrolling, see `capjax.attacks._common.attack_loop`.
      validate: check values (outside jit only).

    Returns:
      x_adv: same shape and dtype as x, in [0, 1]; with `return_flow`, (x_adv, flow) and
      `x_adv == clip(flow_warp(x, flow), 0, 1)` (to round-off: XLA may fuse differently).
    """
    check_attack_inputs(
        x, y, steps=steps, num_classes=num_classes_of(logits_fn, x), validate=validate
    )
    check_nonnegative(
        validate, tau=tau, learning_rate=learning_rate, confidence=confidence, max_flow=max_flow
    )

    confidence = jnp.asarray(confidence, jnp.float32)
    sign = 1.0 if targeted else -1.0  # margin(logits, y) = max_{j != y} z_j - z_y
    optimizer = optax.adam(learning_rate)

    def warp(flow):
        return jnp.clip(flow_warp(x, flow), 0, 1)

    def objective(flow):
        logits = logits_fn(warp(flow))
        adversarial = jnp.maximum(sign * margin(logits, y), -confidence)
        smoothness = flow_loss(flow)
        total = adversarial + tau * smoothness
        success = is_adversarial(logits, y, targeted) & (-sign * margin(logits, y) >= confidence)
        return jnp.sum(total), (success, smoothness)

    def remember_best(flow, success, smoothness, best):
        best_flow, best_loss = best
        better = success & (smoothness < best_loss)
        best_flow = jnp.where(better[:, None, None, None], flow, best_flow)
        return best_flow, jnp.where(better, smoothness, best_loss)

    def body(_, carry):
        flow, opt_state, best = carry
        grad, (success, smoothness) = jax.grad(objective, has_aux=True)(flow)
        best = remember_best(flow, success, smoothness, best)
        updates, opt_state = optimizer.update(grad, opt_state, flow)
        flow = optax.apply_updates(flow, updates)
        if max_flow is not None:
            flow = jnp.clip(flow, -max_flow, max_flow)
        return flow, opt_state, best

    flow = jnp.zeros(x.shape[:3] + (2,), jnp.float32)
    best = (flow, jnp.full(x.shape[:1], jnp.inf, jnp.float32))
    flow, _, best = attack_loop(steps, body, (flow, optimizer.init(flow), best), unroll)
    _, (success, smoothness) = objective(flow)
    best_flow, best_loss = remember_best(flow, success, smoothness, best)
    flow = jnp.where(jnp.isfinite(best_loss)[:, None, None, None], best_flow, flow)
    x_adv = warp(flow).astype(x.dtype)
    return (x_adv, flow) if return_flow else x_adv
