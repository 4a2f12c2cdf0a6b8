"""Gradient attacks in a norm ball: FGSM, PGD/BIM, MI-FGSM and TI-DIM.

All four share one iterative core (`_ascend`): compute the input gradient of a per-example
objective, optionally transform it (TI smoothing), optionally accumulate L1-normalised
momentum (MI), take a steepest-ascent step of `step_size` in the norm's unit direction, and
project back onto the eps-ball and the [0, 1] box. They differ only in their options.

The objective is maximised: the loss for untargeted attacks, its negative (towards `y`)
for targeted ones. Losses: "ce" (softmax cross-entropy) and "margin" (Carlini-Wagner's
`max_{j != y} z_j - z_y`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from capjax.attacks._common import (
    HOST_LOOP_CHUNK,
    LogitsFn,
    RunResult,
    as_pytree_fn,
    attack_loop,
    attack_objective,
    check_attack_inputs,
    check_nonnegative,
    host_chunks,
    host_loop,
    input_gradient,
    input_gradient_with_aux,
    is_adversarial,
    keep_better,
    normalize_direction,
    num_classes_of,
    padded_rows,
    project,
    random_init,
    require_key,
    run_chunk,
    take_rows,
)

LOSSES = ("ce", "margin")


def _objective(logits_fn: LogitsFn, y: jax.Array, loss: str, targeted: bool):
    """x_adv -> ((N,) value to maximise, logits)."""
    value = attack_objective(loss, targeted)

    def objective(x_adv):
        logits = logits_fn(x_adv)
        return value(logits, y), logits

    return objective


def _validate(logits_fn, x, y, *, eps, norm, steps, loss, validate, **nonnegative) -> None:
    # Shapes and dtypes first: num_classes_of traces the model on x's shape.
    check_attack_inputs(x, y, validate=False)
    check_attack_inputs(
        x,
        y,
        eps=eps,
        norm=norm,
        steps=steps,
        num_classes=num_classes_of(logits_fn, x),
        loss=loss,
        losses=LOSSES,
        validate=validate,
    )
    check_nonnegative(validate, **nonnegative)


def _ascent_step(x_adv, direction, x, eps, step_size, norm: str) -> jax.Array:
    """One projected steepest-ascent step along `direction` (any scale)."""
    unit = normalize_direction(direction, norm)
    step = jnp.asarray(step_size, unit.dtype) * unit
    return project(x_adv + step.astype(x_adv.dtype), x, eps, norm)


def _ascend(
    objective,
    x: jax.Array,
    x_start: jax.Array,
    y: jax.Array,
    *,
    eps: Any,
    step_size: Any,
    steps: int,
    norm: str,
    targeted: bool,
    decay: Any = None,
    smooth: Callable[[jax.Array], jax.Array] | None = None,
    diversify: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    key: jax.Array | None = None,
    unroll: bool | int | None = None,
    best_iterate: bool = True,
) -> RunResult | jax.Array:
    """The iterative core shared by PGD, MI-FGSM and TI-DIM.

    With `best_iterate` and without `diversify` the gradient's forward pass also scores the
    current iterate, so the best iterate (`keep_better`: misclassified first, then the highest
    objective) is tracked for free and returned; one extra forward scores the last one.
    Otherwise the last iterate is returned (an array): with `diversify` (input diversity) the
    forward pass sees a transformed image, and the TI/DI papers return the last iterate too.

    Args:
      decay: None for plain PGD; else the momentum decay mu of MI-FGSM, the gradient being
        divided by its per-example mean absolute value (L1 norm up to a constant, which the
        unit-direction step makes irrelevant) before accumulation.
      smooth: gradient transform applied before the momentum (TI's Gaussian smoothing).
      diversify: (x_adv, key) -> transformed x_adv fed to the model (DI), keyed per step.
    """
    track = best_iterate and diversify is None
    body = _ascent_body(
        objective,
        x,
        y,
        eps=eps,
        step_size=step_size,
        norm=norm,
        targeted=targeted,
        track=track,
        decay=decay,
        smooth=smooth,
        diversify=diversify,
        key=key,
    )
    n = x.shape[0]
    best = RunResult(x_start, jnp.zeros((n,), bool), jnp.full((n,), -jnp.inf, jnp.float32))
    momentum = jnp.zeros(x.shape, jnp.float32) if decay is not None else jnp.zeros(())
    x_adv, _, best = attack_loop(steps, body, (x_start, momentum, best), unroll)
    return keep_better(best, _score(objective, x_adv, y, targeted)) if track else x_adv


def _ascent_body(
    objective,
    x: jax.Array,
    y: jax.Array,
    *,
    eps: Any,
    step_size: Any,
    norm: str,
    targeted: bool,
    track: bool,
    decay: Any = None,
    smooth: Callable[[jax.Array], jax.Array] | None = None,
    diversify: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    key: jax.Array | None = None,
):
    """`_ascend`'s loop body: (i, (x_adv, momentum, best)) -> the next carry."""

    def body(i, carry):
        x_adv, momentum, best = carry
        if track:
            values, logits, grad = input_gradient_with_aux(objective, x_adv)
            best = keep_better(best, RunResult(x_adv, is_adversarial(logits, y, targeted), values))
        elif diversify is None:
            _, grad = input_gradient(lambda z: objective(z)[0], x_adv)
        else:
            step_key = jax.random.fold_in(key, i)
            _, grad = input_gradient(lambda z: objective(diversify(z, step_key))[0], x_adv)
        grad = grad.astype(jnp.float32)
        if smooth is not None:
            grad = smooth(grad)
        if decay is not None:
            l1 = jnp.mean(jnp.abs(grad), axis=tuple(range(1, grad.ndim)), keepdims=True)
            grad = jnp.asarray(decay, jnp.float32) * momentum + grad / jnp.maximum(l1, 1e-12)
            momentum = grad
        return _ascent_step(x_adv, grad, x, eps, step_size, norm), momentum, best

    return body


def _score(objective, x_adv: jax.Array, y: jax.Array, targeted: bool) -> RunResult:
    """`x_adv` with its per-example success and objective (one forward pass)."""
    values, logits = objective(x_adv)
    return RunResult(x_adv, is_adversarial(logits, y, targeted), values)


# PGD with `early_stop`, driven from the host (`host_loop`): programs of a few steps on the
# examples still unbroken, each compiled once per (padded) batch size and reused.
@functools.partial(jax.jit, static_argnames=("norm", "loss", "targeted", "length", "unroll"))
def _pgd_chunk_program(
    logits_fn, x, y, eps, step_size, x_adv, best, *, norm, loss, targeted, length, unroll
):
    objective = _objective(logits_fn, y, loss, targeted)
    body = _ascent_body(
        objective, x, y, eps=eps, step_size=step_size, norm=norm, targeted=targeted, track=True
    )
    x_adv, _, best = run_chunk(body, (x_adv, jnp.zeros(()), best), 0, length, unroll)
    return x_adv, best


@functools.partial(jax.jit, static_argnames=("loss", "targeted"))
def _score_last_program(logits_fn, x_adv, y, best, *, loss, targeted) -> RunResult:
    return keep_better(best, _score(_objective(logits_fn, y, loss, targeted), x_adv, y, targeted))


def _set_rows(full: Any, rows: np.ndarray | None, part: Any) -> Any:
    """`full` with `part` (the leaves at `rows`; None: all of them) written back."""
    if rows is None:
        return part
    return jax.tree.map(lambda a, b: a.at[rows].set(b), full, part)


def _pgd_stopping_early(
    logits_fn, x, y, starts, loop, *, eps, step_size, norm, loss, targeted
) -> jax.Array:
    """PGD's runs (one per callable in `starts`, each returning its x_start) with their steps driven
    from the host in chunks of `loop`, each chunk on the examples no step has broken yet.

    Every example's steps depend only on its own row, so an unbroken example follows the
    trajectory it follows in `_ascend`; a broken one stops at the end of the chunk that broke
    it, keeping its best iterate so far."""
    n = x.shape[0]
    best = RunResult(x, jnp.zeros((n,), bool), jnp.full((n,), -jnp.inf, jnp.float32))
    for start in starts:
        x_adv = start()
        for _, length in loop.chunks:
            left = np.flatnonzero(~np.asarray(best.success)).astype(np.int32)
            if left.size == 0:
                break
            rows = None if left.size == n else padded_rows(left, n)
            part = (x, y, x_adv, best) if rows is None else take_rows((x, y, x_adv, best), rows)
            new = _pgd_chunk_program(
                logits_fn,
                *part[:2],
                eps,
                step_size,
                *part[2:],
                norm=norm,
                loss=loss,
                targeted=targeted,
                length=length,
                unroll=loop.unroll,
            )
            # Wait for the program before the eager scatter (as AutoAttack's gather does: two
            # XLA:CPU devices once deadlocked on eager ops dispatched behind a running one).
            x_adv, best = _set_rows((x_adv, best), rows, jax.block_until_ready(new))
        best = _score_last_program(logits_fn, x_adv, y, best, loss=loss, targeted=targeted)
    return best.x_adv


def _early_stop_loop(logits_fn, x, steps: int, inputs: Any):
    """The host-driven chunks of PGD's `early_stop`, or None where it does not apply (under
    jit, or off XLA:CPU). A model whose whole loop `host_loop` keeps as one rolled program
    (a windowed max) is still cut into `HOST_LOOP_CHUNK`-step programs, rolled."""
    loop = host_loop(steps, logits_fn, x, inputs=inputs)
    if loop is None or len(loop.chunks) > 1 or steps <= HOST_LOOP_CHUNK:
        return loop
    return loop._replace(chunks=host_chunks(steps))


def fgsm(
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    *,
    eps: Any,
    norm: str = "linf",
    loss: str = "ce",
    targeted: bool = False,
    validate: bool = True,
) -> jax.Array:
    """Fast gradient sign method (Goodfellow et al., 2015); fast gradient method for L2.

    One step of size eps along sign(grad) (L-inf) or grad / |grad|_2 (L2), then projection.

    Args:
      logits_fn: (N, H, W, C) images -> (N, num_classes) logits.
      x: (N, H, W, C) float images in [0, 1].
      y: (N,) int labels, or target classes when `targeted`.
      eps: budget on the [0, 1] scale (may be traced).
      norm: "linf" or "l2".
      loss: "ce" or "margin".
      targeted: step towards `y` instead of away from it.
      validate: check values (outside jit); shapes and names are always checked.

    Returns:
      x_adv: like x, with |x_adv - x|_norm <= eps and 0 <= x_adv <= 1.

    Example:
      >>> x_adv = fgsm(logits_fn, x, y, eps=8 / 255)
    """
    _validate(logits_fn, x, y, eps=eps, norm=norm, steps=None, loss=loss, validate=validate)
    objective = _objective(logits_fn, y, loss, targeted)
    _, grad = input_gradient(lambda z: objective(z)[0], x)
    return _ascent_step(x, grad.astype(jnp.float32), x, eps, eps, norm)


def pgd(
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    *,
    eps: Any,
    step_size: Any,
    steps: int,
    norm: str = "linf",
    loss: str = "ce",
    targeted: bool = False,
    random_start: bool = True,
    restarts: int = 1,
    key: jax.Array | None = None,
    unroll: bool | int | None = None,
    best_iterate: bool = True,
    early_stop: bool = False,
    validate: bool = True,
) -> jax.Array:
    """Projected gradient descent (Madry et al., 2018); BIM (Kurakin et al., 2017) when
    `random_start=False`.

    Each step moves `step_size` along sign(grad) (L-inf) or grad / |grad|_2 (L2) and projects.
    Like AutoAttack's APGD, it returns per example the best iterate it visited (misclassified
    first, then highest loss), not merely the last: robust accuracy therefore never rises with
    `steps`. Restarts (each from its own random start, key `fold_in(key, r)`) keep the per-example
    worst case the same way: an example counts as broken if any restart broke it.

    `best_iterate=False` returns the last iterate instead, as Madry et al.'s code, torchattacks
    and foolbox do, and saves the forward pass that scores it (the gradients' forward passes
    score the other iterates; `python -m capjax.bench compare` measures the saving). With
    restarts, each run's last iterate is
    scored and the better one kept per example.

    Args:
      logits_fn: (N, H, W, C) images -> (N, num_classes) logits.
      x: (N, H, W, C) float images in [0, 1].
      y: (N,) int labels, or target classes when `targeted`.
      eps: budget on the [0, 1] scale (may be traced; changing it does not recompile).
      step_size: step length (may be traced); 2.5 * eps / steps is Madry et al.'s rule.
      steps: number of gradient steps (static).
      norm: "linf" or "l2".
      loss: "ce" or "margin" (CW-style, Carlini & Wagner 2017).
      targeted: move towards the classes `y`.
      random_start: start from a uniform point of the ball (needs `key`).
      restarts: number of runs, >= 1 (more than one needs `random_start`).
      key: `jax.random.key`, required when `random_start`.
      unroll: loop unrolling (see `attack_loop`); None is full unrolling on CPU only.
      best_iterate: return the best iterate visited (True) or the last one (False).
      early_stop: stop attacking an example once an iterate is misclassified (needs
        `best_iterate`). It acts where the loop can be driven from the host: called outside
        jit on XLA:CPU, the steps run as `HOST_LOOP_CHUNK`-step programs, each on the examples
        still unbroken (and restarts only on those). Which examples end up misclassified is
        what it is without, as are the points of the others; a broken example's point is its
        best iterate up to the chunk that broke it, not over all steps. So it keeps the
        verdict of a model's own attack (end to end, BPDA), not that of a point passed on to
        another model (attack f, then purify). Elsewhere (under jit, GPU, TPU) it changes
        nothing.
      validate: check values (outside jit); shapes and names are always checked.

    Returns:
      x_adv: like x, with |x_adv - x|_norm <= eps and 0 <= x_adv <= 1.

    Example:
      >>> x_adv = pgd(logits_fn, x, y, eps=8 / 255, step_size=2 / 255, steps=10,
      ...             key=jax.random.key(0))
    """
    _validate(
        logits_fn,
        x,
        y,
        eps=eps,
        norm=norm,
        steps=steps,
        loss=loss,
        validate=validate,
        step_size=step_size,
    )
    if not isinstance(restarts, (int, np.integer)) or restarts < 1:
        raise ValueError(f"restarts must be a Python int >= 1, got {restarts!r}.")
    if restarts > 1 and not random_start:
        raise ValueError("restarts > 1 repeats the same run without random_start=True.")
    if random_start:
        key = require_key(key, "PGD with random_start=True")
    if early_stop and not best_iterate:
        raise ValueError("early_stop keeps each example's best iterate; pass best_iterate=True.")
    if early_stop and unroll is None and jnp.ndim(eps) == 0 and jnp.ndim(step_size) == 0:
        logits_fn = as_pytree_fn(logits_fn)
        loop = _early_stop_loop(logits_fn, x, steps, inputs=(y, eps, step_size, key))
        if loop is not None:
            starts = [
                functools.partial(random_init, jax.random.fold_in(key, r), x, eps, norm)
                if random_start
                else (lambda: x)
                for r in range(restarts)
            ]
            return _pgd_stopping_early(
                logits_fn,
                x,
                y,
                starts,
                loop,
                eps=eps,
                step_size=step_size,
                norm=norm,
                loss=loss,
                targeted=targeted,
            )
    objective = _objective(logits_fn, y, loss, targeted)

    def run(r):
        start = random_init(jax.random.fold_in(key, r), x, eps, norm) if random_start else x
        return _ascend(
            objective,
            x,
            start,
            y,
            eps=eps,
            step_size=step_size,
            steps=steps,
            norm=norm,
            targeted=targeted,
            unroll=unroll,
            best_iterate=best_iterate,
        )

    if restarts == 1:
        out = run(0)
        return out.x_adv if best_iterate else out

    def scored_run(r) -> RunResult:
        out = run(r)
        return out if best_iterate else _score(objective, out, y, targeted)

    best = attack_loop(
        restarts - 1, lambda r, best: keep_better(best, scored_run(r + 1)), scored_run(0), unroll
    )
    return best.x_adv


def mifgsm(
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    *,
    eps: Any,
    steps: int = 10,
    step_size: Any = None,
    decay: Any = 1.0,
    norm: str = "linf",
    loss: str = "ce",
    targeted: bool = False,
    random_start: bool = False,
    key: jax.Array | None = None,
    unroll: bool | int | None = None,
    best_iterate: bool = True,
    validate: bool = True,
) -> jax.Array:
    """Momentum iterative FGSM (Dong et al., 2018, "Boosting adversarial attacks with momentum").

    g_{t+1} = decay * g_t + grad / |grad|_1 and x_{t+1} = proj(x_t + step_size * sign(g_{t+1})).
    Defaults from the paper: decay 1.0, 10 steps, step_size = eps / steps, no random start.
    Returns the best iterate per example, as `pgd` does (the last with `best_iterate=False`,
    as in the paper).

    | setting | steps | step size | decay | returns |
    |---|---|---|---|---|
    | capjax (the paper's) | 10 | eps / steps | 1.0 | best iterate |
    | torchattacks.MIFGSM 3.5 | 10 | 2/255 | 1.0 | last iterate |

    Args:
      logits_fn, x, y, eps, norm, loss, targeted, key, unroll, best_iterate, validate: as in
        `pgd`.
      steps: number of iterations (static).
      step_size: step length; None means eps / steps.
      decay: momentum decay factor mu (may be traced); 0 gives BIM.
      random_start: start from a random point of the ball (needs `key`).

    Returns:
      x_adv: like x, with |x_adv - x|_norm <= eps and 0 <= x_adv <= 1.

    Example:
      >>> x_adv = mifgsm(logits_fn, x, y, eps=8 / 255, steps=10, decay=1.0)
    """
    _validate(
        logits_fn,
        x,
        y,
        eps=eps,
        norm=norm,
        steps=steps,
        loss=loss,
        validate=validate,
        step_size=step_size,
        decay=decay,
    )
    start = random_init(require_key(key, "random_start"), x, eps, norm) if random_start else x
    if step_size is None:
        step_size = jnp.asarray(eps, jnp.float32) / max(steps, 1)
    out = _ascend(
        _objective(logits_fn, y, loss, targeted),
        x,
        start,
        y,
        eps=eps,
        step_size=step_size,
        steps=steps,
        norm=norm,
        targeted=targeted,
        decay=decay,
        unroll=unroll,
        best_iterate=best_iterate,
    )
    return out.x_adv if best_iterate else out


def gaussian_kernel(size: int, nsig: Any) -> jax.Array:
    """(size,) normalised 1-D Gaussian spanning +-nsig standard deviations; its outer product
    with itself is the TI authors' `gkern(kernlen, nsig)`, whose standard deviation is
    (size - 1) / (2 nsig) pixels."""
    t = jnp.linspace(-1.0, 1.0, size) * jnp.asarray(nsig, jnp.float32)
    k = jnp.exp(-0.5 * t**2)
    return k / jnp.sum(k)


def _band_matrix(kernel: jax.Array, n: int) -> jax.Array:
    """(n, n) matrix M with (M @ v) = 'SAME' zero-padded correlation of v with `kernel`."""
    radius = (kernel.shape[0] - 1) // 2
    offset = jnp.arange(n)[None, :] - jnp.arange(n)[:, None] + radius
    inside = (offset >= 0) & (offset < kernel.shape[0])
    return jnp.where(inside, kernel[jnp.clip(offset, 0, kernel.shape[0] - 1)], 0.0)


def smooth_gradient(grad: jax.Array, kernel: jax.Array) -> jax.Array:
    """Per-channel 'SAME' (zero-padded) convolution of an NHWC gradient with the separable
    kernel outer(kernel, kernel) (TI's smoothing), as two small matrix products, which XLA:CPU
    runs far faster than a 15x15 depthwise convolution (docs/benchmarks.md)."""
    rows = _band_matrix(kernel, grad.shape[1]).astype(grad.dtype)
    cols = _band_matrix(kernel, grad.shape[2]).astype(grad.dtype)
    return jnp.einsum("ih,nhwc,jw->nijc", rows, grad, cols)


def input_diversity(x: jax.Array, key: jax.Array, *, prob: Any, canvas: int) -> jax.Array:
    """DI's random resize-and-pad (Xie et al., 2019), with static shapes, per example.

    With probability `prob` an (H, W) image is resized to a random integer size s in
    [H, canvas), placed at a random offset on a zero canvas of size `canvas`, and the canvas
    resized back to (H, W); otherwise the image is unchanged. The two resizes are done as one
    bilinear resampling (`jax.image.scale_and_translate`, scale s / canvas), so the size and
    offset can be traced. The paper's ImageNet setting (299 -> [299, 330)) scaled to 32x32
    inputs is canvas 36.
    """
    n, h, w, _ = x.shape
    k_size, k_top, k_left, k_apply = jax.random.split(key, 4)
    size = jax.random.randint(k_size, (n,), h, canvas)  # square, as in DI
    top = jax.random.randint(k_top, (n,), 0, canvas - size + 1)
    left = jax.random.randint(k_left, (n,), 0, canvas - size + 1)
    scale = (size / canvas).astype(jnp.float32)
    shift = jnp.stack([top * h, left * w], axis=-1).astype(jnp.float32) / canvas

    def one(image, s, t):
        return jax.image.scale_and_translate(
            image, image.shape, (0, 1), jnp.stack([s, s]), t, method="linear", antialias=False
        )

    resized = jax.vmap(one)(x, scale, shift).astype(x.dtype)
    apply = jax.random.uniform(k_apply, (n, 1, 1, 1)) < prob
    return jnp.where(apply, resized, x)


def ti_dim(
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    *,
    eps: Any,
    key: jax.Array,
    steps: int = 10,
    step_size: Any = None,
    decay: Any = 1.0,
    diversity_prob: Any = 0.5,
    kernel_size: int = 15,
    kernel_nsig: Any = 3.0,
    canvas: int | None = None,
    norm: str = "linf",
    loss: str = "ce",
    targeted: bool = False,
    random_start: bool = False,
    unroll: bool | int | None = None,
    validate: bool = True,
) -> jax.Array:
    """TI-DIM: translation-invariant (Dong et al., 2019) momentum attack with input diversity
    (Xie et al., 2019).

    Each step takes the gradient at `input_diversity(x_adv)`, smooths it with a Gaussian
    kernel (which approximates averaging over translations), then follows MI-FGSM. Defaults
    are the CAFD authors' evaluation settings (decay 1, diversity probability 0.5, kernel 15
    with nsig 3, see docs/sources.md); 10 steps of eps / steps as in MI-FGSM. The last
    iterate is returned, as in the papers.

    | setting | steps | step size | decay | diversity | kernel, nsig |
    |---|---|---|---|---|---|
    | capjax defaults | 10 | eps / steps | 1.0 | 0.5 | 15, 3 |
    | the CAFD suite (`cafd_table1`: the authors' class defaults) | 40 | 0.01 | 1.0 | 0.5 | 15, 3 |
    | torchattacks.TIFGSM 3.5 | 10 | 2/255 | 0.0 | 0.5 (resize 0.9) | 15, 3 |

    Args:
      logits_fn, x, y, eps, norm, loss, targeted, unroll, validate: as in `pgd`.
      key: `jax.random.key` for the input diversity (and the random start).
      steps: number of iterations (static).
      step_size: step length; None means eps / steps.
      decay: momentum decay factor.
      diversity_prob: probability that an example is resized and padded at a step.
      kernel_size: side of the Gaussian kernel (static, odd); 1 disables TI.
      kernel_nsig: the kernel spans +-kernel_nsig standard deviations (the TI code's nsig).
      canvas: DI canvas side (static); None means ceil(H * 330 / 299), 36 for 32x32 images.
      random_start: start from a random point of the ball.

    Returns:
      x_adv: like x, with |x_adv - x|_norm <= eps and 0 <= x_adv <= 1.

    Example:
      >>> x_adv = ti_dim(logits_fn, x, y, eps=8 / 255, key=jax.random.key(0))
    """
    _validate(
        logits_fn,
        x,
        y,
        eps=eps,
        norm=norm,
        steps=steps,
        loss=loss,
        validate=validate,
        step_size=step_size,
        decay=decay,
        diversity_prob=diversity_prob,
    )
    key = require_key(key, "TI-DIM's input diversity")
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd int >= 1, got {kernel_size!r}.")
    if canvas is None:
        canvas = int(np.ceil(x.shape[1] * 330 / 299))
    if canvas <= x.shape[1] or x.shape[1] != x.shape[2]:
        raise ValueError(f"input diversity needs square images and canvas > H, got {canvas}.")
    k_start, k_steps = jax.random.split(key)
    start = random_init(k_start, x, eps, norm) if random_start else x
    if step_size is None:
        step_size = jnp.asarray(eps, jnp.float32) / max(steps, 1)
    kernel = gaussian_kernel(kernel_size, kernel_nsig)
    return _ascend(
        _objective(logits_fn, y, loss, targeted),
        x,
        start,
        y,
        eps=eps,
        step_size=step_size,
        steps=steps,
        norm=norm,
        targeted=targeted,
        decay=decay,
        smooth=lambda g: smooth_gradient(g, kernel),
        diversify=lambda z, k: input_diversity(z, k, prob=diversity_prob, canvas=canvas),
        key=k_steps,
        unroll=unroll,
    )
