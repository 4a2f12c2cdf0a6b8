"""A config's dtype names -> jnp dtypes, with "auto" for the compute dtype of the platform.

Every config section that builds networks has `dtype` (compute) and, for classifiers,
`param_dtype` (storage); `parse_dtype` turns either into a jnp dtype, naming the config field
in its error.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from capjax.core.errors import ConfigError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# `dtype="auto"`: bfloat16 where it is fast (GPU tensor cores, TPU MXU), float32 on CPU.
AUTO_DTYPE = "auto"
_BFLOAT16_PLATFORMS = ("gpu", "cuda", "rocm", "tpu")


def auto_dtype(platform: str | None = None) -> Any:
    """The compute dtype "auto" stands for on `platform` (default: JAX's default backend)."""
    platform = jax.default_backend() if platform is None else platform
    return jnp.bfloat16 if platform in _BFLOAT16_PLATFORMS else jnp.float32


def parse_dtype(name: str, field: str, *, allow_auto: bool = True) -> Any:
    """A config's dtype name -> the jnp dtype; "auto" (compute dtypes only) -> `auto_dtype()`.

    The compute dtype never enters a checkpoint: parameters, batch statistics and optimizer
    state keep `param_dtype`, so a run resumes on another platform whatever "auto" becomes.

    Raises:
      ValueError (ConfigError): an unknown name, or "auto" where `allow_auto` is False
        (storage dtypes).
    """
    if name == AUTO_DTYPE:
        if not allow_auto:
            raise ConfigError(
                f"{field}='auto' is not allowed: storage dtypes are chosen explicitly (keep "
                f"float32); 'auto' is for the compute dtype. Choose one of {tuple(DTYPES)}."
            )
        return auto_dtype()
    if name not in DTYPES:
        choices = tuple(DTYPES) + ((AUTO_DTYPE,) if allow_auto else ())
        raise ConfigError(f"Unknown {field} {name!r}; choose one of {choices}.")
    return DTYPES[name]
