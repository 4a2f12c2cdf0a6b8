"""Thermometer encoding (Buckman, Roy, Raffel & Goodfellow, ICLR 2018).

Each channel value v in [0, 1] becomes L = `levels` bits, bit i (i = 0 .. L-1) being

    tau(v)_i = 1 if v >= i / L else 0,

i.e. v is quantised to its bin k = min(floor(v L), L - 1) and the first k + 1 bits are set
(bit 0 is always 1; v = 1 falls in the top bin, as in Buckman et al.'s quantisation into L
levels). The bits of channel c are output channels c * L .. c * L + L - 1, so an
(N, H, W, C) image becomes (N, H, W, C * L) floats in {0, 1}.

The encoding is part of the classifier, not a purifier: the network is trained on the
bits. `ThermometerInput` wraps any capjax zoo classifier and encodes its input, so the
pair is again a zoo classifier ([0, 1] images in, logits out, `train`,
`return_features`, final layer `head`). The step function has zero gradient almost
everywhere; `thermometer_encode_smooth` is the relaxation sigmoid((v - i / L) T) for BPDA
(`attacks.bpda(encode, approx=smooth)`) and, through `ThermometerInput(smooth=...)`, for
attacks that differentiate the whole model.

Wrapped classifiers: Flax convolutions infer their input channels at init, so every zoo
model takes C * L channels as it is. Their optional `mean`/`std` input normalisation is
per RGB channel and means nothing for bits, so it must be off (None); `ThermometerInput`
raises otherwise.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from capjax.core.errors import ConfigError
from capjax.defenses._checks import check_images
from capjax.models import get_classifier

DEFAULT_LEVELS = 16


def _check_levels(levels: Any) -> None:
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ConfigError(
            f"levels must be a Python int >= 2 (Buckman et al. use 16), got {levels!r}."
        )


def _thresholds(levels: int, dtype: Any) -> jax.Array:
    return jnp.arange(levels, dtype=dtype) / levels


def _flatten_bits(bits: jax.Array) -> jax.Array:
    n, h, w, c, levels = bits.shape
    return bits.reshape(n, h, w, c * levels)


def thermometer_encode(x: jax.Array, levels: int = DEFAULT_LEVELS) -> jax.Array:
    """Exact thermometer code (module docstring); zero gradient almost everywhere.

    Args:
      x: (N, H, W, C) float in [0, 1].
      levels: L, a Python int >= 2.

    Returns:
      (N, H, W, C * L) float32 in {0, 1}; channel c * L + i is 1 iff x[..., c] >= i / L.
    """
    check_images(x, "thermometer_encode")
    _check_levels(levels)
    x = x.astype(jnp.float32)
    bits = x[..., None] >= _thresholds(levels, x.dtype)
    return _flatten_bits(bits.astype(jnp.float32))


def thermometer_encode_smooth(
    x: jax.Array, levels: int = DEFAULT_LEVELS, temperature: float | None = None
) -> jax.Array:
    """Differentiable relaxation: channel c * L + i is sigmoid((x_c - i / L) * temperature).

    It tends to `thermometer_encode` as temperature grows (except exactly at a threshold,
    where it is 1/2). The default temperature, 4 L, puts each sigmoid's 12%-88% rise within
    one bin of its threshold (±1/(2L)).

    Args:
      x: (N, H, W, C) float in [0, 1].
      levels: L, a Python int >= 2.
      temperature: slope of the sigmoids (> 0; may be traced), or None for 4 * levels.

    Returns:
      (N, H, W, C * L) float32 in (0, 1).
    """
    check_images(x, "thermometer_encode_smooth")
    _check_levels(levels)
    if temperature is None:
        temperature = 4.0 * levels
    elif not isinstance(temperature, jax.core.Tracer) and not float(temperature) > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}.")
    x = x.astype(jnp.float32)
    bits = jax.nn.sigmoid((x[..., None] - _thresholds(levels, x.dtype)) * temperature)
    return _flatten_bits(bits)


class ThermometerInput(nn.Module):
    """A zoo classifier behind a thermometer encoding of its input.

    The wrapped classifier shares this module's scope, so the variables are exactly those
    of `classifier` built for C * L input channels (`params["head"]["kernel"]` as in every
    zoo model); only the first convolution's kernel is L times wider.

    Attributes:
      classifier: a capjax zoo classifier built with mean=None and std=None, e.g.
        `get_classifier("tiny", num_classes=10)`.
      levels: L.
      smooth: None for the exact code (what the defense is trained and evaluated with), or
        a temperature: the smooth relaxation, for an attacker's differentiable copy of the
        model (same variables).
    """

    classifier: nn.Module
    levels: int = DEFAULT_LEVELS
    smooth: float | None = None

    def setup(self):
        _check_levels(self.levels)
        for field in ("mean", "std"):
            if getattr(self.classifier, field, None) is not None:
                raise ConfigError(
                    f"ThermometerInput's classifier has {field}="
                    f"{getattr(self.classifier, field)!r}, a per-RGB-channel normalisation "
                    "that does not apply to thermometer bits; build it with mean=None, "
                    "std=None."
                )
        nn.share_scope(self, self.classifier)

    def __call__(self, x: jax.Array, train: bool = False, return_features: bool = False):
        """x: (N, H, W, C) in [0, 1] -> the classifier's output on the (N, H, W, C * L) code."""
        if self.smooth is None:
            encoded = thermometer_encode(x, self.levels)
        else:
            encoded = thermometer_encode_smooth(x, self.levels, self.smooth)
        return self.classifier(encoded, train=train, return_features=return_features)


def thermometer_classifier(
    name: str, levels: int = DEFAULT_LEVELS, **kwargs: Any
) -> ThermometerInput:
    """`ThermometerInput(get_classifier(name, **kwargs), levels)`: a zoo model by name.

    Configs keep choosing the network by its registry name (model.name) and add the
    encoding with one option, so the registry needs no wrapper entries.
    """
    return ThermometerInput(get_classifier(name, **kwargs), levels=levels)
