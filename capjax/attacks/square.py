"""Square Attack: a score-based (gradient-free) random search, L-inf and L2.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020 (arXiv:1912.00049). Each step changes the
current best point inside one random square window (L-inf: to the opposite vertex of the
eps-box with one random sign per channel; L2: a window-shaped bump that moves mass between two
windows at constant total norm) and keeps the change when it raises the loss (one query per
step). The window covers a fraction p of the image, shrinking on a fixed schedule.

Only the values of `logits_fn` are used, never its gradients, so the attack works on models
with masked, obfuscated or undefined gradients. Defaults follow AutoAttack's Square
(fra31/auto-attack): 5000 queries, p_init 0.8, the margin loss, one run; the p schedule is
the reference one for 10000 queries, rescaled to `steps` (`rescale_schedule=True`, as in the
original Square code; AutoAttack itself uses it unrescaled).

Unlike the reference, each example draws its own window and signs (the reference shares one
window per step across the batch), from its own key, so its result does not depend on the
batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from capjax.attacks._common import (
    RunResult,
    as_pytree_fn,
    attack_loop,
    attack_objective,
    best_of_runs,
    check_attack_inputs,
    check_count,
    check_nonnegative,
    example_keys,
    is_adversarial,
    l2_norm,
    linf_bounds,
    margin,
    num_classes_of,
    project,
    require_key,
)

# The reference schedule: p_init is halved after each of these step counts (of 10000).
_P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
# Rolled loop by default: each step is one forward pass, which XLA:CPU runs about as fast in
# a loop, while unrolling thousands of steps would take minutes to compile.
_DEFAULT_UNROLL = 1


def p_schedule(step: jax.Array, steps: int, p_init: Any, rescale: bool) -> jax.Array:
    """The fraction of pixels the window covers at `step` (0-based).

    The reference halves p_init once `t > h` for each h of `_P_HALVINGS`, with t = step, or
    t = floor(step * 10000 / steps) when rescaled. Each test is turned into a step threshold
    on the host (t > h exactly when step >= ceil((h + 1) * steps / 10000)), so that no
    product overflows int32 however long the run."""
    n = max(steps, 1)
    firsts = [-(-(h + 1) * n // 10000) if rescale else h + 1 for h in _P_HALVINGS]
    halvings = sum((step >= first).astype(jnp.float32) for first in firsts)
    return jnp.asarray(p_init, jnp.float32) / 2.0**halvings


def _window(corner_h: jax.Array, corner_w: jax.Array, size: jax.Array, h: int, w: int):
    """(N, H, W, 1) bool masks of the size x size squares at the given (N,) corners."""
    rows = jnp.arange(h)[None, :, None, None]
    cols = jnp.arange(w)[None, None, :, None]
    ch, cw = corner_h[:, None, None, None], corner_w[:, None, None, None]
    return (rows >= ch) & (rows < ch + size) & (cols >= cw) & (cols < cw + size)


def _corner(u: jax.Array, extent: int, size: jax.Array) -> jax.Array:
    """Window corner from a uniform u in [0, 1): floor(u * (extent - size)), as the reference."""
    return jnp.floor(u * (extent - size).astype(jnp.float32)).astype(jnp.int32)


def _harmonic2(n: int) -> jnp.ndarray:
    """H[k] = sum_{c < k} 1 / (c + 1)^2 for k = 0..n."""
    return jnp.asarray(np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1) ** 2)]))


def _eta(size: jax.Array, extent: int) -> jax.Array:
    """The reference L2 window profile eta(size) on an (extent, extent) grid (0 outside).

    Two stacked rectangles of nested squares with weights 1/(k+1)^2, of opposite signs, each
    unit-norm, then the whole normalised; `size` may be traced.
    """
    table = _harmonic2(extent + 2)
    i = jnp.arange(extent)[:, None]
    j = jnp.arange(extent)[None, :]
    half = size // 2
    inside = (i < size) & (j < size)

    def rectangle(r, rows):
        centre_r, centre_c = rows // 2, size // 2
        outer = jnp.maximum(rows // 2 + 1, size // 2 + 1)
        ring = jnp.maximum(jnp.abs(r - centre_r), jnp.abs(j - centre_c))
        value = table[outer] - table[jnp.minimum(ring, outer)]
        value = jnp.where((r >= 0) & (r < rows) & (j < size), value, 0.0)
        return value / jnp.sqrt(jnp.sum(value**2))

    profile = rectangle(i, half) - rectangle(i - half, size - half)
    profile = jnp.where(inside, profile, 0.0)
    return profile / jnp.sqrt(jnp.sum(profile**2))


def _place(profile: jax.Array, corner_h, corner_w, transpose, h: int, w: int) -> jax.Array:
    """(N, H, W, 1): the (e, e) profile (transposed per example) with its origin at the corners."""
    e = profile.shape[0]
    r = jnp.clip(jnp.arange(h)[None, :] - corner_h[:, None], 0, e - 1)  # (N, H)
    c = jnp.clip(jnp.arange(w)[None, :] - corner_w[:, None], 0, e - 1)  # (N, W)
    straight = profile[r[:, :, None], c[:, None, :]]
    flipped = profile.T[r[:, :, None], c[:, None, :]]
    return jnp.where(transpose[:, None, None], flipped, straight)[..., None]


def _signs(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return jnp.where(jax.random.bernoulli(key, 0.5, shape), 1.0, -1.0)


def _init(keys: jax.Array, x: jax.Array, eps: Any, norm: str) -> jax.Array:
    """The reference starting points: vertical stripes (L-inf) or a grid of eta bumps (L2)."""
    n, h, w, c = x.shape
    if norm == "linf":
        stripes = jax.vmap(lambda k: _signs(k, (1, w, c)))(keys)
        return project(x + jnp.asarray(eps, x.dtype) * stripes.astype(x.dtype), x, eps, norm)
    size = h // 5
    start = (h - 5 * size) // 2
    profile = _eta(jnp.asarray(size), size)
    tiles = [
        (start + a * size, start + b * size) for a in range(h // size) for b in range(w // size)
    ]
    tiles = [(a, b) for a, b in tiles if a + size <= h and b + size <= w]
    draws = jax.vmap(
        lambda k: (_signs(k, (len(tiles), c)), jax.random.bernoulli(k, 0.5, (len(tiles),)))
    )
    signs, transpose = draws(jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys))
    delta = jnp.zeros(x.shape, jnp.float32)
    for t, (a, b) in enumerate(tiles):
        bump = jnp.where(transpose[:, t, None, None], profile.T, profile)[..., None]
        delta = delta.at[:, a : a + size, b : b + size, :].add(bump * signs[:, t, None, None, :])
    delta = delta / l2_norm(delta)[:, None, None, None]
    return project(x + (delta * eps).astype(x.dtype), x, eps, norm)


def _linf_proposal(x, x_best, eps, size, draw, lo, hi):
    n, h, w, c = x.shape
    u = jax.vmap(lambda k: jax.random.uniform(k, (2,)))(draw)
    signs = jax.vmap(lambda k: _signs(jax.random.fold_in(k, 1), (c,)))(draw)
    mask = _window(_corner(u[:, 0], h, size), _corner(u[:, 1], w, size), size, h, w)
    step = (2 * eps * signs[:, None, None, :]).astype(x.dtype)
    return jnp.clip(x_best + jnp.where(mask, step, 0), lo, hi)


def _l2_proposal(x, x_best, eps, size, draw):
    n, h, w, c = x.shape
    u = jax.vmap(lambda k: jax.random.uniform(k, (4,)))(draw)
    signs = jax.vmap(lambda k: _signs(jax.random.fold_in(k, 1), (c,)))(draw)
    transpose = jax.vmap(lambda k: jax.random.bernoulli(jax.random.fold_in(k, 2)))(draw)
    h1, w1 = _corner(u[:, 0], h, size), _corner(u[:, 1], w, size)
    m1 = _window(h1, w1, size, h, w)
    m2 = _window(_corner(u[:, 2], h, size), _corner(u[:, 3], w, size), size, h, w)
    delta = (x_best - x).astype(jnp.float32)
    per_channel = lambda v: jnp.sqrt(jnp.sum(v**2, axis=(1, 2), keepdims=True))  # noqa: E731
    norm_w1 = per_channel(jnp.where(m1, delta, 0))
    norm_both = per_channel(jnp.where(m1 | m2, delta, 0))
    norm_image = l2_norm(delta)[:, None, None, None]
    bump = _place(_eta(size, min(h, w)), h1, w1, transpose, h, w) * signs[:, None, None, :]
    bump = jnp.where(m1, bump, 0.0)
    new = bump + jnp.where(m1, delta, 0) / (1e-12 + norm_w1)
    budget = jnp.maximum(eps**2 - norm_image**2, 0.0) / c + norm_both**2
    new = new / (1e-12 + per_channel(new)) * jnp.sqrt(budget)
    delta = jnp.where(m1, new, jnp.where(m2, 0.0, delta))
    delta = delta / (l2_norm(delta)[:, None, None, None] + 1e-12) * eps
    return project(x + delta.astype(x.dtype), x, eps, "l2")


def _square_run(
    logits_fn, x, labels, keys, eps, p_init, *, norm, steps, loss, targeted, rescale, unroll
):
    """One run: (best point, success, best loss)."""
    n, h, w, c = x.shape
    objective = attack_objective(loss, targeted)
    eps = jnp.asarray(eps, jnp.float32)
    lo, hi = linf_bounds(x, eps)

    def evaluate(z):
        logits = logits_fn(z)
        gap = -margin(logits, labels) if targeted else margin(logits, labels)
        return objective(logits, labels), gap

    x_best = _init(keys, x, eps, norm)
    loss_best, gap_best = evaluate(x_best)

    def step(i, carry):
        x_best, loss_best, gap_best = carry
        p = p_schedule(i, steps, p_init, rescale)
        size = jnp.round(jnp.sqrt(p * h * w)).astype(jnp.int32)
        if norm == "linf":
            size = jnp.clip(size, 1, min(h, w))
        else:
            size = jnp.maximum(size, 3)
            size = jnp.minimum(size + (size % 2 == 0), min(h, w))
        draw = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
        if norm == "linf":
            x_new = _linf_proposal(x, x_best, eps, size, draw, lo, hi)
        else:
            x_new = _l2_proposal(x, x_best, eps, size, draw)
        loss_new, gap_new = evaluate(x_new)
        # Examples already broken stop; others keep a higher loss or any misclassification.
        active = gap_best <= 0
        improved = active & (loss_new > loss_best)
        accept = improved | (active & (gap_new > 0))
        at = lambda v: v[:, None, None, None]  # noqa: E731
        return (
            jnp.where(at(accept), x_new, x_best),
            jnp.where(improved, loss_new, loss_best),
            jnp.where(accept, gap_new, gap_best),
        )

    def body(i, carry):
        # Once every example is broken the remaining queries would change nothing: skip them.
        return jax.lax.cond(jnp.all(carry[2] > 0), lambda c: c, lambda c: step(i, c), carry)

    x_best, loss_best, gap_best = attack_loop(steps, body, (x_best, loss_best, gap_best), unroll)
    return RunResult(x_best, gap_best > 0, loss_best)


@functools.partial(
    jax.jit,
    static_argnames=(
        "norm",
        "steps",
        "loss",
        "targeted",
        "restarts",
        "rescale_schedule",
        "unroll",
        "parallel_runs",
    ),
)
def _square(
    logits_fn,
    x,
    y,
    eps,
    p_init,
    keys,
    *,
    norm,
    steps,
    loss,
    targeted,
    restarts,
    rescale_schedule,
    unroll,
    parallel_runs,
):
    clean_success = is_adversarial(logits_fn(x), y, targeted)

    def run(run_ids, rows):
        run_keys = jax.vmap(jax.random.fold_in)(keys[rows], run_ids)
        return _square_run(
            logits_fn,
            x[rows],
            y[rows],
            run_keys,
            eps,
            p_init,
            norm=norm,
            steps=steps,
            loss=loss,
            targeted=targeted,
            rescale=rescale_schedule,
            unroll=unroll,
        )

    best = best_of_runs(run, restarts, x.shape[0], parallel_runs)
    x_adv = jnp.where(clean_success[:, None, None, None], x, best.x_adv)
    return project(x_adv, x, eps, norm)


def square(
    logits_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    *,
    eps: Any,
    norm: str = "linf",
    steps: int = 5000,
    p_init: Any = 0.8,
    targeted: bool = False,
    key: jax.Array | None = None,
    restarts: int = 1,
    loss: str = "margin",
    rescale_schedule: bool = True,
    unroll: bool | int | None = _DEFAULT_UNROLL,
    parallel_runs: bool | int | None = None,
    validate: bool = True,
) -> jax.Array:
    """Square Attack (Andriushchenko et al., ECCV 2020): score-based, one query per step.

    Defaults: AutoAttack's Square (5000 queries, p_init 0.8, margin loss, one run).

    Args:
      logits_fn: `(N, H, W, C) images -> (N, K) logits`; only its values are used.
      x: (N, H, W, C) float images in [0, 1] (square images; rectangular ones use windows up
        to the shorter side).
      y: (N,) int true labels, or target classes when `targeted=True`.
      eps: radius of the `norm` ball (traced).
      norm: "linf" or "l2".
      steps: queries after the initial one (static).
      p_init: initial fraction of the image covered by the window (traced).
      targeted: move towards the classes `y`.
      key: `jax.random` key, or (N,) keys, one per example.
      restarts: independent runs; an example keeps its first success.
      loss: "margin" (CW margin) or "ce" (cross-entropy); success is judged by the margin.
      rescale_schedule: stretch the 10000-query p schedule to `steps` (False: AutoAttack).
      unroll: loop unrolling, see `attack_loop` (default 1: a rolled loop, see above).
      parallel_runs: restarts batched at once: None/False one at a time, True all, k k at a
        time; see `best_of_runs`.
      validate: check input values (outside jit).

    Returns:
      (N, H, W, C) x_adv within the threat model, same dtype as x: per example the first
      successful point, else the highest-loss one; x where x already succeeds.
    """
    key = require_key(key, "Square Attack")
    check_attack_inputs(
        x,
        y,
        eps=eps,
        norm=norm,
        steps=steps,
        num_classes=num_classes_of(logits_fn, x),
        loss=loss,
        losses=("margin", "ce"),
        validate=validate,
    )
    check_count(restarts=restarts)
    check_nonnegative(validate, p_init=p_init)
    if norm == "l2" and min(x.shape[1:3]) < 5:
        raise ValueError(f"L2 Square needs images of at least 5x5 pixels, got {x.shape[1:3]}.")
    # Strongly typed float32 scalars: a Python float and an array give the same trace.
    eps, p_init = jnp.asarray(eps, jnp.float32), jnp.asarray(p_init, jnp.float32)
    return _square(
        as_pytree_fn(logits_fn),
        x,
        y,
        eps,
        p_init,
        example_keys(key, x.shape[0]),
        norm=norm,
        steps=steps,
        loss=loss,
        targeted=targeted,
        restarts=restarts,
        rescale_schedule=rescale_schedule,
        unroll=unroll,
        parallel_runs=parallel_runs,
    )


__all__ = ["p_schedule", "square"]
