"""Shared machinery of every attack: input validation, exact threat-model projection, loops.

Nothing here knows about a particular attack. Every public attack calls `check_attack_inputs`
on entry (outside of jit it checks values too; under jit only shapes and dtypes), runs its
iterations through `attack_loop`, and ends with `project` so that the returned `x_adv`
satisfies `|x_adv - x|_p <= eps` and `0 <= x_adv <= 1` exactly, as measured in `x.dtype`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# The model, as every attack takes it: (N, H, W, C) float images in [0, 1] -> (N, K) logits.
LogitsFn = Callable[[jax.Array], jax.Array]

NORMS = ("linf", "l2")
# Images may stray this far outside [0, 1] through float round-off before we complain.
RANGE_TOLERANCE = 1e-6
# L2 projections aim this fraction inside the ball so that the float32 norm of the result,
# however it is summed, never exceeds eps.
L2_SAFETY = 1e-5


def is_traced(value: Any) -> bool:
    """True when `value` is an abstract tracer (inside jit/grad/vmap), i.e. has no value."""
    return isinstance(value, jax.core.Tracer)


def as_pytree_fn(fn: Callable) -> jax.tree_util.Partial:
    """The model callable as a pytree that a jitted attack takes as an ordinary argument.

    A `jax.tree_util.Partial` (such as `flax_logits_fn`'s) is passed as is: its bound arrays
    (the model's variables) become traced arguments, so a new Partial of the same function
    with other weights reuses the compiled program, and the weights are not baked into it as
    constants. Any other callable becomes a Partial with no arguments, keyed by the callable
    itself, as a static argument is: a new lambda each call compiles again.
    """
    return fn if isinstance(fn, jax.tree_util.Partial) else jax.tree_util.Partial(fn)


def check_attack_inputs(
    x: jax.Array,
    y: jax.Array | None = None,
    *,
    eps: Any = None,
    norm: str | None = None,
    steps: int | None = None,
    num_classes: int | None = None,
    loss: str | None = None,
    losses: tuple[str, ...] = (),
    validate: bool = True,
) -> None:
    """Validates the common arguments of an attack and raises `ValueError` with a hint.

    Shape, dtype and name checks always run. Checks on values (pixel range, NaN/Inf, label
    bounds, eps sign and scale) run when the values are concrete, i.e. outside `jax.jit`;
    under jit they are skipped, and `validate=False` skips them everywhere.

    Args:
      x: (N, H, W, C) floating images in [0, 1].
      y: (N,) integer labels (or targets), or None for attacks that use no labels.
      eps: perturbation budget on the [0, 1] scale (float or scalar array), or None.
      norm: "linf" or "l2", or None when the attack has no norm option.
      steps: number of iterations; must be a non-negative Python int (static).
      num_classes: when given, labels must lie in [0, num_classes).
      loss: the loss name the user asked for, checked against `losses`.
      losses: the loss names this attack supports.
      validate: set False to skip the value checks (they transfer arrays to the host).
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(f"x must be an array of images, got {type(x).__name__}.")
    if x.ndim != 4:
        raise ValueError(
            f"x must have shape (N, H, W, C) (NHWC images), got shape {tuple(x.shape)}."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"x must be a floating array in [0, 1], got dtype {x.dtype}; "
            "convert uint8 images with x.astype(jnp.float32) / 255."
        )
    if y is not None:
        if not hasattr(y, "shape") or y.ndim != 1 or y.shape[0] != x.shape[0]:
            shape = tuple(y.shape) if hasattr(y, "shape") else type(y).__name__
            raise ValueError(f"y must have shape (N,) = ({x.shape[0]},) to match x, got {shape}.")
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}.")
    if norm is not None and norm not in NORMS:
        raise ValueError(f"Unknown norm {norm!r}; choose one of {NORMS}.")
    if loss is not None and losses and loss not in losses:
        raise ValueError(f"Unknown loss {loss!r}; this attack supports {tuple(losses)}.")
    if steps is not None:
        if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool):
            raise ValueError(
                f"steps must be a Python int (it fixes the compiled loop), got {steps!r}."
            )
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}.")
    if not validate:
        return
    if eps is not None and not is_traced(eps):
        eps_value = float(np.asarray(eps))
        if not np.isfinite(eps_value) or eps_value < 0:
            raise ValueError(f"eps must be a finite number >= 0, got {eps_value}.")
        if norm == "linf" and eps_value > 1:
            raise ValueError(
                f"eps={eps_value} is above 1, but images are on the [0, 1] scale; "
                f"did you mean {eps_value:g}/255 = {eps_value / 255:.6f}?"
            )
    if not is_traced(x):
        x_host = np.asarray(x)
        if not np.all(np.isfinite(x_host)):
            raise ValueError("x contains NaN or Inf pixels.")
        lo, hi = float(x_host.min(initial=0.0)), float(x_host.max(initial=0.0))
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise ValueError(
                f"x must lie in [0, 1], got values in [{lo:g}, {hi:g}]; "
                "capjax images are float NHWC in [0, 1] (divide uint8 images by 255)."
            )
    if y is not None and num_classes is not None and not is_traced(y):
        y_host = np.asarray(y)
        if y_host.size and (y_host.min() < 0 or y_host.max() >= num_classes):
            raise ValueError(
                f"labels must lie in [0, {num_classes}), got values in "
                f"[{y_host.min()}, {y_host.max()}]."
            )


def linf_bounds(x: jax.Array, eps: Any) -> tuple[jax.Array, jax.Array]:
    """Per-pixel [lo, hi] of the L-inf ball intersected with the [0, 1] box, exact in x.dtype.

    `x + eps` can round up so that `(x + eps) - x > eps` in floating point; such bounds are
    stepped one ulp inwards so that `|x_adv - x| <= eps` holds exactly for any x_adv in them.
    """
    eps = jnp.asarray(eps, x.dtype)
    hi = x + eps
    hi = jnp.where(hi - x > eps, jnp.nextafter(hi, jnp.asarray(-jnp.inf, x.dtype)), hi)
    lo = x - eps
    lo = jnp.where(x - lo > eps, jnp.nextafter(lo, jnp.asarray(jnp.inf, x.dtype)), lo)
    return jnp.clip(lo, 0, 1), jnp.clip(hi, 0, 1)


def l2_norm(v: jax.Array) -> jax.Array:
    """Per-example L2 norm of a (N, ...) array, accumulated in float32 at least."""
    v = v.astype(jnp.promote_types(v.dtype, jnp.float32))
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(1, v.ndim))))


def _per_example(values: jax.Array, ndim: int) -> jax.Array:
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def project_l2(x_adv: jax.Array, x: jax.Array, eps: Any) -> jax.Array:
    """Projects x_adv onto {|x_adv - x|_2 <= eps} intersected with [0, 1], exactly.

    Scales the perturbation into the ball (a hair inside, `L2_SAFETY`), then clips to the
    box; clipping toward a box that contains x never lengthens the perturbation.
    """
    eps = jnp.asarray(eps, jnp.float32)
    delta = x_adv - x
    norm = l2_norm(delta)
    factor = jnp.minimum(1.0, eps * (1 - L2_SAFETY) / jnp.maximum(norm, 1e-12))
    delta = delta * _per_example(factor, x.ndim).astype(x.dtype)
    return jnp.clip(x + delta, 0, 1).astype(x.dtype)


def project(x_adv: jax.Array, x: jax.Array, eps: Any, norm: str) -> jax.Array:
    """Projects x_adv onto the `norm` ball of radius eps around x and the [0, 1] box.

    The result satisfies the threat model exactly when measured in x.dtype (L-inf) or in
    float32 or better (L2).

    Args:
      x_adv: (N, H, W, C) candidate images.
      x: (N, H, W, C) clean images in [0, 1].
      eps: scalar budget (may be traced).
      norm: "linf" or "l2".
    """
    if norm == "linf":
        lo, hi = linf_bounds(x, eps)
        return jnp.clip(x_adv.astype(x.dtype), lo, hi)
    if norm == "l2":
        return project_l2(x_adv.astype(x.dtype), x, eps)
    raise ValueError(f"Unknown norm {norm!r}; choose one of {NORMS}.")


def normalize_direction(g: jax.Array, norm: str) -> jax.Array:
    """The steepest-ascent direction of unit `norm` for gradient g: sign(g) or g / |g|_2."""
    if norm == "linf":
        return jnp.sign(g)
    return g / _per_example(jnp.maximum(l2_norm(g), 1e-12), g.ndim).astype(g.dtype)


def random_init(key: jax.Array, x: jax.Array, eps: Any, norm: str) -> jax.Array:
    """A uniformly random point of the `norm` ball of radius eps around x, inside [0, 1]."""
    eps = jnp.asarray(eps, x.dtype)
    if norm == "linf":
        delta = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
    else:
        k_dir, k_rad = jax.random.split(key)
        direction = jax.random.normal(k_dir, x.shape, x.dtype)
        direction = normalize_direction(direction, "l2")
        dim = int(np.prod(x.shape[1:]))
        radius = jax.random.uniform(k_rad, (x.shape[0],), x.dtype) ** (1.0 / dim) * eps
        delta = direction * _per_example(radius, x.ndim)
    return project(x + delta, x, eps, norm)


# Longest loop that `default_unroll` unrolls fully on XLA:CPU; past it compile time and
# memory grow too much (a fully unrolled 100-step attack's compile time: docs/benchmarks.md).
CPU_FULL_UNROLL_MAX_STEPS = 40
# Iterations per loop trip for longer loops on XLA:CPU.
CPU_PARTIAL_UNROLL = 10
# Largest unrolled program (steps x equations of one traced loop body) that `default_unroll`
# unrolls fully on XLA:CPU: compile time grows faster than the program (docs/benchmarks.md).
CPU_FULL_UNROLL_MAX_EQUATIONS = 100_000
# Primitives of a windowed max's gradient (`nn.max_pool`, `lax.reduce_window` with max):
# XLA:CPU keeps their buffers for every unrolled iteration, so `default_unroll` keeps loops
# with them rolled; through `attacks.tiled_max_pool` the same model has none of them and
# unrolls (docs/benchmarks.md).
WINDOWED_MAX_GRADIENTS = ("select_and_scatter_add", "select_and_gather_add")


def sub_jaxprs(eqn: Any) -> list[Any]:
    """The jaxprs nested in one equation's parameters (pjit, custom_vjp, cond branches, ...)."""
    found = []
    for value in eqn.params.values():
        for sub in value if isinstance(value, (list, tuple)) else (value,):
            inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
            if hasattr(inner, "eqns"):
                found.append(inner)
    return found


def count_equations(jaxpr: Any) -> int:
    """Equations in a jaxpr, counting those of nested jaxprs (pjit, custom_vjp, cond, ...)."""
    return sum(1 + sum(count_equations(j) for j in sub_jaxprs(eqn)) for eqn in jaxpr.eqns)


def primitive_names(jaxpr: Any) -> set[str]:
    """Names of the primitives of a jaxpr, those of nested jaxprs included."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for inner in sub_jaxprs(eqn):
            names |= primitive_names(inner)
    return names


def default_unroll(
    steps: int,
    full_max: int | None = None,
    body: Callable[[int, Any], Any] | None = None,
    init: Any = None,
) -> int:
    """Iterations per `fori_loop` trip: all of them on XLA:CPU for short, small loops, else
    fewer; 1 on other backends.

    `full_max`: the longest loop unrolled fully on XLA:CPU (default
    `CPU_FULL_UNROLL_MAX_STEPS`; longer loops take `CPU_PARTIAL_UNROLL` per trip); an attack
    whose body compiles quickly may raise it. `body`, `init`: the loop's body and carry; when
    given, the body is traced and
    - a loop whose unrolled program would exceed `CPU_FULL_UNROLL_MAX_EQUATIONS` (a model
      behind a large purifier) keeps `CPU_PARTIAL_UNROLL` iterations per trip, since its
      compile time would dwarf the run;
    - a body that differentiates a windowed max (`WINDOWED_MAX_GRADIENTS`: a model with
      `nn.max_pool`) keeps the loop rolled, as XLA:CPU would keep those buffers for every
      unrolled iteration; `attacks.tiled_max_pool` removes them, and the loop unrolls.

    Other bodies keep about one iteration's buffers however far they unroll.

    Convolution gradients inside XLA:CPU while loops are several times slower; GPUs and TPUs
    do not have this cliff, so they keep the rolled loop (fast compiles). A max-pool CNN
    shows no cliff, but fully unrolled it keeps every iteration's buffers. The measurements
    behind these rules are in docs/benchmarks.md.
    """
    if jax.default_backend() != "cpu":
        return 1
    full_max = CPU_FULL_UNROLL_MAX_STEPS if full_max is None else full_max
    unroll = steps if steps <= full_max else CPU_PARTIAL_UNROLL
    if body is None or unroll <= 1:
        return unroll
    jaxpr = jax.make_jaxpr(body)(0, init).jaxpr
    if unroll == steps > CPU_PARTIAL_UNROLL:
        if steps * count_equations(jaxpr) > CPU_FULL_UNROLL_MAX_EQUATIONS:
            unroll = CPU_PARTIAL_UNROLL
    if primitive_names(jaxpr) & set(WINDOWED_MAX_GRADIENTS):
        unroll = 1
    return unroll


def attack_loop(
    steps: int,
    body: Callable[[int, Any], Any],
    init: Any,
    unroll: bool | int | None = None,
) -> Any:
    """`jax.lax.fori_loop(0, steps, body, init)` with capjax's unrolling policy.

    Args:
      steps: static number of iterations.
      body: (i, carry) -> carry.
      init: the initial carry.
      unroll: True (unroll fully), an int k (k iterations per loop trip), or None for
        `default_unroll(steps)`.
    """
    if steps == 0:
        return init
    if unroll is None:
        unroll = default_unroll(steps, body=body, init=init)
    if unroll is True:
        unroll = steps
    return jax.lax.fori_loop(0, steps, body, init, unroll=max(1, min(int(unroll), steps)))


# Iterations per program when an attack drives its loop from the host (`host_loop`).
HOST_LOOP_CHUNK = 10


@functools.partial(jax.jit, static_argnames="randomized")
def _summed_logits_gradient(logits_fn: Callable, x: jax.Array, randomized: bool) -> jax.Array:
    call = (lambda z: logits_fn(z, jax.random.key(0))) if randomized else logits_fn
    return jax.grad(lambda z: jnp.sum(call(z).astype(jnp.float32)))(x)


class HostLoop(NamedTuple):
    """How an attack called outside jit runs its loop from the host (`host_loop`)."""

    chunks: tuple[tuple[int, int], ...]  # (first iteration, length) per program call
    unroll: int  # iterations per loop trip inside one call's program


def host_loop(
    steps: int,
    logits_fn: jax.tree_util.Partial,
    x: jax.Array,
    randomized: bool = False,
    inputs: Any = (),
) -> HostLoop | None:
    """How an attack called outside jit on XLA:CPU runs its `steps` iterations from the host,
    or None for one compiled loop (`attack_loop`): under jit (no host to drive it), on other
    backends (one program dispatches faster there), or when steps is 0. Under jit means any
    of `logits_fn`'s bound arrays, `x` or the other `inputs` (eps, keys, ...) is traced.

    XLA:CPU runs convolution gradients several times slower inside a while loop, at any
    unrolling short of full (jax-ml/jax#12868), and a fully unrolled loop compiles in time
    that grows faster than its length. Host calls of one short unrolled program
    (`HOST_LOOP_CHUNK` iterations, and the remainder) avoid both. A model whose input
    gradient differentiates a windowed max (`WINDOWED_MAX_GRADIENTS`: `nn.max_pool`) shows no
    such cliff, and each unrolled iteration would keep its buffers, so its whole loop is one
    rolled program per call. Either way the attack's runs (targets, restarts) are driven from
    the host (`best_of_runs_from_host`), each on the examples still unbroken, and a later call
    with the same shapes reuses the compiled programs (measurement in docs/benchmarks.md).
    """
    if jax.default_backend() != "cpu" or steps <= 0:
        return None
    if any(is_traced(a) for a in jax.tree.leaves((logits_fn, x, inputs))):
        return None
    # A traced program, cached per model and shape: a later call does not trace again.
    gradient = _summed_logits_gradient.trace(logits_fn, x, randomized=randomized).jaxpr.jaxpr
    if primitive_names(gradient) & set(WINDOWED_MAX_GRADIENTS):
        return HostLoop(((0, steps),), 1)
    return HostLoop(host_chunks(steps), HOST_LOOP_CHUNK)


def host_chunks(steps: int) -> tuple[tuple[int, int], ...]:
    """`steps` iterations as (first iteration, length) chunks of `HOST_LOOP_CHUNK`."""
    return tuple(
        (first, min(HOST_LOOP_CHUNK, steps - first)) for first in range(0, steps, HOST_LOOP_CHUNK)
    )


def run_chunk(body: Callable[[Any, Any], Any], state: Any, first: Any, length: int, unroll: int):
    """Iterations first .. first + length - 1 of `body(i, state)`, `unroll` per loop trip
    (inside a host-driven attack's program; see `host_loop`)."""
    if unroll >= length:
        for j in range(length):
            state = body(first + j, state)
        return state
    return attack_loop(length, lambda j, s: body(first + j, s), state, unroll)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy, computed in float32."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def margin(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example CW margin `max_{j != y} z_j - z_y` (positive once misclassified)."""
    logits = logits.astype(jnp.float32)
    true = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    others = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return jnp.max(others, axis=-1) - true


def dlr(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example difference-of-logits-ratio loss of Croce & Hein (2020), untargeted."""
    logits = logits.astype(jnp.float32)
    z_sorted = jnp.sort(logits, axis=-1)
    true = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    top_is_true = jnp.argmax(logits, axis=-1) == labels
    best_other = jnp.where(top_is_true, z_sorted[:, -2], z_sorted[:, -1])
    return -(true - best_other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


def input_gradient(
    objective: Callable[[jax.Array], jax.Array], x_adv: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(per-example objective, gradient of its sum) at x_adv: one forward and one backward."""

    def total(z):
        values = objective(z)
        return jnp.sum(values), values

    grad, values = jax.grad(total, has_aux=True)(x_adv)
    return values, grad


def num_classes_of(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> int:
    """The number of logits `logits_fn` returns for x, found without running it."""
    out = jax.eval_shape(logits_fn, x)
    if len(out.shape) != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"logits_fn must map (N, H, W, C) images to (N, num_classes) logits; for x of shape "
            f"{tuple(x.shape)} it returned shape {tuple(out.shape)}."
        )
    return int(out.shape[-1])


def require_key(key: jax.Array | None, why: str) -> jax.Array:
    """Returns key, or raises a ValueError explaining that `why` needs randomness."""
    if key is None:
        raise ValueError(f"{why} is random: pass key=jax.random.key(seed).")
    return key


def input_gradient_with_aux(
    objective: Callable[[jax.Array], tuple[jax.Array, Any]], x_adv: jax.Array
) -> tuple[jax.Array, Any, jax.Array]:
    """Like `input_gradient` for an objective returning (per-example values, aux), e.g. the
    logits, so that success can be read off the same forward pass: (values, aux, grad)."""

    def total(z):
        values, aux = objective(z)
        return jnp.sum(values), (values, aux)

    grad, (values, aux) = jax.grad(total, has_aux=True)(x_adv)
    return values, aux, grad


def is_adversarial(logits: jax.Array, labels: jax.Array, targeted: bool) -> jax.Array:
    """(N,) bool: the prediction differs from `labels`, or equals them when `targeted`."""
    hit = jnp.argmax(logits, axis=-1) == labels
    return hit if targeted else ~hit


def check_nonnegative(validate: bool = True, **values: Any) -> None:
    """Raises ValueError unless every concrete value is a finite number >= 0 (traced values
    and `validate=False` skip the check), e.g. `check_nonnegative(step_size=step_size)`."""
    if not validate:
        return
    for name, value in values.items():
        if value is None or is_traced(value):
            continue
        v = float(np.asarray(value))
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v}.")


def example_keys(key: jax.Array, n: int) -> jax.Array:
    """(n,) typed keys, one per example: `key` split n ways, or `key` itself if it holds n.

    An attack that draws each example's randomness from its own key gives every example the
    same result whatever else is in the batch, so it can be rerun on a subset (as AutoAttack
    does with the points still robust) and agree with the full-batch run. Raw uint32 keys
    (`jax.random.PRNGKey`) are accepted too.
    """
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    if key.shape == ():
        return jax.random.split(key, n)
    if key.shape == (n,):
        return key
    raise ValueError(
        f"key must be a single key or one key per example, shape ({n},); got shape {key.shape}."
    )


def dlr_targeted(
    logits: jax.Array, targets: jax.Array, labels: jax.Array | None = None
) -> jax.Array:
    """Per-example targeted DLR loss of Croce & Hein (2020), to be maximised.

    `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)` with z sorted decreasingly as z_pi. With
    `labels=None`, z_y is the largest logit other than the target's, so maximising it makes the
    target the prediction (the reference uses the true label, as APGD-T does).
    """
    logits = logits.astype(jnp.float32)
    z_sorted = jnp.sort(logits, axis=-1)
    target = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    if labels is None:
        is_target = jax.nn.one_hot(targets, logits.shape[-1], dtype=bool)
        other = jnp.max(jnp.where(is_target, -jnp.inf, logits), axis=-1)
    else:
        other = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    scale = z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + 1e-12
    return -(other - target) / scale


def attack_objective(loss: str, targeted: bool) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """`(logits, labels) -> per-example values to maximise` for a loss name.

    Untargeted: "ce" cross-entropy, "margin" CW margin, "dlr" DLR of the true label. Targeted
    (labels are the targets): their negatives, i.e. -CE and -margin of the target, and
    `dlr_targeted` against the strongest other class.
    """
    if loss == "dlr":
        return (lambda z, t: dlr_targeted(z, t)) if targeted else dlr
    base = {"ce": cross_entropy, "margin": margin}[loss]
    return (lambda z, t: -base(z, t)) if targeted else base


class RunResult(NamedTuple):
    """One run of an attack on a batch: its points, which succeeded, and a score (higher is
    better) used to rank failed points across runs."""

    x_adv: jax.Array  # (N, H, W, C)
    success: jax.Array  # (N,) bool
    score: jax.Array  # (N,) float32


def merge_runs(best: RunResult, new: RunResult) -> RunResult:
    """Per example: keep an earlier success; else take a success or a higher score from `new`."""
    take = ~best.success & (new.success | (new.score > best.score))
    pick = lambda a, b: jnp.where(_per_example(take, a.ndim), b, a)  # noqa: E731
    return RunResult(*(pick(a, b) for a, b in zip(best, new, strict=True)))


def keep_better(best: RunResult, new: RunResult) -> RunResult:
    """Per example: a success over a failure, else the higher score, whichever run it came
    from. Unlike `merge_runs`, a later success with a higher score replaces an earlier one:
    the gradient attacks' best iterate is the most adversarial point they met."""
    same = new.success == best.success
    better = (new.success & ~best.success) | (same & (new.score > best.score))
    pick = lambda a, b: jnp.where(_per_example(better, a.ndim), b, a)  # noqa: E731
    return RunResult(*(pick(a, b) for a, b in zip(best, new, strict=True)))


def parallel_chunk(parallel: bool | int | None, num_runs: int) -> int:
    """Runs per batch for `best_of_runs`: all (True), one (False or None), or k (an int).

    One at a time is the default so that an attack's peak memory grows with the batch and
    the model, not with its targets or restarts; running more at once is a little faster and
    multiplies the memory (issue #17; measurement in docs/benchmarks.md).
    """
    if parallel is None or parallel is False:
        return 1
    if parallel is True:
        return num_runs
    if not isinstance(parallel, (int, np.integer)) or parallel < 1:
        raise ValueError(f"parallel_runs must be a bool, None or an int >= 1, got {parallel!r}.")
    return min(int(parallel), num_runs)


def best_of_runs(
    run: Callable[[jax.Array, jax.Array], RunResult],
    num_runs: int,
    n: int,
    parallel: bool | int | None = None,
) -> RunResult:
    """Restarts (or targets) of an attack: per example, the first successful run, else the best.

    Args:
      run: `(run_ids, rows) -> RunResult` for the examples `rows` (M,) of the batch, each in
        run `run_ids` (M,); every example's result must depend only on its own row and run.
      num_runs: static number of runs.
      n: batch size.
      parallel: how many runs go in one batch (`parallel_chunk`): None or False (default)
        one at a time, memory bounded by the batch; True all at once (no loop: about 15%
        faster on XLA:CPU, memory times num_runs); an int k, k at a time. Runs (or chunks)
        after the first are skipped once every example succeeded. Every choice gives the
        same result.
    """
    rows = jnp.arange(n)
    k = parallel_chunk(parallel, num_runs)
    if num_runs == 1:
        return run(jnp.zeros(n, jnp.int32), rows)
    if k == 1:
        best = run(jnp.zeros(n, jnp.int32), rows)

        def body(r, best):
            new = lambda b: merge_runs(b, run(jnp.full(n, r, jnp.int32), rows))  # noqa: E731
            return jax.lax.cond(jnp.all(best.success), lambda b: b, new, best)

        return jax.lax.fori_loop(1, num_runs, body, best)

    def chunk_of(first: int, best: RunResult | None) -> RunResult:
        ids = list(range(first, min(first + k, num_runs)))
        stacked = run(jnp.repeat(jnp.asarray(ids, jnp.int32), n), jnp.tile(rows, len(ids)))
        for j in range(len(ids)):
            part = jax.tree.map(lambda a, j=j: a[j * n : (j + 1) * n], stacked)
            best = part if best is None else merge_runs(best, part)
        return best

    best = chunk_of(0, None)
    for first in range(k, num_runs, k):
        best = jax.lax.cond(
            jnp.all(best.success), lambda b: b, lambda b, f=first: chunk_of(f, b), best
        )
    return best


def padded_rows(rows: np.ndarray, n: int) -> np.ndarray:
    """`rows` (a non-empty index array) padded with copies of its first entry to the next
    power of two (at most n), so that gathered batches take few sizes, hence compilations."""
    size = min(n, 1 << max(rows.size - 1, 0).bit_length())
    return np.concatenate([rows, np.full(size - rows.size, rows[0], rows.dtype)])


def take_rows(data: Any, rows: np.ndarray) -> Any:
    """The leaves of `data` (arrays with a leading batch axis) at the host indices `rows`.
    A leaf sharded over several devices (`NamedSharding`, e.g. the batch split over CPU
    devices) keeps its sharding when the count divides them, so that the attack on the rows
    stays split over the devices instead of running whole on each."""

    def take(a):
        part = a[rows]
        sharding = getattr(a, "sharding", None)
        devices = len(sharding.device_set) if sharding is not None else 1
        if isinstance(sharding, jax.sharding.NamedSharding) and devices > 1:
            if rows.size % devices == 0:
                part = jax.device_put(part, sharding)
        return part

    return jax.tree.map(take, data)


def best_of_runs_from_host(
    num_runs: int,
    data: Any,
    chunks: tuple[tuple[int, int], ...],
    start: Callable[[np.int32, Any], Any],
    advance: Callable[[np.int32, Any, Any, np.int32, int], Any],
    end: Callable[[np.ndarray | None, Any, Any, RunResult | None], RunResult],
    gather: bool = True,
) -> RunResult:
    """`best_of_runs` (one run at a time) driven from the host, for attacks called outside
    jit on XLA:CPU (`host_loop`).

    `data`: the per-example arrays a run needs (leading axis n: images, labels, keys, ...).
    Each run attacks only the examples no earlier run broke (`take_rows` of `data` at the
    `padded_rows`), as the reference APGD-T and FAB-T do, and the runs stop once none is
    left. Per run r, on its `part` of `data`: `state = start(r, part)`, then
    `state = advance(r, part, state, first, length)` per chunk, then
    `best = end(rows, part, state, best)`, which merges the run into the (n,) best at
    `rows` (`merge_rows`; rows None: every example, in order). Each callable is a jitted
    program taking the run index as a traced argument, so one compilation per padded size
    serves every run. Every example's result depends only on its own row and run, so this
    gives what `best_of_runs` gives. `gather=False` attacks every example in every run (a
    randomized model, whose draws depend on the whole batch), still stopping once every
    example succeeded."""
    n = jax.tree.leaves(data)[0].shape[0]
    best, rows, part = None, None, data
    for run in range(num_runs):
        if best is not None:
            left = np.flatnonzero(~np.asarray(best.success)).astype(np.int32)
            if left.size == 0:
                break
            if gather:
                rows = padded_rows(left, n)
                part = take_rows(data, rows)
        run = np.int32(run)
        state = start(run, part)
        for first, length in chunks:
            state = advance(run, part, state, np.int32(first), length)
        best = end(rows, part, state, best)
    return best


def merge_rows(best: RunResult | None, rows: jax.Array | None, new: RunResult) -> RunResult:
    """`best` with `new` (the result of a run on `rows`; None: every example, in order)
    merged in at those rows (`merge_runs`); `new` itself when there is no best yet."""
    if best is None:
        return new
    if rows is None:
        return merge_runs(best, new)
    merged = merge_runs(jax.tree.map(lambda a: a[rows], best), new)
    return RunResult(*(a.at[rows].set(b) for a, b in zip(best, merged, strict=True)))


def check_count(minimum: int = 1, **values: Any) -> None:
    """Raises ValueError unless every value is a Python int >= minimum: static counts such as
    `restarts` or `num_samples`, which fix the compiled program, e.g. `check_count(restarts=1)`."""
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise ValueError(f"{name} must be a Python int (it is static), got {value!r}.")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}.")
