"""Programs that run once, compiled for compile speed rather than run time.

XLA optimises every program for run time. For a program that runs once, such as parameter
initialisation, that effort is wasted: on XLA:CPU the threefry generator behind every
initialiser costs seconds of LLVM optimisation per parameter, which backend optimisation
level 0 removes (figures in docs/benchmarks.md; `tests/test_run_once.py` keeps the
comparison). The values are those of
the default compile up to float32 rounding (about 4% of entries differ in the last bit: the
generator's transcendental polynomials are contracted differently), not bit for bit; every
capjax run initialises through here, so runs stay reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

# XLA DebugOptions for a program whose run time does not matter.
RUN_ONCE_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def run_once(fn: Callable[..., Any], *args: Any, out_shardings: Any = None) -> Any:
    """`jax.jit(fn, out_shardings=...)(*args)`, compiled at backend optimisation level 0.

    For programs that run once (parameter and optimiser-state initialisation). Each call
    compiles afresh: nothing is cached.
    """
    jitted = jax.jit(fn) if out_shardings is None else jax.jit(fn, out_shardings=out_shardings)
    compiled = jitted.lower(*args).compile(compiler_options=RUN_ONCE_COMPILER_OPTIONS)
    return compiled(*args)
