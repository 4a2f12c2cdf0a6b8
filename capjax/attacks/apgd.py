"""Auto-PGD (APGD) and its targeted version APGD-T.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 (arXiv:2003.01690). APGD is PGD with momentum and a step
size that starts at 2 * eps and is halved at checkpoints when progress stalls; there it also
restarts from the best point found. Defaults are those of the paper and of the authors'
AutoAttack code (fra31/auto-attack): 100 iterations, momentum 0.75, rho = 0.75, checkpoints at
the fractions p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) of the
iterations, a random start on the eps-sphere, and APGD-T on the targeted DLR loss against the
9 classes with the highest clean logits after the top one.

Every example carries its own state (step size, best point, checkpoint statistics) and draws
its randomness from its own key, so an example's result does not depend on the rest of the
batch. The checkpoints are static, so one attack is one compiled loop (`attack_loop`); on
XLA:CPU outside jit it runs instead as host calls of short unrolled programs
(`host_loop`), each compiled once and reused by every target, restart and later call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from capjax.attacks._common import (
    RunResult,
    as_pytree_fn,
    attack_loop,
    attack_objective,
    best_of_runs,
    best_of_runs_from_host,
    check_attack_inputs,
    check_count,
    default_unroll,
    dlr_targeted,
    example_keys,
    host_loop,
    input_gradient_with_aux,
    is_adversarial,
    merge_rows,
    normalize_direction,
    num_classes_of,
    parallel_chunk,
    project,
    require_key,
    run_chunk,
)

# Momentum of the APGD update (the paper's alpha); the first step has none.
MOMENTUM = 0.75
# APGD's body compiles quickly, so on XLA:CPU it is unrolled fully up to AutoAttack's 100
# steps (convolution gradients run several times slower inside XLA:CPU while loops; see
# `default_unroll`); docs/benchmarks.md has the measurement.
APGD_CPU_FULL_UNROLL_MAX_STEPS = 100


def checkpoints(steps: int) -> dict[int, int]:
    """{iteration index (0-based) after which to check: length of the window it closes}.

    The paper's fractions rounded down as the reference code does: a first window of
    int(0.22 * steps), then each shorter by int(0.03 * steps) down to int(0.06 * steps), all
    at least 1. For 100 steps the checks fall after iterations 22, 41, 57, 70, 80, 87, 93, 99.
    """
    window = max(int(0.22 * steps), 1)
    shrink, floor = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out, end = {}, window
    while end <= steps:
        out[end - 1] = window
        window = max(window - shrink, floor)
        end += window
    return out


def _sphere_start(keys: jax.Array, x: jax.Array, eps: Any, norm: str) -> jax.Array:
    """The reference start: x plus a random direction scaled to norm eps, clipped to [0, 1]."""

    def direction(key):
        if norm == "linf":
            t = jax.random.uniform(key, x.shape[1:], x.dtype, -1.0, 1.0)
            return t / jnp.maximum(jnp.max(jnp.abs(t)), 1e-12)
        return normalize_direction(jax.random.normal(key, (1,) + x.shape[1:], x.dtype), "l2")[0]

    delta = jax.vmap(direction)(keys)
    return project(x + jnp.asarray(eps, x.dtype) * delta, x, eps, norm)


def _evaluator(
    logits_fn: Callable, randomized: bool, eot_iter: int, model_key: jax.Array | None
) -> Callable:
    """`evaluate(objective, z, i) -> (values, logits, grad)`; for a randomized model the
    gradient is averaged over `eot_iter` draws of its randomness (EOT), drawn afresh at every
    iteration i, and the values and logits (success, best point) are the last draw's, as in
    fra31/auto-attack's APGD."""

    def once(objective, z, key):
        call = (lambda q: logits_fn(q, key)) if randomized else logits_fn

        def values_and_logits(q):
            logits = call(q)
            return objective(logits), logits

        return input_gradient_with_aux(values_and_logits, z)

    def evaluate(objective, z, i):
        if not randomized:
            return once(objective, z, None)
        keys = jax.random.split(jax.random.fold_in(model_key, i), eot_iter)
        values, logits, grad = once(objective, z, keys[0])

        def add(j, acc):
            values, logits, grad = once(objective, z, keys[j])
            return values, logits, acc[2] + grad

        if eot_iter > 1:
            values, logits, grad = jax.lax.fori_loop(1, eot_iter, add, (values, logits, grad))
        return values, logits, grad / eot_iter

    return evaluate


class _State(NamedTuple):
    x: jax.Array  # current iterate
    x_prev: jax.Array  # iterate before the last step (for momentum)
    grad: jax.Array
    loss: jax.Array  # loss at the last iterate, to count increases
    x_best: jax.Array  # highest-loss point and its gradient and loss
    grad_best: jax.Array
    loss_best: jax.Array
    x_found: jax.Array  # latest successful point
    success: jax.Array
    step: jax.Array  # per-example step size
    increases: jax.Array  # steps since the last checkpoint that increased the loss
    loss_best_at_check: jax.Array
    reduced_at_check: jax.Array


def _per_example(v: jax.Array, ndim: int) -> jax.Array:
    return v.reshape(v.shape + (1,) * (ndim - 1))


def _apgd_start(evaluate, objective, succeeded, x_start, eps) -> _State:
    """The state of a run before its first step: x_start evaluated."""
    n = x_start.shape[0]
    values, logits, grad = evaluate(objective, x_start, 0)
    return _State(
        x=x_start,
        x_prev=x_start,
        grad=grad,
        loss=values,
        x_best=x_start,
        grad_best=grad,
        loss_best=values,
        x_found=x_start,
        success=succeeded(logits),
        step=jnp.full((n,), 2.0, jnp.float32) * jnp.asarray(eps, jnp.float32),
        increases=jnp.zeros((n,), jnp.float32),
        loss_best_at_check=values,
        reduced_at_check=jnp.ones((n,), bool),
    )


def _apgd_body(
    evaluate: Callable,
    objective: Callable,
    succeeded: Callable,
    x: jax.Array,
    eps: Any,
    rho: Any,
    norm: str,
    steps: int,
) -> Callable[[Any, _State], _State]:
    """`body(i, state) -> state`: APGD iteration i (0-based) of a `steps`-iteration run."""
    checks = checkpoints(steps)
    window = np.zeros(max(steps, 1), np.float32)
    window[list(checks)] = list(checks.values())
    window = jnp.asarray(window)
    at = lambda v: _per_example(v, x.ndim)  # noqa: E731

    def body(i, s: _State) -> _State:
        momentum = jnp.where(i == 0, 1.0, MOMENTUM).astype(x.dtype)
        direction = normalize_direction(s.grad, norm)
        z = project(s.x + at(s.step).astype(x.dtype) * direction, x, eps, norm)
        x_new = project(
            s.x + momentum * (z - s.x) + (1 - momentum) * (s.x - s.x_prev), x, eps, norm
        )
        values, logits, grad = evaluate(objective, x_new, i + 1)
        hit = succeeded(logits)
        better = values > s.loss_best
        x_best = jnp.where(at(better), x_new, s.x_best)
        grad_best = jnp.where(at(better), grad, s.grad_best)
        loss_best = jnp.where(better, values, s.loss_best)
        increases = s.increases + (values > s.loss)
        # Checkpoint: halve the step and go back to the best point if too few steps raised
        # the loss (condition 1) or neither the step nor the best loss changed since the last
        # checkpoint (condition 2).
        length = window[i]
        at_check = length > 0
        stalled = ~s.reduced_at_check & (s.loss_best_at_check >= loss_best)
        reduce = at_check & ((increases <= rho * length) | stalled)
        return _State(
            x=jnp.where(at(reduce), x_best, x_new),
            x_prev=s.x,
            grad=jnp.where(at(reduce), grad_best, grad),
            loss=values,
            x_best=x_best,
            grad_best=grad_best,
            loss_best=loss_best,
            x_found=jnp.where(at(hit), x_new, s.x_found),
            success=s.success | hit,
            step=jnp.where(reduce, s.step / 2, s.step),
            increases=jnp.where(at_check, 0.0, increases),
            loss_best_at_check=jnp.where(at_check, loss_best, s.loss_best_at_check),
            reduced_at_check=jnp.where(at_check, reduce, s.reduced_at_check),
        )

    return body


def _apgd_result(s: _State) -> RunResult:
    """A run's outcome: its latest successful point, else its highest-loss point."""
    found = _per_example(s.success, s.x.ndim)
    return RunResult(jnp.where(found, s.x_found, s.x_best), s.success, s.loss_best)


def _apgd_run(
    evaluate: Callable,
    objective: Callable,
    succeeded: Callable,
    x: jax.Array,
    x_start: jax.Array,
    eps: Any,
    rho: Any,
    norm: str,
    steps: int,
    unroll: bool | int | None,
) -> RunResult:
    """One APGD run from x_start, as one compiled loop: `_apgd_result` of its last state."""
    init = _apgd_start(evaluate, objective, succeeded, x_start, eps)
    body = _apgd_body(evaluate, objective, succeeded, x, eps, rho, norm, steps)
    if unroll is None:
        unroll = default_unroll(
            steps, full_max=APGD_CPU_FULL_UNROLL_MAX_STEPS, body=body, init=init
        )
    return _apgd_result(attack_loop(steps, body, init, unroll))


class _Setup(NamedTuple):
    """What every run of one call shares: computed once from the clean batch."""

    clean_success: jax.Array  # (N,) x already succeeds
    targets_by_run: jax.Array  # (N, T) APGD-T's target classes (T = 0 for other modes)
    model_key: jax.Array  # the model's own randomness (randomized models; else unused)


def _setup(logits_fn, x, y, keys, mode: str, num_target_classes: int, randomized: bool):
    if randomized:
        # The model's own randomness, apart from the examples' keys.
        clean_key, model_key = jax.random.split(jax.random.fold_in(keys[0], 0x6D6F64))
        clean_logits = logits_fn(x, clean_key)
    else:
        model_key, clean_logits = keys[0], logits_fn(x)
    # Targets: the classes ranked 2nd, 3rd, ... by the clean logits (reference order).
    ranked = jnp.argsort(-clean_logits.astype(jnp.float32), axis=-1)
    targets_by_run = ranked[:, 1 : num_target_classes + 1]
    return _Setup(is_adversarial(clean_logits, y, mode == "targeted"), targets_by_run, model_key)


def _run_problem(logits_fn, data, eps, model_key, run_ids, rows, statics):
    """(evaluate, objective, succeeded, xs, x_start) of one run of each example: `data`,
    (x, y, keys, targets_by_run), at `rows` (None: as given), each in run `run_ids`;
    `statics`: the call's static settings (`_STATICS`)."""
    mode, loss, restarts = statics["mode"], statics["loss"], statics["restarts"]
    if rows is not None:
        data = jax.tree.map(lambda a: a[rows], data)
    xs, labels, keys, targets_by_run = data
    model_key = model_key if statics["randomized"] else None
    evaluate = _evaluator(logits_fn, statics["randomized"], statics["eot_iter"], model_key)
    if mode == "top-k":
        column = (run_ids // restarts)[:, None]
        targets = jnp.take_along_axis(targets_by_run, column, axis=1)[:, 0]
        objective = lambda z: dlr_targeted(z, targets, labels)  # noqa: E731
    else:
        base = attack_objective(loss, mode == "targeted")
        objective = lambda z: base(z, labels)  # noqa: E731
    succeeded = lambda z: is_adversarial(z, labels, mode == "targeted")  # noqa: E731
    run_keys = jax.vmap(jax.random.fold_in)(keys, run_ids)
    return evaluate, objective, succeeded, xs, _sphere_start(run_keys, xs, eps, statics["norm"])


def _finish(x, eps, setup: _Setup, best: RunResult, norm: str, randomized: bool) -> jax.Array:
    keep_x = setup.clean_success
    if randomized:  # the reference returns x where no draw was ever fooled
        keep_x = keep_x | ~best.success
    x_adv = jnp.where(_per_example(keep_x, x.ndim), x, best.x_adv)
    return project(x_adv, x, eps, norm)


# The static settings of one call; they key the compiled programs.
_STATICS = (
    "norm",
    "steps",
    "loss",
    "mode",
    "restarts",
    "num_target_classes",
    "eot_iter",
    "randomized",
)


@functools.partial(jax.jit, static_argnames=_STATICS + ("unroll", "parallel_runs"))
def _apgd(
    logits_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    eps: Any,
    rho: Any,
    keys: jax.Array,
    *,
    unroll: bool | int | None,
    parallel_runs: bool | int | None,
    **statics: Any,
) -> jax.Array:
    """The whole attack as one program. statics["mode"]: "untargeted" (y true labels),
    "targeted" (y targets) or "top-k" (APGD-T)."""
    setup = _setup(
        logits_fn,
        x,
        y,
        keys,
        statics["mode"],
        statics["num_target_classes"],
        statics["randomized"],
    )

    def run(run_ids: jax.Array, rows: jax.Array) -> RunResult:
        data = (x, y, keys, setup.targets_by_run)
        evaluate, objective, succeeded, xs, x_start = _run_problem(
            logits_fn, data, eps, setup.model_key, run_ids, rows, statics
        )
        return _apgd_run(
            evaluate,
            objective,
            succeeded,
            xs,
            x_start,
            eps,
            rho,
            statics["norm"],
            statics["steps"],
            unroll,
        )

    best = best_of_runs(run, _num_runs(statics), x.shape[0], parallel_runs)
    return _finish(x, eps, setup, best, statics["norm"], statics["randomized"])


def _num_runs(statics) -> int:
    if statics["mode"] == "top-k":
        return statics["restarts"] * statics["num_target_classes"]
    return statics["restarts"]


# The host-driven path (`host_loop`): the same attack as programs of `length`
# iterations, each compiled once per shape and reused by every run and every later call.
_setup_program = jax.jit(_setup, static_argnames=("mode", "num_target_classes", "randomized"))


@functools.partial(jax.jit, static_argnames=_STATICS)
def _start_program(logits_fn, part, eps, model_key, run, **statics) -> _State:
    run_ids = jnp.full(part[1].shape, run, jnp.int32)
    evaluate, objective, succeeded, _, x_start = _run_problem(
        logits_fn, part, eps, model_key, run_ids, None, statics
    )
    return _apgd_start(evaluate, objective, succeeded, x_start, eps)


@functools.partial(jax.jit, static_argnames=_STATICS + ("length", "unroll"))
def _chunk_program(
    logits_fn, part, eps, rho, model_key, run, state, first, *, length, unroll, **statics
) -> _State:
    run_ids = jnp.full(part[1].shape, run, jnp.int32)
    evaluate, objective, succeeded, xs, _ = _run_problem(
        logits_fn, part, eps, model_key, run_ids, None, statics
    )
    body = _apgd_body(
        evaluate, objective, succeeded, xs, eps, rho, statics["norm"], statics["steps"]
    )
    return run_chunk(body, state, first, length, unroll)


@jax.jit
def _end_program(rows, state: _State, best: RunResult | None) -> RunResult:
    return merge_rows(best, rows, _apgd_result(state))


_finish_program = jax.jit(_finish, static_argnames=("norm", "randomized"))


def _apgd_from_host(logits_fn, x, y, eps, rho, keys, loop, **statics) -> jax.Array:
    """`_apgd` with its loops driven from the host (`best_of_runs_from_host`: each run on the
    examples no earlier run broke); the same result up to float rounding."""
    randomized = statics["randomized"]
    setup = _setup_program(
        logits_fn,
        x,
        y,
        keys,
        mode=statics["mode"],
        num_target_classes=statics["num_target_classes"],
        randomized=randomized,
    )
    best = best_of_runs_from_host(
        _num_runs(statics),
        (x, y, keys, setup.targets_by_run),
        loop.chunks,
        lambda run, part: _start_program(logits_fn, part, eps, setup.model_key, run, **statics),
        lambda run, part, state, first, length: _chunk_program(
            logits_fn,
            part,
            eps,
            rho,
            setup.model_key,
            run,
            state,
            first,
            length=length,
            unroll=loop.unroll,
            **statics,
        ),
        lambda rows, part, state, best: _end_program(rows, state, best),
        # A randomized model's draws depend on the whole batch: keep every row.
        gather=not randomized,
    )
    return _finish_program(x, eps, setup, best, norm=statics["norm"], randomized=randomized)


def _run_apgd(logits_fn, x, y, eps, rho, keys, *, unroll, parallel_runs, **statics):
    """Host-driven on XLA:CPU outside jit (`host_loop`), else one program."""
    logits_fn = as_pytree_fn(logits_fn)
    loop = None
    if unroll is None and parallel_chunk(parallel_runs, _num_runs(statics)) == 1:
        loop = host_loop(
            statics["steps"], logits_fn, x, statics["randomized"], inputs=(y, eps, rho, keys)
        )
    if loop is None:
        return _apgd(
            logits_fn, x, y, eps, rho, keys, unroll=unroll, parallel_runs=parallel_runs, **statics
        )
    return _apgd_from_host(logits_fn, x, y, eps, rho, keys, loop, **statics)


def _prepare(
    logits_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    *,
    eps: Any,
    norm: str,
    steps: int,
    loss: str,
    restarts: int,
    key: jax.Array | None,
    rho: Any,
    eot_iter: int,
    randomized: bool,
    min_classes: int,
    validate: bool,
    name: str,
) -> tuple[jax.Array, int]:
    """Validates the shared arguments; returns (per-example keys, number of classes)."""
    key = require_key(key, name)
    call = (lambda z: logits_fn(z, jax.random.key(0))) if randomized else logits_fn
    num_classes = num_classes_of(call, x)
    check_attack_inputs(
        x,
        y,
        eps=eps,
        norm=norm,
        steps=steps,
        num_classes=num_classes,
        loss=loss,
        losses=("ce", "dlr"),
        validate=validate,
    )
    check_count(restarts=restarts, eot_iter=eot_iter)
    if eot_iter > 1 and not randomized:
        raise ValueError("eot_iter > 1 averages over a randomized model; pass randomized=True.")
    if num_classes < min_classes:
        raise ValueError(f"{name} needs at least {min_classes} classes, got {num_classes}.")
    if validate and not isinstance(rho, jax.core.Tracer) and not 0 <= float(rho) <= 1:
        raise ValueError(f"rho must lie in [0, 1], got {rho}.")
    return example_keys(key, x.shape[0]), num_classes


def apgd(
    logits_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    *,
    eps: Any,
    norm: str = "linf",
    steps: int = 100,
    loss: str = "ce",
    targeted: bool = False,
    restarts: int = 1,
    key: jax.Array | None = None,
    rho: Any = 0.75,
    eot_iter: int = 1,
    randomized: bool = False,
    unroll: bool | int | None = None,
    parallel_runs: bool | int | None = None,
    validate: bool = True,
) -> jax.Array:
    """APGD (Croce & Hein, ICML 2020): step-size-free PGD with momentum, L-inf or L2.

    Defaults follow the paper and AutoAttack's APGD-CE (100 iterations, rho 0.75, one run;
    AutoAttack's "plus" version uses 5 restarts).

    Args:
      logits_fn: `(N, H, W, C) images -> (N, K) logits`; with `randomized=True`,
        `logits_fn(images, key)` for a defense that draws randomness from `key`.
      x: (N, H, W, C) float images in [0, 1].
      y: (N,) int true labels, or the target classes when `targeted=True`.
      eps: radius of the `norm` ball on the [0, 1] scale (traced: sweeping it never recompiles).
      norm: "linf" or "l2".
      steps: iterations per run (static); the checkpoints follow from it.
      loss: "ce" (cross-entropy) or "dlr" (difference of logits ratio); targeted, -CE of the
        target or the targeted DLR loss against the strongest other class.
      targeted: attack towards the classes `y` instead of away from them.
      restarts: runs from independent random starts; an example keeps its first success.
      key: `jax.random` key for the random starts, or (N,) keys, one per example.
      rho: fraction of loss-increasing steps below which the step size is halved.
      eot_iter: gradients averaged per step over this many draws (EOT; AutoAttack's "rand"
        version uses 20), only with `randomized=True`; success and the best point are read
        off the last draw, as in fra31/auto-attack.
      randomized: `logits_fn` takes a key as second argument; as in the reference, an
        example never fooled comes back as x (not as its highest-loss point).
      unroll: loop unrolling, see `attack_loop`. None: on XLA:CPU outside jit the loop is
        driven from the host (`host_loop`: 10-iteration programs), else
        `default_unroll(steps)`; an explicit value keeps one compiled loop.
      parallel_runs: restarts batched at once: None/False one at a time (memory bounded by
        the batch), True all, k k at a time; see `best_of_runs`.
      validate: check input values (outside jit).

    Returns:
      (N, H, W, C) x_adv, same dtype as x, with |x_adv - x|_p <= eps and x_adv in [0, 1]:
      per example the latest successful iterate of its first successful run, else its
      highest-loss point (x with `randomized=True`); x itself where x already succeeds.
    """
    keys, _ = _prepare(
        logits_fn,
        x,
        y,
        eps=eps,
        norm=norm,
        steps=steps,
        loss=loss,
        restarts=restarts,
        key=key,
        rho=rho,
        eot_iter=eot_iter,
        randomized=randomized,
        min_classes=(4 if targeted else 3) if loss == "dlr" else 2,
        validate=validate,
        name="APGD",
    )
    # Strongly typed float32 scalars: a Python float and an array give the same trace.
    eps, rho = jnp.asarray(eps, jnp.float32), jnp.asarray(rho, jnp.float32)
    return _run_apgd(
        logits_fn,
        x,
        y,
        eps,
        rho,
        keys,
        norm=norm,
        steps=steps,
        loss=loss,
        mode="targeted" if targeted else "untargeted",
        restarts=restarts,
        num_target_classes=0,
        eot_iter=eot_iter,
        randomized=randomized,
        unroll=unroll,
        parallel_runs=parallel_runs,
    )


def apgd_t(
    logits_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    *,
    eps: Any,
    norm: str = "linf",
    steps: int = 100,
    num_target_classes: int = 9,
    restarts: int = 1,
    key: jax.Array | None = None,
    rho: Any = 0.75,
    eot_iter: int = 1,
    randomized: bool = False,
    unroll: bool | int | None = None,
    parallel_runs: bool | int | None = None,
    validate: bool = True,
) -> jax.Array:
    """APGD-T (Croce & Hein, ICML 2020): APGD on the targeted DLR loss, one run per target.

    As in AutoAttack's standard version: the targets are the `num_target_classes` (9) classes
    ranked 2nd, 3rd, ... by the clean logits, tried in that order with `restarts` (1) runs of
    `steps` (100) iterations each; an example counts as broken when it is misclassified (not
    necessarily as the target), and keeps its first success.

    Args:
      logits_fn, x, eps, norm, steps, restarts, key, rho, eot_iter, randomized, unroll,
        parallel_runs, validate: as in `apgd` (runs here are targets x restarts).
      y: (N,) int TRUE labels (the targets are chosen from the clean logits).
      num_target_classes: how many target classes to try, at most K - 1.

    Returns:
      (N, H, W, C) x_adv within the threat model, same dtype as x: the first successful
      point per example, else the highest-loss point of the runs; x where x is misclassified.
    """
    keys, num_classes = _prepare(
        logits_fn,
        x,
        y,
        eps=eps,
        norm=norm,
        steps=steps,
        loss="dlr",
        restarts=restarts,
        key=key,
        rho=rho,
        eot_iter=eot_iter,
        randomized=randomized,
        min_classes=4,
        validate=validate,
        name="APGD-T",
    )
    check_count(num_target_classes=num_target_classes)
    if num_target_classes > num_classes - 1:
        raise ValueError(
            f"num_target_classes={num_target_classes} exceeds the {num_classes - 1} classes "
            "other than the top one."
        )
    # Strongly typed float32 scalars: a Python float and an array give the same trace.
    eps, rho = jnp.asarray(eps, jnp.float32), jnp.asarray(rho, jnp.float32)
    return _run_apgd(
        logits_fn,
        x,
        y,
        eps,
        rho,
        keys,
        norm=norm,
        steps=steps,
        loss="dlr",
        mode="top-k",
        restarts=restarts,
        num_target_classes=num_target_classes,
        eot_iter=eot_iter,
        randomized=randomized,
        unroll=unroll,
        parallel_runs=parallel_runs,
    )


__all__ = ["apgd", "apgd_t", "checkpoints"]
