"""The adversarial training examples of the trained baselines (HGD, APE-GAN), crafted in-step.

A baseline's config names its training attack as a dict of plain values,
`{"name": "pgd", "eps": 8/255, "step_size": 2/255, "steps": 10}` or
`{"name": "cw", "steps": 100, ...}`; the rest of the dict is passed to the `capjax.attacks`
function as keyword options. The examples are crafted against the frozen target inside the
jitted train step, fresh every step, and leave it as constants (`stop_gradient`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax

from capjax import attacks
from capjax.core.errors import ConfigError

# config name -> capjax.attacks function
TRAINING_ATTACKS: dict[str, Callable[..., jax.Array]] = {
    "pgd": attacks.pgd,
    "fgsm": attacks.fgsm,
    "cw": attacks.cw_l2,
}
# Set by the trainer, not by the config.
_INTERNAL_OPTIONS = ("key", "unroll", "validate")


def _options_of(fn: Callable[..., Any]) -> set[str]:
    parameters = inspect.signature(fn).parameters.values()
    keyword_only = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return keyword_only - set(_INTERNAL_OPTIONS)


def check_training_attack(options: Mapping[str, Any], field: str) -> None:
    """Raises ValueError unless `options` names a known attack with known options and a sane eps.

    Args:
      options: {"name": ..., option: value, ...}.
      field: the config field the options come from, for the messages.
    """
    options = dict(options)
    name = options.pop("name", None)
    if name not in TRAINING_ATTACKS:
        raise ConfigError(
            f"Unknown training attack {name!r} in {field}.name; choose one of "
            f"{tuple(TRAINING_ATTACKS)}."
        )
    known = _options_of(TRAINING_ATTACKS[name])
    unknown = set(options) - known
    if unknown:
        raise ConfigError(
            f"{field} has options {sorted(unknown)} that {name} does not take; its options: "
            f"{sorted(known)}."
        )
    if "eps" in known:
        eps = options.get("eps")
        if eps is None or not 0 < eps <= 1:
            raise ConfigError(
                f"{field}.eps={eps} must be in (0, 1] (the [0, 1] pixel scale: 8/255, not 8)."
            )
    steps = options.get("steps", 1)
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"{field}.steps={steps!r} must be an int >= 1.")


def craft_training_examples(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    options: Mapping[str, Any],
    unroll: bool | int | None = None,
) -> jax.Array:
    """Adversarial examples of x (N, H, W, C) in [0, 1] with labels y, as constants.

    PGD draws its random start from `key`; FGSM and CW are deterministic. Values are not
    validated inside jit (`validate=False`): call `check_training_attack` at the edge.
    """
    options = dict(options)
    fn = TRAINING_ATTACKS[options.pop("name")]
    internal = {"key": key, "unroll": unroll}
    options.update({k: v for k, v in internal.items() if k in inspect.signature(fn).parameters})
    x_adv = fn(logits_fn, x, y, validate=False, **options)
    return jax.lax.stop_gradient(x_adv)
