"""Minimum-norm L2 attacks: Carlini-Wagner L2 and DDN.

They have no budget: they look for the smallest L2 perturbation that changes the decision,
return the smallest successful one they visited per example, and return x itself for an
example they never fool. Their results lie in [0, 1] exactly; measure their L2 norms to
report robustness at a given radius. Both compute in float32 and cast the result to x.dtype.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from capjax.attacks._common import (
    LogitsFn,
    attack_loop,
    check_attack_inputs,
    check_nonnegative,
    cross_entropy,
    input_gradient_with_aux,
    is_adversarial,
    l2_norm,
    margin,
    normalize_direction,
    num_classes_of,
)

# The "no upper bound yet" value of CW's binary search, as in the authors' code.
_NO_BOUND = 1e10
# Abort-early (Carlini's code, advertorch): a round stops when the batch's total loss has not
# fallen by this factor since the last of its CW_ABORT_CHECKS evenly spaced checks.
CW_ABORT_TOLERANCE = 0.9999
CW_ABORT_CHECKS = 10

# Named settings of `cw_l2` (pass as `cw_l2(f, x, y, **CW_L2_PRESETS[name])`, or as an attack
# spec {"name": "cw", **CW_L2_PRESETS[name]}):
# - cafd_paper: the CAFD authors' advertorch call (docs/sources.md), capjax's defaults.
# - carlini: Carlini & Wagner's reference code (nn_robust_attacks, l2_attack.py).
# - torchattacks: torchattacks.CW's defaults (no binary search; it stops early when the
#   batch's loss rises at one of 10 checks, close to the abort-early rule here).
CW_L2_PRESETS = {
    "cafd_paper": dict(
        steps=100,
        confidence=1.0,
        initial_const=1.0,
        binary_search_steps=4,
        learning_rate=0.01,
        abort_early=True,
    ),
    "carlini": dict(
        steps=10_000,
        confidence=0.0,
        initial_const=1e-3,
        binary_search_steps=9,
        learning_rate=0.01,
        abort_early=True,
    ),
    "torchattacks": dict(
        steps=50,
        confidence=0.0,
        initial_const=1.0,
        binary_search_steps=1,
        learning_rate=0.01,
        abort_early=True,
    ),
}


class _Smallest(NamedTuple):
    """The smallest adversarial example found so far per example (x where none)."""

    x: jax.Array  # (N, H, W, C)
    l2: jax.Array  # (N,) float32 size (L2 norm, or its square for CW), inf where none


def _keep_smaller(best: _Smallest, x_adv: jax.Array, l2: jax.Array, success: jax.Array):
    better = success & (l2 < best.l2)
    return _Smallest(
        jnp.where(better[:, None, None, None], x_adv, best.x), jnp.where(better, l2, best.l2)
    )


def _validate(logits_fn, x, y, steps, validate, **nonnegative) -> None:
    # Shapes and dtypes first: num_classes_of traces the model on x's shape.
    check_attack_inputs(x, y, validate=False)
    check_attack_inputs(
        x, y, steps=steps, num_classes=num_classes_of(logits_fn, x), validate=validate
    )
    check_nonnegative(validate, **nonnegative)


def _finish(best: _Smallest, x: jax.Array) -> jax.Array:
    return jnp.clip(best.x, 0, 1).astype(x.dtype)


def cw_l2(
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    *,
    steps: int = 100,
    confidence: Any = 1.0,
    initial_const: Any = 1.0,
    binary_search_steps: int = 4,
    learning_rate: Any = 0.01,
    targeted: bool = False,
    abort_early: bool = True,
    unroll: bool | int | None = None,
    validate: bool = True,
) -> jax.Array:
    """Carlini & Wagner's L2 attack (2017, "Towards evaluating the robustness of neural
    networks").

    Minimises |x_adv - x|_2^2 + c * max(z_y - max_{j != y} z_j + confidence, 0) (targeted:
    max(max_{j != y} z_j - z_y + confidence, 0)) over x_adv = (tanh(w) + 1) / 2 with Adam,
    for `steps` iterations per value of c; a per-example binary search over c (from
    `initial_const`: halve towards the last failure after a success, else bisect or multiply
    by 10) runs `binary_search_steps` rounds, each restarting from x with a fresh Adam.
    Success means the decision changes with a margin of `confidence`. With `abort_early`, a
    round stops (its examples keep their state for the remaining iterations of the fixed
    loop) once the batch's total loss has not fallen below 0.9999 times its value at the
    previous of 10 evenly spaced checks, as Carlini's code and advertorch do.

    Defaults are the `cafd_paper` preset, the CAFD authors' advertorch call
    (docs/sources.md). Other presets (`CW_L2_PRESETS`):

    | preset | steps | confidence | initial c | binary search | lr | abort early |
    |---|---|---|---|---|---|---|
    | cafd_paper (default) | 100 | 1 | 1 | 4 | 0.01 | yes |
    | carlini (reference code) | 10,000 | 0 | 1e-3 | 9 | 0.01 | yes |
    | torchattacks (CW) | 50 | 0 | 1 | 1 (none) | 0.01 | yes (loss rises) |

    Args:
      logits_fn: (N, H, W, C) images -> (N, num_classes) logits.
      x: (N, H, W, C) float images in [0, 1].
      y: (N,) int labels, or target classes when `targeted`.
      steps: Adam iterations per binary-search round (static).
      confidence: required logit margin kappa (may be traced).
      initial_const: the first trade-off constant c (may be traced).
      binary_search_steps: rounds of the search over c (static).
      learning_rate: Adam's step size (may be traced).
      targeted: reach the classes `y`.
      abort_early: stop a round when the batch's loss stalls (see above).
      unroll: unrolling of both loops (see `attack_loop`). On XLA:CPU the default (full
        unrolling) compiles binary_search_steps x steps gradient steps, but a rolled rounds
        loop ran several times slower (docs/benchmarks.md).
      validate: check values (outside jit); shapes are always checked.

    Returns:
      x_adv: like x, in [0, 1]: per example, the smallest-L2 success found, else x.

    Example:
      >>> x_adv = cw_l2(logits_fn, x, y)
      >>> l2 = jnp.sqrt(jnp.sum((x_adv - x) ** 2, axis=(1, 2, 3)))
    """
    _validate(
        logits_fn,
        x,
        y,
        steps,
        validate,
        confidence=confidence,
        initial_const=initial_const,
        learning_rate=learning_rate,
    )
    if not isinstance(binary_search_steps, int) or binary_search_steps < 1:
        raise ValueError(f"binary_search_steps must be an int >= 1, got {binary_search_steps!r}.")
    x32 = x.astype(jnp.float32)
    n = x.shape[0]
    kappa = jnp.asarray(confidence, jnp.float32)
    lr = jnp.asarray(learning_rate, jnp.float32)
    # The authors' offset: atanh of exactly +-1 is infinite.
    w0 = jnp.arctanh((2 * x32 - 1) * 0.999999)
    # Success as in the authors' code: the kappa-handicapped prediction is adversarial.
    handicap = jax.nn.one_hot(y, num_classes_of(logits_fn, x)) * (-kappa if targeted else kappa)

    def objective(w, const):
        x_adv = (jnp.tanh(w) + 1) / 2
        logits = logits_fn(x_adv)
        gap = margin(logits, y) if targeted else -margin(logits, y)
        l2_sq = jnp.sum(jnp.square(x_adv - x32), axis=(1, 2, 3))
        # Negated: input_gradient_with_aux differentiates an objective to maximise.
        return -(l2_sq + const * jnp.maximum(gap + kappa, 0.0)), (x_adv, logits, l2_sq)

    def search_round(_, state):
        const, lower, upper, best = state

        def adam_step(t, carry):
            w, m, v, round_best, active, previous = carry
            objective_value, (x_adv, logits, l2_sq), grad = input_gradient_with_aux(
                lambda z: objective(z, const), w
            )
            success = is_adversarial(logits + handicap, y, targeted) & active
            round_best = _keep_smaller(round_best, x_adv, l2_sq, success)
            grad = -grad  # descend the CW loss
            m_new = 0.9 * m + 0.1 * grad
            v_new = 0.999 * v + 0.001 * grad**2
            t1 = (t + 1).astype(jnp.float32)
            m_hat, v_hat = m_new / (1 - 0.9**t1), v_new / (1 - 0.999**t1)
            w_new = w - lr * m_hat / (jnp.sqrt(v_hat) + 1e-8)
            w, m, v = (
                jnp.where(active, new, old) for new, old in ((w_new, w), (m_new, m), (v_new, v))
            )
            if abort_early:  # Carlini's rule: at each check, stop if the loss has stalled
                loss = -jnp.sum(objective_value)
                check = t % max(steps // CW_ABORT_CHECKS, 1) == 0
                stalled = check & (loss > previous * CW_ABORT_TOLERANCE)
                active = active & ~stalled
                previous = jnp.where(check, loss, previous)
            return w, m, v, round_best, active, previous

        zeros = jnp.zeros_like(w0)
        none = _Smallest(x32, jnp.full((n,), jnp.inf, jnp.float32))
        init = (w0, zeros, zeros, none, jnp.asarray(True), jnp.asarray(jnp.inf, jnp.float32))
        *_, round_best, _, _ = attack_loop(steps, adam_step, init, unroll)
        won = jnp.isfinite(round_best.l2)
        upper = jnp.where(won, jnp.minimum(upper, const), upper)
        lower = jnp.where(won, lower, jnp.maximum(lower, const))
        const = jnp.where(upper < _NO_BOUND, (lower + upper) / 2, const * 10)
        best = _keep_smaller(best, round_best.x, round_best.l2, won)
        return const, lower, upper, best

    state = (
        jnp.full((n,), initial_const, jnp.float32),
        jnp.zeros((n,), jnp.float32),
        jnp.full((n,), _NO_BOUND, jnp.float32),
        _Smallest(x32, jnp.full((n,), jnp.inf, jnp.float32)),
    )
    *_, best = attack_loop(binary_search_steps, search_round, state, unroll)
    return _finish(best, x)


def ddn(
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    *,
    steps: int = 100,
    gamma: Any = 0.05,
    init_norm: Any = 1.0,
    step_size: Any = 1.0,
    quantize: bool = True,
    levels: int = 256,
    targeted: bool = False,
    unroll: bool | int | None = None,
    validate: bool = True,
) -> jax.Array:
    """Decoupled direction and norm (Rony et al., 2019, "Decoupling direction and norm for
    efficient gradient-based L2 adversarial attacks and defenses").

    Each step: an L2-normalised gradient step on the cross-entropy (up, or down towards the
    target), with a step size cosine-annealed from `step_size` to `step_size / 100`; the
    radius eps_k shrinks by (1 - gamma) when the current point is adversarial and grows by
    (1 + gamma) otherwise (capped at the farthest point of the box); the perturbation is
    rescaled to eps_k, optionally quantised to `levels` grey levels, and clipped to [0, 1].
    Where the gradient vanishes the example does not move (the authors draw a random
    direction there, which would need a key).

    Defaults: the CAFD authors' settings (100 steps, gamma 0.05, quantised to 256 levels) and
    the DDN authors' code (initial norm 1, step size 1 annealed to 0.01).

    Args:
      logits_fn: (N, H, W, C) images -> (N, num_classes) logits.
      x: (N, H, W, C) float images in [0, 1].
      y: (N,) int labels, or target classes when `targeted`.
      steps: number of iterations (static).
      gamma: radius adaptation factor (may be traced).
      init_norm: the first radius eps_0 (may be traced).
      step_size: initial step size alpha of the cosine schedule (may be traced).
      quantize: round every iterate to `levels` grey levels (static).
      levels: number of grey levels.
      targeted: reach the classes `y`.
      unroll: loop unrolling (see `attack_loop`).
      validate: check values (outside jit); shapes are always checked.

    Returns:
      x_adv: like x, in [0, 1]: per example, the smallest-L2 success found, else x.

    Example:
      >>> x_adv = ddn(logits_fn, x, y, steps=100)
    """
    _validate(
        logits_fn,
        x,
        y,
        steps,
        validate,
        gamma=gamma,
        init_norm=init_norm,
        step_size=step_size,
        levels=levels,
    )
    x32 = x.astype(jnp.float32)
    n = x.shape[0]
    gamma = jnp.asarray(gamma, jnp.float32)
    alpha_max = jnp.asarray(step_size, jnp.float32)
    scale = jnp.asarray(levels, jnp.float32) - 1
    farthest = l2_norm(jnp.maximum(x32, 1 - x32))
    sign = -1.0 if targeted else 1.0

    def objective(x_adv):
        logits = logits_fn(x_adv)
        return sign * cross_entropy(logits, y), logits

    def body(i, carry):
        x_adv, radius, best = carry
        _, logits, grad = input_gradient_with_aux(objective, x_adv)
        delta = x_adv - x32
        success = is_adversarial(logits, y, targeted)
        best = _keep_smaller(best, x_adv, l2_norm(delta), success)
        # PyTorch's CosineAnnealingLR stepped before each iteration, eta_min = alpha / 100.
        cosine = (1 + jnp.cos(jnp.pi * (i + 1) / steps)) / 2
        alpha = alpha_max / 100 + (alpha_max - alpha_max / 100) * cosine
        delta = delta + alpha * normalize_direction(grad.astype(jnp.float32), "l2")
        radius = jnp.minimum(radius * jnp.where(success, 1 - gamma, 1 + gamma), farthest)
        delta = delta * (radius / jnp.maximum(l2_norm(delta), 1e-12))[:, None, None, None]
        x_adv = x32 + delta
        if quantize:
            x_adv = jnp.round(x_adv * scale) / scale
        return jnp.clip(x_adv, 0, 1), radius, best

    init = (
        x32,
        jnp.full((n,), init_norm, jnp.float32),
        _Smallest(x32, jnp.full((n,), jnp.inf, jnp.float32)),
    )
    *_, best = attack_loop(steps, body, init, unroll)
    return _finish(best, x)
