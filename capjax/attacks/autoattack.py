"""AutoAttack: the parameter-free ensemble of Croce & Hein (ICML 2020).

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 (arXiv:2003.01690), with the versions and parameters of
the authors' code (fra31/auto-attack, `AutoAttack.set_version`):

- "standard": APGD-CE (100 iterations, 1 run), APGD-T (targeted DLR, 9 targets, 100
  iterations), FAB-T (9 targets, 100 iterations), Square (5000 queries, p_init 0.8, schedule
  not rescaled). The evaluation of record for deterministic models.
- "plus": APGD-CE and APGD-DLR with 5 restarts, FAB with 5 restarts, Square, APGD-T, FAB-T.
- "rand": APGD-CE and APGD-DLR, 1 run each, every gradient averaged over 20 draws of the
  model's randomness (EOT). For randomized defenses, `logits_fn(x, key)` takes a key; the
  final verdict on each point uses one fresh draw, as the reference does.
- "custom": the components named in `attacks_to_run`, e.g. ("apgd-ce", "apgd-t").

The components run in sequence and each attacks only the points still robust; an example is
robust only if it survives them all, and its x_adv is the output of the first component that
broke it (x itself when none did, or when x is already misclassified).

Two ways to run, with the same per-example answer for deterministic models:
- gather (default outside jit): between components the still-robust examples are gathered
  on the host and only they are attacked (padded to a power-of-two count to bound
  recompilation), so later components cost what the reference's do; on XLA:CPU, APGD-T's and
  FAB-T's targets gather the same way between runs (`_common.best_of_runs_from_host`);
- full batch (under jit, or `gather_robust=False`): every component runs on the whole batch
  (static shapes) and only the still-robust examples take its result; a component is skipped
  when no example is left.
They agree because every component draws each example's randomness from that example's own
key (`example_keys`): component c uses `jax.random.fold_in(key, COMPONENTS.index(c))`, so it
gives exactly what a standalone call of the component with that key gives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from capjax.attacks._common import (
    check_attack_inputs,
    example_keys,
    is_traced,
    num_classes_of,
    padded_rows,
    require_key,
    take_rows,
)
from capjax.attacks.apgd import apgd, apgd_t
from capjax.attacks.fab import fab
from capjax.attacks.square import square

# Every component AutoAttack knows; the index fixes the key each one uses.
COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square", "apgd-dlr", "fab")

VERSIONS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}

# The reference parameters of each component, per version.
_STANDARD = {
    "apgd-ce": {"steps": 100, "restarts": 1},
    "apgd-dlr": {"steps": 100, "restarts": 1},
    "apgd-t": {"steps": 100, "restarts": 1, "num_target_classes": 9},
    "fab-t": {"steps": 100, "restarts": 1, "num_target_classes": 9},
    "fab": {"steps": 100, "restarts": 1},
    "square": {"steps": 5000, "p_init": 0.8, "restarts": 1, "rescale_schedule": False},
}
_PLUS = {name: {**opts, "restarts": 5} for name, opts in _STANDARD.items()}
_PLUS.update({k: _STANDARD[k] for k in ("apgd-t", "fab-t", "square")})
_RAND = {
    name: {"steps": 100, "restarts": 1, "eot_iter": 20, "randomized": True}
    for name in ("apgd-ce", "apgd-dlr")
}
_DEFAULTS = {"standard": _STANDARD, "plus": _PLUS, "rand": _RAND, "custom": _STANDARD}


def component_options(version: str = "standard") -> dict[str, dict[str, Any]]:
    """The reference keyword options of each component in `version` (a fresh copy)."""
    if version not in _DEFAULTS:
        raise ValueError(f"Unknown version {version!r}; choose one of {tuple(_DEFAULTS)}.")
    return {name: dict(opts) for name, opts in _DEFAULTS[version].items()}


def _run_component(name, logits_fn, x, y, keys, eps, norm, options, unroll):
    common = dict(eps=eps, norm=norm, key=keys, validate=False, **options)
    if name != "square":
        common.setdefault("unroll", unroll)
    if name in ("apgd-ce", "apgd-dlr"):
        return apgd(logits_fn, x, y, loss=name[5:], **common)
    if name == "apgd-t":
        return apgd_t(logits_fn, x, y, **common)
    if name in ("fab", "fab-t"):
        return fab(logits_fn, x, y, targeted=name == "fab-t", **common)
    return square(logits_fn, x, y, **common)


def _component_keys(key: jax.Array, n: int, name: str) -> jax.Array:
    """(N,) keys of component `name`: those of a standalone call with fold_in(key, index)."""
    index = COMPONENTS.index(name)
    if key.shape == ():
        return example_keys(jax.random.fold_in(key, index), n)
    return jax.vmap(lambda k: jax.random.fold_in(k, index))(example_keys(key, n))


def _model_key(key: jax.Array, salt: int) -> jax.Array:
    """A key for a randomized model's own draws (not tied to any example)."""
    base = key if key.shape == () else key[0]
    return jax.random.fold_in(jax.random.fold_in(base, 0x72616E64), salt)


def _gathered_step(run, verdict, x, y, keys, x_adv, robust, salt, batch_size=None):
    """Attacks the still-robust examples only (host gather), at most `batch_size` per call;
    returns (x_adv, robust)."""
    idx = np.flatnonzero(np.asarray(robust))
    for start in range(0, idx.size, batch_size or max(idx.size, 1)):
        part = idx[start : start + (batch_size or idx.size)]
        # Pad with copies of one example so that batch sizes, hence compilations, stay few.
        rows = padded_rows(part, min(x.shape[0], batch_size or x.shape[0]))
        # Finished before the verdict's ops are dispatched: with the batch sharded over
        # several CPU devices, an attack program still running beside newly dispatched eager
        # ops twice left XLA:CPU's devices waiting for each other at an all-reduce, for good
        # (the cifar_cpu white-box AutoAttack on 2,000 images; 500 had run three times
        # without it). take_rows keeps a batch split over devices split (else each device
        # attacks all rows).
        out = jax.block_until_ready(run(*take_rows((x, y, keys), rows)))
        broken = np.asarray(~verdict(out, y[rows], salt))[: part.size]
        x_adv = x_adv.at[part[broken]].set(out[: part.size][broken])
        robust = robust.at[part[broken]].set(False)
    return x_adv, robust


def _full_batch_step(run, verdict, x, y, keys, x_adv, robust, salt):
    """Attacks the whole batch, keeps the result where still robust; skips when none is."""

    def attack(_):
        out = run(x, y, keys)
        return out, ~verdict(out, y, salt)

    def skip(_):
        return x, jnp.zeros(robust.shape, bool)

    if is_traced(robust):
        out, broken = jax.lax.cond(jnp.any(robust), attack, skip, None)
    else:
        out, broken = attack(None) if bool(jnp.any(robust)) else skip(None)
    newly = robust & broken
    return jnp.where(newly[:, None, None, None], out, x_adv), robust & ~broken


def autoattack(
    logits_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    *,
    eps: Any,
    norm: str = "linf",
    version: str = "standard",
    key: jax.Array | None = None,
    attacks_to_run: Sequence[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    gather_robust: bool | None = None,
    unroll: bool | int | None = None,
    batch_size: int | None = None,
    validate: bool = True,
    return_details: bool = False,
) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
    """AutoAttack (Croce & Hein, ICML 2020): per example, the worst case over its components.

    Args:
      logits_fn: `(N, H, W, C) images -> (N, K) logits`; for version="rand",
        `logits_fn(images, key) -> logits` of a randomized defense.
      x: (N, H, W, C) float images in [0, 1].
      y: (N,) int true labels.
      eps: radius of the `norm` ball (traced in the full-batch mode).
      norm: "linf" or "l2".
      version: "standard", "plus", "rand" or "custom" (see the module docstring).
      key: `jax.random` key, or (N,) keys, one per example.
      attacks_to_run: the components of version="custom", from `COMPONENTS`, in order.
      options: per-component keyword overrides of the reference parameters, e.g.
        `{"apgd-ce": {"steps": 20}, "square": {"steps": 300}}` for a cheaper run.
      gather_robust: attack only the still-robust examples, gathered on the host between
        components (None: when x is concrete, i.e. outside jit).
      unroll: loop unrolling for the gradient-based components, see `attack_loop`.
      batch_size: attack at most this many examples per component call (None: all the
        still-robust ones at once). Peak memory follows the largest call, so this bounds it
        for a large x; each example's result is the same, since its randomness comes from
        its own key. Only with the gather mode (outside jit).
      validate: check input values (outside jit).
      return_details: also return a dict of (N,) bool masks: "clean" (correctly classified)
        and, per component in order, the examples still robust after it (robust before it
        and not broken by it), so the last mask is AutoAttack's robust mask.

    Returns:
      x_adv: (N, H, W, C) within the threat model, same dtype as x; with `return_details`,
      (x_adv, details). The robust accuracy is the mean of the last component's mask.
    """
    key = require_key(key, "AutoAttack")
    if version not in _DEFAULTS:
        raise ValueError(f"Unknown version {version!r}; choose one of {tuple(_DEFAULTS)}.")
    if version == "custom":
        if not attacks_to_run:
            raise ValueError('version="custom" needs attacks_to_run, e.g. ("apgd-ce", "apgd-t").')
        names = tuple(attacks_to_run)
    elif attacks_to_run is not None:
        raise ValueError(f'attacks_to_run is only for version="custom", not {version!r}.')
    else:
        names = VERSIONS[version]
    unknown = [a for a in names if a not in COMPONENTS] + [
        a for a in (options or {}) if a not in COMPONENTS
    ]
    if unknown:
        raise ValueError(f"Unknown AutoAttack components {unknown}; choose from {COMPONENTS}.")
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    randomized = version == "rand"
    call = (lambda z: logits_fn(z, _model_key(key, 0))) if randomized else logits_fn
    check_attack_inputs(
        x, y, eps=eps, norm=norm, num_classes=num_classes_of(call, x), validate=validate
    )
    settings = component_options(version)
    for name, extra in (options or {}).items():
        settings[name] = {**settings.get(name, {}), **extra}

    def verdict(points, labels, salt):
        """(M,) bool: still correctly classified (one fresh draw for a randomized model)."""
        logits = logits_fn(points, _model_key(key, salt)) if randomized else logits_fn(points)
        return jnp.argmax(logits, axis=-1) == labels

    n = x.shape[0]
    robust = verdict(x, y, 0)
    # Under jit (or any transformation) the masks are abstract and cannot be gathered.
    if gather_robust is None:
        gather_robust = not is_traced(robust)
    elif gather_robust and is_traced(robust):
        raise ValueError("gather_robust=True needs concrete values; under jit pass False.")
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int or None, not {batch_size!r}.")
        if not gather_robust:
            raise ValueError(
                "batch_size needs the gather mode (outside jit, gather_robust not False)."
            )
    x_adv = x
    details = {"clean": robust}
    step = _gathered_step if gather_robust else _full_batch_step
    extra = {"batch_size": batch_size} if gather_robust else {}
    for name in names:

        def run(xs, ys, ks, name=name):
            return _run_component(name, logits_fn, xs, ys, ks, eps, norm, settings[name], unroll)

        keys = _component_keys(key, n, name)
        salt = 1 + COMPONENTS.index(name)
        x_adv, robust = step(run, verdict, x, y, keys, x_adv, robust, salt, **extra)
        details[name] = robust
    return (x_adv, details) if return_details else x_adv


__all__ = ["COMPONENTS", "VERSIONS", "autoattack", "component_options"]
