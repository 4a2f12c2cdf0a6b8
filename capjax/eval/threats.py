"""Threat models: which function an attacker differentiates (or queries), and which is scored.

Each threat model turns a `Defense` (and, for black/gray-box ones, a `surrogate` Defense
trained with another seed) into the logits function the attacker sees. Whatever the attacker
saw, the suite scores the returned x_adv by a fresh forward pass of the full defended model
`defense.defended(fresh_key)` (of the bare classifier f for "undefended"), so a threat model
can only change how strong the attack is, never how it is counted.

    attacked, description = attacked_model("bpda", defense, key=key)
    x_adv = attack(attacked, x, y, attack_key)
    correct = argmax(scored_model("bpda", defense, score_key)(x_adv)) == y
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from capjax import attack_specs, attacks
from capjax.attacks import LogitsFn
from capjax.core.errors import ConfigError
from capjax.eval.defense import Defense

DESCRIPTIONS = {
    "clean": "no attack",
    "undefended": "attack and score the classifier f alone (no defense)",
    "transfer": "black-box transfer: attack a surrogate classifier f' (another seed), "
    "score the defended model",
    "graybox": "gray-box: attack a surrogate copy of the whole defense f'(purify'(x)) "
    "(another seed), score the defended model",
    "whitebox": "attack the classifier f alone, then purify and score the defended model "
    "(the papers' white-box setting)",
    "end_to_end": "attack f(purify(x)) end to end with its true gradients (or its "
    "differentiable approximation)",
    "bpda": "BPDA: attack f(purify(x)) with purify's backward pass replaced by the identity",
    "bpda_eot": "BPDA + EOT: as bpda, gradients averaged over draws of the defense's randomness",
    "score_based": "score-based black box: query the defended model's outputs, no gradients",
}
THREATS = tuple(DESCRIPTIONS)
# Threats whose attacker needs a surrogate defense, and the config field that provides it.
SURROGATE_FIELD = "eval.surrogate"
_NEEDS_SURROGATE = ("transfer", "graybox")


def check_threat(
    threat: str,
    attack_spec: Mapping[str, Any] | None,
    defense: Defense,
    surrogate: Defense | None = None,
) -> None:
    """Raises ValueError for an unknown threat, a missing surrogate, or an attack the threat
    model cannot run (gradient attacks under "score_based")."""
    if threat not in DESCRIPTIONS:
        raise ConfigError(f"Unknown threat {threat!r}; choose one of {THREATS}.")
    if threat in _NEEDS_SURROGATE and surrogate is None:
        raise ConfigError(
            f'Threat "{threat}" attacks a surrogate model trained with another seed, but none '
            f"was given: set {SURROGATE_FIELD} (a second run of the "
            f"{'classifier' if threat == 'transfer' else 'defense'}) or drop the "
            f"{threat} rows."
        )
    if attack_spec is not None and attack_specs.stops_early_from_host(attack_spec):
        same = threat in ("undefended", "bpda") or (
            threat == "end_to_end" and defense.differentiable_purify is None
        )
        if not same:
            raise ConfigError(
                f"early_stop stops attacking an example once the attacked model misclassifies "
                f"it, which settles the row only where the attacked model is the scored one "
                f'("undefended", "bpda", and "end_to_end" without a differentiable stand-in '
                f'for the purifier); threat "{threat}" of {defense.name} scores another model. '
                f"Drop early_stop from this row."
            )
    if threat == "score_based" and attack_spec is not None:
        k = attack_specs.kind(attack_spec)
        if k not in ("score_based", "none"):
            raise ConfigError(
                f'Threat "score_based" gives the attacker no gradients, but attack '
                f"{attack_spec.get('name')!r} is {k}; use square or spsa there, or another "
                f"threat model for gradient attacks."
            )


def _no_gradient(fn: LogitsFn) -> LogitsFn:
    """fn, whose differentiation fails loudly: a score-based attacker sees outputs only."""

    @jax.custom_vjp
    def outputs_only(x):
        return fn(x)

    def forward(x):
        return fn(x), None

    def backward(_, cotangent):
        raise ConfigError(
            "An attack tried to differentiate the score-based threat model; it gives the "
            "attacker the defended model's outputs only."
        )

    outputs_only.defvjp(forward, backward)
    return outputs_only


def keyed_bpda(purify: Callable[[jax.Array, jax.Array], jax.Array]):
    """`attacks.bpda(lambda x: purify(x, key))` with the key an explicit argument.

    Forward: purify(x, key) exactly; backward: the identity in x. A custom_vjp may not close
    over a traced key (one drawn inside `eot`'s map, say), hence the argument.
    """

    @jax.custom_vjp
    def forward(x, key):
        return purify(x, key)

    def forward_with_residual(x, key):
        return purify(x, key), None

    def backward(_, cotangent):
        return cotangent, None

    forward.defvjp(forward_with_residual, backward)
    return forward


def _eot_bpda(defense: Defense, key: jax.Array, n: int) -> LogitsFn:
    """log of the mean softmax over n draws of purify's key, each through BPDA."""
    purify = keyed_bpda(defense.purified)

    def draw(x, k):
        purified = purify(x, k)
        return jax.nn.softmax(defense.classifier(purified).astype(jnp.float32), axis=-1)

    averaged = attacks.eot(draw, n=n, key=key)
    return lambda x: jnp.log(jnp.maximum(averaged(x), jnp.finfo(jnp.float32).tiny))


def attacked_model(
    threat: str,
    defense: Defense,
    surrogate: Defense | None = None,
    *,
    key: jax.Array,
    eot_samples: int = 8,
) -> tuple[LogitsFn | None, str]:
    """The logits function the attacker of `threat` sees, and a one-line description.

    Args:
      threat: one of `THREATS`.
      defense: the defense under evaluation.
      surrogate: the attacker's own copy (another seed), for "transfer" and "graybox".
      key: fixes the defense's randomness as the attacker sees it (EOT draws for bpda_eot).
      eot_samples: draws averaged by "bpda_eot".

    Returns:
      (attacked, description); attacked is None for "clean" (no attack runs).
    """
    check_threat(threat, None, defense, surrogate)
    description = DESCRIPTIONS[threat]
    if threat == "clean":
        return None, description
    if threat in ("undefended", "whitebox"):
        return defense.classifier, description
    if threat == "transfer":
        return surrogate.classifier, description
    if threat == "graybox":
        return surrogate.gradient_path(key), description
    if threat == "end_to_end":
        return defense.gradient_path(key), description
    if threat == "bpda":
        purify = attacks.bpda(lambda x: defense.purified(x, key))
        return attacks.defended(defense.classifier, purify), description
    if threat == "bpda_eot":
        if not isinstance(eot_samples, int) or eot_samples < 1:
            raise ConfigError(f"eot_samples must be an int >= 1, got {eot_samples!r}.")
        return _eot_bpda(defense, key, eot_samples), f"{description} ({eot_samples} draws)"
    if threat == "score_based":
        return _no_gradient(defense.defended(key)), description
    raise AssertionError(threat)


def scored_model(threat: str, defense: Defense, key: jax.Array) -> LogitsFn:
    """The model whose accuracy `threat` reports: f for "undefended", else the defended one.

    `key` must be fresh (not the attacker's), so a random defense is scored on a new draw.
    """
    if threat not in DESCRIPTIONS:
        raise ConfigError(f"Unknown threat {threat!r}; choose one of {THREATS}.")
    if threat == "undefended":
        return defense.classifier
    return defense.defended(key)
