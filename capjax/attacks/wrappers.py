"""Wrappers that turn defenses into callables every attack can differentiate.

- `defended(logits_fn, purify)`: the classifier behind a purifier, `x -> logits_fn(purify(x))`.
- `bpda(purify, approx)`: Backward Pass Differentiable Approximation (Athalye et al., 2018):
  the forward pass is `purify`, the backward pass that of `approx` (identity by default), for
  purifiers whose gradient is zero, useless or undefined (quantisation, iterative solvers).
- `eot(fn, n, key)`: Expectation over Transformation (Athalye et al., 2018): the mean of a
  randomised function over n fixed draws, for randomised defenses.

They compose: `defended(logits_fn, bpda(purify))`, or
`eot(lambda x, k: logits_fn(random_purify(x, k)), n=8, key=key)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def defended(
    logits_fn: Callable[[jax.Array], jax.Array], purify: Callable[[jax.Array], jax.Array]
) -> Callable[[jax.Array], jax.Array]:
    """The defended classifier `x -> logits_fn(purify(x))`.

    Args:
      logits_fn: (N, H, W, C) images in [0, 1] -> (N, num_classes) logits.
      purify: (N, H, W, C) images -> purified images of the same shape.

    Example:
      >>> attacked = defended(logits_fn, bpda(purify))  # full forward, identity backward
      >>> x_adv = pgd(attacked, x, y, eps=8 / 255, step_size=2 / 255, steps=10, key=key)
    """
    return lambda x: logits_fn(purify(x))


def bpda(
    purify: Callable[[jax.Array], jax.Array],
    approx: Callable[[jax.Array], jax.Array] | None = None,
) -> Callable[[jax.Array], jax.Array]:
    """Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner, 2018).

    The returned function computes `purify(x)` going forward; its vector-Jacobian product at
    x is that of `approx` at x (identity when None, i.e. "straight-through"), so gradients
    flow through purifiers that shatter them. `approx(x)` must have the shape and dtype of
    `purify(x)`. No gradient reaches parameters that `purify` closes over, which suits
    attacks (they differentiate the input only).

    Args:
      purify: x -> x' (any JAX function, need not be differentiable).
      approx: a differentiable x -> x' with approx(x) ~ purify(x), or None for identity.

    Returns:
      A function x -> purify(x) whose gradient is approx's.

    Example:
      >>> quantize = lambda x: jnp.round(x * 7) / 7  # gradient zero almost everywhere
      >>> logits = defended(logits_fn, bpda(quantize))
      >>> x_adv = pgd(logits, x, y, eps=8 / 255, step_size=2 / 255, steps=10, key=key)
    """

    @jax.custom_vjp
    def forward(x):
        return purify(x)

    def forward_with_residual(x):
        return purify(x), x

    def backward(x, cotangent):
        if approx is None:
            return (cotangent.astype(x.dtype),)
        _, vjp = jax.vjp(approx, x)
        return vjp(cotangent)

    forward.defvjp(forward_with_residual, backward)
    return forward


def eot(
    fn: Callable[..., Any],
    n: int,
    key: jax.Array,
    transform: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    *,
    batch_size: int | None = None,
) -> Callable[[jax.Array], Any]:
    """Expectation over Transformation (Athalye, Engstrom, Ilyas & Kwok, 2018).

    Returns the deterministic function `x -> mean_i g(x, k_i)` over n fixed keys
    `k_i = split(key, n)`, where g is `fn(x, key)` (a randomised function) or, when
    `transform` is given, `fn(transform(x, key))` (a deterministic fn behind a random
    transform). Its gradient is the mean of the n gradients. The draws are fixed when `eot`
    is called, so an attack sees the same n draws at every step (use a new key per attack
    run, and n large enough that the mean generalises to fresh draws).

    Averaging logits gives the gradient of the loss of the mean logits. For the gradient of
    the mean loss (Athalye et al.'s estimator) average the loss itself: make `fn` return
    per-example losses, or average probabilities and attack their log.

    The draws run through `jax.lax.map`: sequentially by default (memory of one draw),
    `batch_size` draws at a time via vmap (faster on accelerators, batch_size times the
    memory); batch_size=n vectorises all draws.

    Args:
      fn: (x, key) -> pytree of arrays, or x -> pytree when `transform` is given.
      n: number of draws (static, >= 1).
      key: `jax.random.key` the draws are split from.
      transform: optional random (x, key) -> x' applied before a deterministic fn.
      batch_size: draws per vectorised map step, or None for one at a time.

    Returns:
      x -> the mean of fn's outputs over the n draws (same structure as one output).

    Example:
      >>> def randomized_logits(x, k):  # e.g. a purifier with random noise
      ...     return logits_fn(jnp.clip(x + 0.03 * jax.random.normal(k, x.shape), 0, 1))
      >>> averaged = eot(randomized_logits, n=16, key=jax.random.key(1))
      >>> x_adv = pgd(averaged, x, y, eps=8 / 255, step_size=2 / 255, steps=10, key=key)
      >>> flip = lambda x, k: jnp.where(jax.random.bernoulli(k), x[:, :, ::-1], x)
      >>> averaged = eot(logits_fn, n=2, key=key, transform=flip)
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"eot needs n >= 1 draws (a Python int), got {n!r}.")
    draw = fn if transform is None else (lambda x, k: fn(transform(x, k)))
    keys = jax.random.split(key, n)

    def averaged(x):
        outputs = jax.lax.map(lambda k: draw(x, k), keys, batch_size=batch_size)
        return jax.tree.map(lambda o: jnp.mean(o, axis=0), outputs)

    return averaged
