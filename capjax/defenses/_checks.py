"""Input checks shared by the input-transformation defenses (JPEG, TVM, thermometer)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from capjax.core.errors import ConfigError

RANGE_TOLERANCE = 1e-6


def check_images(x: Any, who: str, channels: tuple[int, ...] | None = None) -> None:
    """Raises ValueError unless x is (N, H, W, C) floating in [0, 1].

    The shape and dtype checks always run; the value check (range, NaN) only when x is
    concrete, i.e. outside jit, where it costs one transfer to the host.
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ConfigError(f"{who} expects an array of images, got {type(x).__name__}.")
    if x.ndim != 4:
        raise ConfigError(f"{who} expects (N, H, W, C) images (NHWC), got shape {tuple(x.shape)}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ConfigError(
            f"{who} expects float images in [0, 1], got dtype {x.dtype}; "
            "convert uint8 images with x.astype(jnp.float32) / 255."
        )
    if channels is not None and x.shape[-1] not in channels:
        raise ConfigError(
            f"{who} expects {' or '.join(map(str, channels))} channels (last axis), got "
            f"shape {tuple(x.shape)}."
        )
    if isinstance(x, jax.core.Tracer):
        return
    x_host = np.asarray(x)
    if not np.all(np.isfinite(x_host)):
        raise ConfigError(f"{who}: x contains NaN or Inf pixels.")
    lo, hi = float(x_host.min(initial=0.0)), float(x_host.max(initial=0.0))
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise ConfigError(
            f"{who} expects pixels in [0, 1], got values in [{lo:g}, {hi:g}]; "
            "capjax images are float NHWC in [0, 1] (divide uint8 images by 255)."
        )
