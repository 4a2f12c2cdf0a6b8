"""`tiled_max_pool(logits_fn)`: a model's non-overlapping max pools, differentiated fast on CPU.

`flax.linen.max_pool` (and `lax.reduce_window` with `lax.max`) is the primitive
`reduce_window_max`. Its gradient is XLA's select-and-scatter, which XLA:CPU runs slowly, and
every attack step differentiates the model once or more. When the pooling windows tile the
input (window == stride, no padding, no dilation: the usual 2x2 stride-2 pool), the same
values come from a reshape and a `max` over the window axes, whose gradient is a compare and
a broadcast.

`tiled_max_pool(logits_fn)` traces `logits_fn` to a jaxpr, evaluates it with every such
`reduce_window_max` replaced by the reshape + max, and leaves everything else as it was
(nested `jit` calls are entered; custom derivative rules are kept). The logits are the same;
the input gradient is the same except at ties inside a window, where select-and-scatter
gives the whole gradient to one input and the reshape + max splits it evenly (both are valid
subgradients, and ties do not occur for real-valued activations in practice).

    logits_fn = attacks.tiled_max_pool(attacks.flax_logits_fn(model, variables, train=False))
    x_adv = attacks.autoattack(logits_fn, x, y, eps=8 / 255, key=key)

The result is a `jax.tree_util.Partial` whose leaves are those of `logits_fn` (when it is a
Partial, as `flax_logits_fn`'s is), so a second attack call still reuses the compiled program.
A model with no tiling pool is called as it is (the rewrite only inspects its jaxpr), and
wrapping twice is wrapping once. `flax_logits_fn` applies the rewrite unless it is given
`fast_max_pool=False`. Measured speed-ups are in docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend as jex
import jax.numpy as jnp

# Call primitives whose inner jaxpr is entered, so pools inside `jax.jit`-ed helpers are seen.
_CALLS = ("jit", "pjit", "closed_call")


def tiled_max_pool(logits_fn: Callable[..., Any]) -> jax.tree_util.Partial:
    """`logits_fn` with its tiling max pools computed as reshape + max (module docstring)."""
    if isinstance(logits_fn, jax.tree_util.Partial) and logits_fn.func is _call_tiled:
        return logits_fn
    if not isinstance(logits_fn, jax.tree_util.Partial):
        logits_fn = jax.tree_util.Partial(logits_fn)
    return jax.tree_util.Partial(_call_tiled, logits_fn)


def _call_tiled(fn: jax.tree_util.Partial, *args):
    leaves, treedef = jax.tree_util.tree_flatten(fn)

    def flat_call(leaves, *args):
        return jax.tree_util.tree_unflatten(treedef, leaves)(*args)

    closed, out_shape = jax.make_jaxpr(flat_call, return_shape=True)(leaves, *args)
    if not _has_tiling_pool(closed.jaxpr):
        return fn(*args)  # nothing to rewrite: the model runs exactly as written
    flat_in = jax.tree_util.tree_leaves((leaves, args))
    out = _eval(closed.jaxpr, closed.consts, flat_in)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), out)


def _eval(jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
    env: dict[Any, Any] = {}

    def read(v):
        return v.val if isinstance(v, jex.core.Literal) else env[v]

    for var, value in zip(jaxpr.constvars, consts, strict=True):
        env[var] = value
    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = value
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name == "reduce_window_max" and _tiles(eqn.params):
            outvals = [_window_max(invals[0], eqn.params["window_dimensions"])]
        elif name in _CALLS and "jaxpr" in eqn.params:
            inner = eqn.params["jaxpr"]
            outvals = _eval(inner.jaxpr, inner.consts, invals)
        else:
            bound = eqn.primitive.get_bind_params(eqn.params)
            # A dict in current JAX; (subfuns, params) in older releases.
            subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
            outvals = eqn.primitive.bind(*subfuns, *invals, **params)
            if not eqn.primitive.multiple_results:
                outvals = [outvals]
        for var, value in zip(eqn.outvars, outvals, strict=True):
            env[var] = value
    return [read(v) for v in jaxpr.outvars]


def _has_tiling_pool(jaxpr) -> bool:
    """Whether `_eval` would rewrite any equation of `jaxpr` (or of the calls it enters)."""
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "reduce_window_max" and _tiles(eqn.params):
            return True
        if name in _CALLS and "jaxpr" in eqn.params and _has_tiling_pool(eqn.params["jaxpr"].jaxpr):
            return True
    return False


def _tiles(params: dict[str, Any]) -> bool:
    """Windows that tile the input: window == stride, no padding, no dilation."""
    return (
        tuple(params["window_dimensions"]) == tuple(params["window_strides"])
        and all(tuple(p) == (0, 0) for p in params["padding"])
        and all(d == 1 for d in params["base_dilation"])
        and all(d == 1 for d in params["window_dilation"])
    )


def _window_max(x: jax.Array, window: Sequence[int]) -> jax.Array:
    """max over non-overlapping windows; trailing rows that fill no window are dropped, as
    `reduce_window` with "VALID" padding drops them."""
    x = x[tuple(slice(0, d - d % w) for d, w in zip(x.shape, window, strict=True))]
    split = [n for d, w in zip(x.shape, window, strict=True) for n in (d // w, w)]
    return jnp.max(x.reshape(split), axis=tuple(range(1, 2 * x.ndim, 2)))


__all__ = ["tiled_max_pool"]
