"""FAB: the Fast Adaptive Boundary attack, untargeted and targeted (FAB-T), L-inf and L2.

Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary
attack", ICML 2020 (arXiv:1907.02044). Each step linearises the decision boundary between the
true class and a target (or the closest class) at the current point, projects both the current
point and the clean image onto that hyperplane within the [0, 1] box, and moves to a convex
combination of the two projections (weight of the clean one: alpha <= alpha_max), overshooting
by eta; once a point is adversarial it is pulled back towards the clean image by beta. FAB
minimises the perturbation; as an eps-bounded attack (its role in AutoAttack) an example
counts as broken, by default, only when the smallest adversarial point found lies within eps
(`eps_rule="minimal_norm"`, fra31/auto-attack's rule). `eps_rule="project"` (capjax's
earlier default) also projects a farther point onto the eps-ball and counts it when it is
still misclassified there: a stronger attack than the reference's, so an AutoAttack number
measured with it can be lower than the reference's. Either way the result is inside the
threat model.

Defaults are those of the paper and AutoAttack's FAB-T (fra31/auto-attack): 100 iterations,
alpha_max 0.1, eta 1.05, beta 0.9, 9 targets (the classes ranked 2nd, 3rd, ... by the clean
logits), one run each; restarts after the first start from a random point at distance
eps / 2.

The box-constrained projection is solved exactly per example: for both norms the
perturbation at "radius" lambda is `d_i = s_i * min(lambda * m_i, cap_i)` (m_i = 1 for
L-inf, |w_i| for L2; cap_i the room left in the box in the useful direction s_i), so reaching
the hyperplane means solving the piecewise-linear, non-decreasing equation
`sum_i a_i * min(lambda, c_i) = |r|` in lambda.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from capjax.attacks._common import (
    RunResult,
    as_pytree_fn,
    attack_loop,
    best_of_runs,
    best_of_runs_from_host,
    check_attack_inputs,
    check_count,
    check_nonnegative,
    example_keys,
    host_loop,
    input_gradient,
    is_adversarial,
    merge_rows,
    num_classes_of,
    parallel_chunk,
    project,
    require_key,
    run_chunk,
)

# Newton iterations of the projection; convergence (to float precision) typically takes < 10.
_NEWTON_MAX_ITERATIONS = 50


def _solve_saturating(a: jax.Array, c: jax.Array, target: jax.Array) -> jax.Array:
    """Smallest lambda >= 0 with F(lambda) = sum_i a_i * min(lambda, c_i) >= target, per row.

    a, c: (M, D) non-negative weights and breakpoints; target: (M,) >= 0. Where even
    lambda = max(c) falls short (the hyperplane is out of the box), returns max(c).

    F is piecewise linear, non-decreasing and concave, so Newton's method from lambda = 0
    approaches the root from the left without overshooting and is exact once it reaches the
    root's linear piece; it typically takes fewer than 10 iterations for D = 3072. (A sort of
    the breakpoints, as in the reference, was 10x slower on XLA:CPU.)
    """
    c_max = jnp.max(c, axis=-1)

    def newton(state):
        lam, _, i = state
        value = jnp.sum(a * jnp.minimum(lam[:, None], c), axis=-1)
        slope = jnp.sum(jnp.where(c > lam[:, None], a, 0.0), axis=-1)
        step = (target - value) / jnp.maximum(slope, jnp.finfo(jnp.float32).tiny)
        new = jnp.minimum(jnp.where(value < target, lam + step, lam), c_max)
        return new, jnp.any(new != lam), i + 1

    keep_going = lambda state: state[1] & (state[2] < _NEWTON_MAX_ITERATIONS)  # noqa: E731
    lam, _, _ = jax.lax.while_loop(keep_going, newton, (jnp.zeros_like(target), True, 0))
    return lam


def project_to_hyperplane(p: jax.Array, w: jax.Array, r: jax.Array, norm: str) -> jax.Array:
    """The smallest d (in `norm`) with w . d = r and 0 <= p + d <= 1, per row.

    Args:
      p: (M, D) points in [0, 1]; w: (M, D) hyperplane normals; r: (M,) required change of
        w . p. Rows whose hyperplane cannot be reached inside the box get the box corner
        that comes closest.
      norm: "linf" or "l2".

    Returns:
      (M, D) float32 steps d.
    """
    p, w, r = p.astype(jnp.float32), w.astype(jnp.float32), r.astype(jnp.float32)
    s = jnp.sign(w) * jnp.sign(r)[:, None]
    cap = jnp.where(s > 0, 1.0 - p, p)
    active = s != 0
    if norm == "linf":
        a, c = jnp.abs(w), cap
        lam = _solve_saturating(jnp.where(active, a, 0.0), jnp.where(active, c, 0.0), jnp.abs(r))
        return jnp.where(active, s * jnp.minimum(lam[:, None], cap), 0.0)
    # L2: d_i = s_i * min(lambda * |w_i|, cap_i) is the KKT solution (d parallel to w until
    # coordinates hit the box); in lambda, coordinate i saturates at cap_i / |w_i|.
    a = jnp.where(active, w * w, 0.0)
    c = jnp.where(active, cap / jnp.where(active, jnp.abs(w), 1.0), 0.0)
    lam = _solve_saturating(a, c, jnp.abs(r))
    return jnp.where(active, s * jnp.minimum(lam[:, None] * jnp.abs(w), cap), 0.0)


def _size(d: jax.Array, norm: str) -> jax.Array:
    """Per-row norm of a (M, D) array."""
    if norm == "linf":
        return jnp.max(jnp.abs(d), axis=-1)
    return jnp.sqrt(jnp.sum(jnp.square(d.astype(jnp.float32)), axis=-1))


def _dual_size(g: jax.Array, norm: str) -> jax.Array:
    """The dual norm (L1 for L-inf, L2 for L2) over the last axis: distance = |f| / dual."""
    if norm == "linf":
        return jnp.sum(jnp.abs(g), axis=-1)
    return jnp.sqrt(jnp.sum(jnp.square(g), axis=-1))


def _boundary(
    logits_fn: Callable, z: jax.Array, labels: jax.Array, targets: jax.Array | None, norm: str
) -> tuple[jax.Array, jax.Array]:
    """(f, w): the value (N,) and input gradient (N, D) of the logit difference to cross.

    Targeted: f = z_target - z_label. Untargeted: the class whose linearised boundary is
    closest, f_k / |grad f_k|_dual minimal over k != label (needs the full Jacobian).
    """
    n = z.shape[0]
    if targets is not None:

        def difference(q):
            logits = logits_fn(q).astype(jnp.float32)
            pick = lambda t: jnp.take_along_axis(logits, t[:, None], axis=-1)[:, 0]  # noqa: E731
            return pick(targets) - pick(labels)

        f, g = input_gradient(difference, z)
        return f, g.reshape(n, -1)
    logits, vjp = jax.vjp(lambda q: logits_fn(q).astype(jnp.float32), z)
    num_classes = logits.shape[-1]
    eye = jnp.broadcast_to(
        jnp.eye(num_classes, dtype=logits.dtype)[:, None], (num_classes, n, num_classes)
    )
    jac = jax.vmap(lambda ct: vjp(ct)[0])(eye).reshape(num_classes, n, -1)  # (K, N, D)
    rows = jnp.arange(n)
    f = logits - logits[rows, labels][:, None]  # (N, K)
    g = jnp.swapaxes(jac, 0, 1) - jac[labels, rows][:, None]  # (N, K, D)
    distance = jnp.abs(f) / (_dual_size(g, norm) + 1e-12)
    distance = jnp.where(jax.nn.one_hot(labels, num_classes, dtype=bool), jnp.inf, distance)
    k = jnp.argmin(distance, axis=-1)
    return f[rows, k], g[rows, k]


def _fab_body(
    logits_fn: Callable,
    x: jax.Array,
    labels: jax.Array,
    targets: jax.Array | None,
    alpha_max: Any,
    eta: Any,
    beta: Any,
    norm: str,
) -> Callable:
    """`body(i, (x1, best, best_size)) -> carry`: one FAB iteration, points flattened."""
    n = x.shape[0]
    x0 = x.reshape(n, -1).astype(jnp.float32)
    alpha_max, eta, beta = (jnp.asarray(v, jnp.float32) for v in (alpha_max, eta, beta))

    def body(_, carry):
        x1, best, best_size = carry
        f, w = _boundary(logits_fn, x1.reshape(x.shape).astype(x.dtype), labels, targets, norm)
        # Project x1 and x0 onto the linearised boundary {q: f + w . (q - x1) = 0} in the box.
        r1 = -f
        r0 = -f + jnp.sum(w * (x1 - x0), axis=-1)
        d = project_to_hyperplane(
            jnp.concatenate([x1, x0]), jnp.concatenate([w, w]), jnp.concatenate([r1, r0]), norm
        )
        d1, d0 = d[:n], d[n:]
        a1 = jnp.maximum(_size(d1, norm), 1e-8)
        a0 = jnp.maximum(_size(d0, norm), 1e-8)
        alpha = jnp.clip(a1 / (a1 + a0), 0.0, alpha_max)[:, None]
        x1 = jnp.clip((x1 + eta * d1) * (1 - alpha) + (x0 + eta * d0) * alpha, 0.0, 1.0)
        adv = is_adversarial(logits_fn(x1.reshape(x.shape).astype(x.dtype)), labels, False)
        size = _size(x1 - x0, norm)
        better = adv & (size < best_size)
        best = jnp.where(better[:, None], x1, best)
        best_size = jnp.where(better, size, best_size)
        # Once adversarial, step back towards the clean image to shrink the perturbation.
        x1 = jnp.where(adv[:, None], x0 + (x1 - x0) * beta, x1)
        return x1, best, best_size

    return body


def _fab_start(x: jax.Array, x_start: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The carry before the first iteration: start point, no adversarial point yet."""
    n = x.shape[0]
    flat = lambda v: v.reshape(n, -1).astype(jnp.float32)  # noqa: E731
    return flat(x_start), flat(x), jnp.full((n,), jnp.inf)


def _fab_run(
    logits_fn: Callable,
    x: jax.Array,
    labels: jax.Array,
    targets: jax.Array | None,
    x_start: jax.Array,
    alpha_max: Any,
    eta: Any,
    beta: Any,
    norm: str,
    steps: int,
    unroll: bool | int | None,
) -> tuple[jax.Array, jax.Array]:
    """One FAB run: (smallest adversarial point found or x, its distance or inf)."""
    body = _fab_body(logits_fn, x, labels, targets, alpha_max, eta, beta, norm)
    _, best, best_size = attack_loop(steps, body, _fab_start(x, x_start), unroll)
    return best.reshape(x.shape).astype(x.dtype), best_size


def _random_start(keys: jax.Array, x: jax.Array, radius: Any, norm: str) -> jax.Array:
    """The reference restart point: a random direction scaled to `radius`, clipped to [0, 1]."""

    def direction(key):
        if norm == "linf":
            t = jax.random.uniform(key, x.shape[1:], jnp.float32, -1.0, 1.0)
            return t / jnp.maximum(jnp.max(jnp.abs(t)), 1e-12)
        t = jax.random.normal(key, x.shape[1:], jnp.float32)
        return t / jnp.maximum(jnp.sqrt(jnp.sum(t * t)), 1e-12)

    delta = jax.vmap(direction)(keys) * jnp.asarray(radius, jnp.float32)
    return jnp.clip(x + delta.astype(x.dtype), 0, 1)


class _Setup(NamedTuple):
    """What every run of one call shares: computed once from the clean batch."""

    clean_wrong: jax.Array  # (N,) x already misclassified
    targets_by_run: jax.Array  # (N, T) FAB-T's target classes (T = 0 for FAB)


def _setup(logits_fn, x, y, num_target_classes: int) -> _Setup:
    clean_logits = logits_fn(x)
    ranked = jnp.argsort(-clean_logits.astype(jnp.float32), axis=-1)
    return _Setup(is_adversarial(clean_logits, y, False), ranked[:, 1 : num_target_classes + 1])


def _run_problem(data, eps, run_ids, rows, statics):
    """(xs, labels, targets, x_start) of one run of each example: `data`,
    (x, y, keys, targets_by_run), at `rows` (None: as given), each in run `run_ids`."""
    restarts = statics["restarts"]
    if rows is not None:
        data = jax.tree.map(lambda a: a[rows], data)
    xs, labels, keys, targets_by_run = data
    targets = None
    if statics["targeted"]:
        column = (run_ids // restarts)[:, None]
        targets = jnp.take_along_axis(targets_by_run, column, axis=1)[:, 0]
    # The first run of each target starts at x, the others at random (as the reference).
    run_keys = jax.vmap(jax.random.fold_in)(keys, run_ids)
    random_start = (run_ids % restarts > 0).reshape((-1,) + (1,) * (xs.ndim - 1))
    x_start = jnp.where(random_start, _random_start(run_keys, xs, eps / 2, statics["norm"]), xs)
    return xs, labels, targets, x_start


def _run_result(logits_fn, xs, labels, found, size, eps, statics) -> RunResult:
    """A run's outcome under the call's `eps_rule`, scored by minus its distance."""
    if statics["eps_rule"] == "project":
        # Project the smallest adversarial point into the ball; keep it if still wrong.
        candidate = project(found, xs, eps, statics["norm"])
        success = jnp.isfinite(size)
    else:  # the reference: broken only if the smallest adversarial point is within eps
        candidate = found
        success = jnp.isfinite(size) & (size <= eps)
    success = success & is_adversarial(logits_fn(candidate), labels, False)
    return RunResult(candidate, success, -size)


def _finish(x, eps, setup: _Setup, best: RunResult, norm: str) -> jax.Array:
    keep = (best.success & ~setup.clean_wrong).reshape((-1,) + (1,) * (x.ndim - 1))
    return project(jnp.where(keep, best.x_adv, x), x, eps, norm)


def _num_runs(statics) -> int:
    return statics["restarts"] * max(statics["num_target_classes"], 1)


# The static settings of one call; they key the compiled programs.
_STATICS = ("norm", "steps", "targeted", "num_target_classes", "restarts", "eps_rule")


@functools.partial(jax.jit, static_argnames=_STATICS + ("unroll", "parallel_runs"))
def _fab(
    logits_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    eps: Any,
    alpha_max: Any,
    eta: Any,
    beta: Any,
    keys: jax.Array,
    *,
    unroll: bool | int | None,
    parallel_runs: bool | int | None,
    **statics: Any,
) -> jax.Array:
    """The whole attack as one program."""
    setup = _setup(logits_fn, x, y, statics["num_target_classes"])

    def run(run_ids: jax.Array, rows: jax.Array) -> RunResult:
        data = (x, y, keys, setup.targets_by_run)
        xs, labels, targets, x_start = _run_problem(data, eps, run_ids, rows, statics)
        found, size = _fab_run(
            logits_fn,
            xs,
            labels,
            targets,
            x_start,
            alpha_max,
            eta,
            beta,
            statics["norm"],
            statics["steps"],
            unroll,
        )
        return _run_result(logits_fn, xs, labels, found, size, eps, statics)

    best = best_of_runs(run, _num_runs(statics), x.shape[0], parallel_runs)
    return _finish(x, eps, setup, best, statics["norm"])


# The host-driven path (`host_loop`): the same attack as programs of `length`
# iterations, each compiled once per shape and reused by every run and every later call.
_setup_program = jax.jit(_setup, static_argnames=("num_target_classes",))
_finish_program = jax.jit(_finish, static_argnames=("norm",))


@functools.partial(jax.jit, static_argnames=_STATICS)
def _start_program(part, eps, run, **statics):
    run_ids = jnp.full(part[1].shape, run, jnp.int32)
    xs, _, _, x_start = _run_problem(part, eps, run_ids, None, statics)
    return _fab_start(xs, x_start)


@functools.partial(jax.jit, static_argnames=_STATICS + ("length", "unroll"))
def _chunk_program(
    logits_fn, part, eps, alpha_max, eta, beta, run, carry, first, *, length, unroll, **statics
):
    run_ids = jnp.full(part[1].shape, run, jnp.int32)
    xs, labels, targets, _ = _run_problem(part, eps, run_ids, None, statics)
    body = _fab_body(logits_fn, xs, labels, targets, alpha_max, eta, beta, statics["norm"])
    return run_chunk(body, carry, first, length, unroll)


@functools.partial(jax.jit, static_argnames=_STATICS)
def _end_program(logits_fn, eps, rows, part, carry, best, **statics):
    xs, labels = part[0], part[1]
    _, found, size = carry
    found = found.reshape(xs.shape).astype(xs.dtype)
    return merge_rows(best, rows, _run_result(logits_fn, xs, labels, found, size, eps, statics))


def _fab_from_host(logits_fn, x, y, eps, alpha_max, eta, beta, keys, loop, **statics):
    """`_fab` with its loops driven from the host (`best_of_runs_from_host`: each run on the
    examples no earlier run broke); the same result up to float rounding."""
    setup = _setup_program(logits_fn, x, y, num_target_classes=statics["num_target_classes"])
    best = best_of_runs_from_host(
        _num_runs(statics),
        (x, y, keys, setup.targets_by_run),
        loop.chunks,
        lambda run, part: _start_program(part, eps, run, **statics),
        lambda run, part, carry, first, length: _chunk_program(
            logits_fn,
            part,
            eps,
            alpha_max,
            eta,
            beta,
            run,
            carry,
            first,
            length=length,
            unroll=loop.unroll,
            **statics,
        ),
        lambda rows, part, carry, best: _end_program(
            logits_fn, eps, rows, part, carry, best, **statics
        ),
    )
    return _finish_program(x, eps, setup, best, norm=statics["norm"])


def _run_fab(logits_fn, x, y, eps, alpha_max, eta, beta, keys, *, unroll, parallel_runs, **statics):
    """Host-driven on XLA:CPU outside jit (`host_loop`), else one program."""
    logits_fn = as_pytree_fn(logits_fn)
    loop = None
    if unroll is None and parallel_chunk(parallel_runs, _num_runs(statics)) == 1:
        loop = host_loop(
            statics["steps"], logits_fn, x, inputs=(y, eps, alpha_max, eta, beta, keys)
        )
    args = (logits_fn, x, y, eps, alpha_max, eta, beta, keys)
    if loop is None:
        return _fab(*args, unroll=unroll, parallel_runs=parallel_runs, **statics)
    return _fab_from_host(*args, loop, **statics)


def fab(
    logits_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    *,
    eps: Any,
    norm: str = "linf",
    steps: int = 100,
    targeted: bool = True,
    num_target_classes: int = 9,
    restarts: int = 1,
    key: jax.Array | None = None,
    alpha_max: Any = 0.1,
    eta: Any = 1.05,
    beta: Any = 0.9,
    unroll: bool | int | None = None,
    parallel_runs: bool | int | None = None,
    eps_rule: str = "minimal_norm",
    validate: bool = True,
) -> jax.Array:
    """FAB / FAB-T (Croce & Hein, ICML 2020) as an eps-bounded attack, L-inf or L2.

    Defaults: AutoAttack's standard FAB-T (100 iterations, 9 targets, one run each,
    alpha_max 0.1, eta 1.05, beta 0.9).

    Args:
      logits_fn: `(N, H, W, C) images -> (N, K) logits`.
      x: (N, H, W, C) float images in [0, 1].
      y: (N,) int TRUE labels, also with `targeted=True`: FAB-T chooses its own targets,
        the `num_target_classes` classes ranked 2nd, 3rd, ... by the clean logits.
      eps: radius of the `norm` ball (traced); also sets the restarts' start distance eps / 2.
      norm: "linf" or "l2".
      steps: iterations per run (static).
      targeted: FAB-T (one boundary per target; one gradient per step) instead of FAB
        (closest of all boundaries; the full Jacobian, K gradients per step).
      num_target_classes: targets tried in order, at most K - 1 (FAB-T only).
      restarts: runs per target; all but the first start at a random point.
      key: `jax.random` key (or (N,) keys) for the random starts; needed when restarts > 1.
      alpha_max, eta, beta: the paper's maximal bias towards x, overshoot and backward step.
      unroll: loop unrolling, see `attack_loop`. None: on XLA:CPU outside jit the loop is
        driven from the host (`host_loop`: 10-iteration programs); an explicit value
        keeps one compiled loop.
      parallel_runs: targets x restarts batched at once: None/False one at a time (memory
        bounded by the batch), True all, k k at a time; see `best_of_runs`.
      eps_rule: when an example counts as broken: "minimal_norm" (fra31/auto-attack's rule:
        the smallest adversarial point found lies within eps) or "project" (that point,
        projected onto the eps-ball, is still misclassified; stronger than the reference).
      validate: check input values (outside jit).

    Returns:
      (N, H, W, C) x_adv, same dtype as x, inside the eps-ball and [0, 1]: the smallest
      adversarial point of the first successful run (projected into the ball under
      `eps_rule="project"`), else x (also where x is already misclassified).
    """
    num_classes = num_classes_of(logits_fn, x)
    check_attack_inputs(
        x, y, eps=eps, norm=norm, steps=steps, num_classes=num_classes, validate=validate
    )
    check_count(restarts=restarts, num_target_classes=num_target_classes)
    check_nonnegative(validate, alpha_max=alpha_max, eta=eta, beta=beta)
    if eps_rule not in ("minimal_norm", "project"):
        raise ValueError(f"eps_rule must be 'minimal_norm' or 'project', got {eps_rule!r}.")
    if targeted and num_target_classes > num_classes - 1:
        raise ValueError(
            f"num_target_classes={num_target_classes} exceeds the {num_classes - 1} classes "
            "other than the top one."
        )
    if restarts > 1:
        keys = example_keys(require_key(key, "FAB with restarts > 1"), x.shape[0])
    else:
        keys = example_keys(jax.random.key(0) if key is None else key, x.shape[0])
    # Strongly typed float32 scalars: a Python float and an array give the same trace.
    eps, alpha_max, eta, beta = (
        jnp.asarray(eps, jnp.float32),
        jnp.asarray(alpha_max, jnp.float32),
        jnp.asarray(eta, jnp.float32),
        jnp.asarray(beta, jnp.float32),
    )
    return _run_fab(
        logits_fn,
        x,
        y,
        eps,
        alpha_max,
        eta,
        beta,
        keys,
        norm=norm,
        steps=steps,
        targeted=targeted,
        num_target_classes=num_target_classes if targeted else 0,
        restarts=restarts,
        unroll=unroll,
        parallel_runs=parallel_runs,
        eps_rule=eps_rule,
    )


__all__ = ["fab", "project_to_hyperplane"]
