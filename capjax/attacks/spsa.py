"""SPSA: gradient-free projected Adam on a finite-difference gradient estimate.

Uesato, O'Donoghue, van den Oord & Kohli, "Adversarial risk and the dangers of evaluating
against weak attacks", ICML 2018 (arXiv:1802.05666). At every step the gradient of the loss
is estimated from `num_pairs` random Rademacher directions v, each queried as a +/- pair,
as the mean of `(L(x + delta v) - L(x - delta v)) / (2 delta) * v`: 2 x num_pairs queries
per step. The perturbation takes an Adam step on it, projected back into the eps-ball and
[0, 1]. With `early_stop` (the default) an example stops once it is misclassified and keeps
that point; cleverhans' default runs every step and returns the last iterate
(`early_stop=False`).

Defaults follow the paper and the cleverhans implementation it released: delta
(`perturbation_size`) 0.01, Adam learning rate (`step_size`) 0.01, 128 queries per step
(cleverhans' `spsa_samples=128`, i.e. 64 +/- pairs: `num_pairs=64`), the margin (logit
difference) loss, a uniformly random start. (cleverhans scales its estimate by delta, which
Adam's scale invariance makes irrelevant; this one is unscaled.)

Only the values of `logits_fn` are used. The model is evaluated on batches of
`N * 2 * pairs_per_batch` images, at points `x +- delta v` that may leave [0, 1] by delta
(as in the reference).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from capjax.attacks._common import (
    as_pytree_fn,
    attack_loop,
    attack_objective,
    check_attack_inputs,
    check_count,
    check_nonnegative,
    example_keys,
    is_adversarial,
    num_classes_of,
    project,
    random_init,
    require_key,
)

# Rolled by default: each step is forward passes only, which a loop does not slow down on
# XLA:CPU, and the compile time stays flat in `steps`.
_DEFAULT_UNROLL = 1


def _estimate_gradient(objective, x_adv, labels, keys, delta, num_pairs, pairs_per_batch):
    """(N, H, W, C) SPSA estimate of the gradient of `objective` (per example) at x_adv."""
    n = x_adv.shape[0]
    chunks = num_pairs // pairs_per_batch

    def chunk(j, total):
        draw = (
            lambda k: jax.random.rademacher(  # noqa: E731
                jax.random.fold_in(k, j), (pairs_per_batch,) + x_adv.shape[1:], x_adv.dtype
            )
        )
        v = jax.vmap(draw)(keys)  # (N, S, H, W, C)
        step = jnp.asarray(delta, x_adv.dtype) * v
        points = jnp.concatenate([x_adv[:, None] + step, x_adv[:, None] - step], axis=1)
        values = objective(
            points.reshape((-1,) + x_adv.shape[1:]), jnp.repeat(labels, 2 * pairs_per_batch)
        ).reshape(n, 2, pairs_per_batch)
        slope = (values[:, 0] - values[:, 1]) / (2 * jnp.asarray(delta, jnp.float32))
        return total + jnp.einsum("ns,ns...->n...", slope, v.astype(jnp.float32))

    total = jnp.zeros(x_adv.shape, jnp.float32)
    total = chunk(0, total) if chunks == 1 else jax.lax.fori_loop(0, chunks, chunk, total)
    return total / num_pairs


@functools.partial(
    jax.jit,
    static_argnames=(
        "norm",
        "steps",
        "num_pairs",
        "pairs_per_batch",
        "loss",
        "targeted",
        "random_start",
        "early_stop",
        "unroll",
    ),
)
def _spsa(
    logits_fn,
    x,
    y,
    eps,
    step_size,
    perturbation_size,
    keys,
    *,
    norm,
    steps,
    num_pairs,
    pairs_per_batch,
    loss,
    targeted,
    random_start,
    early_stop,
    unroll,
):
    base = attack_objective(loss, targeted)
    objective = lambda z, labels: base(logits_fn(z), labels)  # noqa: E731
    optimizer = optax.adam(step_size)
    if random_start:
        start = jax.vmap(lambda k, xi: random_init(k, xi[None], eps, norm)[0])
        start_keys, keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        x_adv = start(start_keys, x)
    else:
        x_adv = x
    done = is_adversarial(logits_fn(x_adv), y, targeted)

    def step(i, carry):
        x_adv, opt_state, done = carry
        step_keys = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
        grad = _estimate_gradient(
            objective, x_adv, y, step_keys, perturbation_size, num_pairs, pairs_per_batch
        )
        # Adam minimises: descend on the negated ascent direction.
        updates, opt_state = optimizer.update(-grad, opt_state)
        moved = project(x_adv + updates.astype(x.dtype), x, eps, norm)
        if not early_stop:
            return moved, opt_state, done
        x_adv = jnp.where(done[:, None, None, None], x_adv, moved)
        return x_adv, opt_state, done | is_adversarial(logits_fn(x_adv), y, targeted)

    def body(i, carry):
        if not early_stop:
            return step(i, carry)
        # Once every example is broken (early stopping), skip the remaining steps' queries.
        return jax.lax.cond(jnp.all(carry[2]), lambda c: c, lambda c: step(i, c), carry)

    init = (x_adv, optimizer.init(jnp.zeros(x.shape, jnp.float32)), done)
    x_adv, _, _ = attack_loop(steps, body, init, unroll)
    return project(x_adv, x, eps, norm)


def spsa(
    logits_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    *,
    eps: Any,
    norm: str = "linf",
    steps: int = 100,
    step_size: Any = 0.01,
    perturbation_size: Any = 0.01,
    num_pairs: int = 64,
    pairs_per_batch: int | None = None,
    loss: str = "margin",
    targeted: bool = False,
    random_start: bool = True,
    early_stop: bool = True,
    key: jax.Array | None = None,
    unroll: bool | int | None = _DEFAULT_UNROLL,
    validate: bool = True,
    num_samples: int | None = None,
    samples_per_batch: int | None = None,
) -> jax.Array:
    """SPSA (Uesato et al., ICML 2018): gradient-free, 2 * num_pairs queries per step.

    Defaults: the paper's and cleverhans' (delta 0.01, Adam learning rate 0.01, 128 queries
    per step = 64 +/- pairs, margin loss); the paper's evaluations ran 100 to a few hundred
    steps.

    Args:
      logits_fn: `(B, H, W, C) images -> (B, K) logits` for any batch size B; only its values
        are used.
      x: (N, H, W, C) float images in [0, 1].
      y: (N,) int true labels, or target classes when `targeted=True`.
      eps: radius of the `norm` ball (traced).
      norm: "linf" (the paper's) or "l2".
      steps: Adam steps (static).
      step_size: Adam learning rate (cleverhans' `learning_rate`), traced.
      perturbation_size: delta, the finite-difference step, traced.
      num_pairs: random directions per gradient estimate, each queried at x +- delta v
        (static): 2 * num_pairs queries per step. cleverhans' `spsa_samples` counts queries
        (its 128 is num_pairs=64).
      pairs_per_batch: directions evaluated per model call (memory knob); must divide
        num_pairs; None: all at once.
      loss: "margin" (logit difference) or "ce".
      targeted: move towards the classes `y`.
      random_start: start from a uniformly random point of the ball (the reference does).
      early_stop: freeze each example at its first misclassified iterate and skip the steps
        once all are (capjax's default); False runs every step and returns the last
        iterate, as cleverhans does by default.
      key: `jax.random` key, or (N,) keys, one per example.
      unroll: loop unrolling, see `attack_loop` (default 1: a rolled loop).
      validate: check input values (outside jit).
      num_samples, samples_per_batch: the former names of num_pairs and pairs_per_batch;
        passing them raises, since "samples" read as queries counts half as many pairs.

    Returns:
      (N, H, W, C) x_adv within the threat model, same dtype as x: the first successful
      iterate per example (early_stop), else the last one.
    """
    if num_samples is not None or samples_per_batch is not None:
        raise ValueError(
            "spsa's num_samples / samples_per_batch are now num_pairs / pairs_per_batch: "
            "each pair is 2 queries (cleverhans' spsa_samples=128 is num_pairs=64)."
        )
    key = require_key(key, "SPSA")
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
    pairs_per_batch = num_pairs if pairs_per_batch is None else pairs_per_batch
    check_count(num_pairs=num_pairs, pairs_per_batch=pairs_per_batch)
    if num_pairs % pairs_per_batch:
        raise ValueError(f"pairs_per_batch={pairs_per_batch} must divide num_pairs={num_pairs}.")
    check_nonnegative(validate, step_size=step_size, perturbation_size=perturbation_size)
    # Strongly typed float32 scalars: a Python float and an array give the same trace.
    eps, step_size, perturbation_size = (
        jnp.asarray(eps, jnp.float32),
        jnp.asarray(step_size, jnp.float32),
        jnp.asarray(perturbation_size, jnp.float32),
    )
    return _spsa(
        as_pytree_fn(logits_fn),
        x,
        y,
        eps,
        step_size,
        perturbation_size,
        example_keys(key, x.shape[0]),
        norm=norm,
        steps=steps,
        num_pairs=num_pairs,
        pairs_per_batch=pairs_per_batch,
        loss=loss,
        targeted=targeted,
        random_start=random_start,
        early_stop=early_stop,
        unroll=unroll,
    )


__all__ = ["spsa"]
