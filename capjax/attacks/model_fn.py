"""`flax_logits_fn`: a Flax model and its variables as an attack's `logits_fn`, compiled once.

The attacks that compile themselves (APGD, APGD-T, FAB, Square, SPSA, and AutoAttack, which
calls them) key their compiled programs on the model callable. A closure such as

    logits_fn = lambda x: model.apply(variables, x, train=False)

is a new key on every call, so each call traces and compiles again, and the variables are
baked into the program as constants. `flax_logits_fn(model, variables, train=False)` returns
a `jax.tree_util.Partial` instead: the variables are a traced argument, and the function is
the same object for equal modules and keyword arguments, so a second call with the same
shapes (the same model with the same or new weights) reuses the compiled program.

    logits_fn = attacks.flax_logits_fn(model, variables, train=False)
    x_adv = attacks.autoattack(logits_fn, x, y, eps=8 / 255, key=key)

Any `jax.tree_util.Partial(fn, *arrays)` with a long-lived `fn` works the same way.

The model's tiling max pools (`nn.max_pool` with window == stride, no padding: the usual 2x2
pool) are differentiated as reshape + max (`attacks.tiled_max_pool`): the same logits, the
same input gradient except at exact ties inside a window, and on XLA:CPU several times faster
than the select-and-scatter that `nn.max_pool`'s own gradient is (docs/benchmarks.md).
`fast_max_pool=False` keeps the model's own gradient. A model without such pools runs as
written either way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

from capjax.attacks.fast_pool import tiled_max_pool


@functools.lru_cache(maxsize=64)
def _apply(model: Any, apply_kwargs: tuple[tuple[str, Any], ...]) -> Callable:
    """One function per (module, keyword arguments): Flax modules compare by their fields."""

    def apply(variables, x, *args):
        return model.apply(variables, x, *args, **dict(apply_kwargs))

    return apply


def flax_logits_fn(
    model: Any, variables: Any, *, fast_max_pool: bool = True, **apply_kwargs: Any
) -> jax.tree_util.Partial:
    """`x -> model.apply(variables, x, **apply_kwargs)` as a pytree whose leaves are `variables`.

    Args:
      model: a Flax linen module (hashable: its fields must be hashable, as linen's are).
      variables: its variables, e.g. {"params": ..., "batch_stats": ...}.
      fast_max_pool: differentiate tiling max pools as reshape + max (`tiled_max_pool`;
        module docstring). False keeps `nn.max_pool`'s select-and-scatter gradient.
      **apply_kwargs: static keyword arguments of `apply`, e.g. train=False.
    """
    fn = jax.tree_util.Partial(_apply(model, tuple(sorted(apply_kwargs.items()))), variables)
    return tiled_max_pool(fn) if fast_max_pool else fn


__all__ = ["flax_logits_fn"]
