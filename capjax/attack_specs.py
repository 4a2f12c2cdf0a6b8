"""Attacks named by plain config dicts: `{"name": "pgd", "eps": 8/255, "steps": 40, ...}`.

A config never stores an attack object (docs/design.md, Configs). The evaluation suite
(`make_attack`) and the tasks that build trainers (`training_attack`: HGD, APE-GAN, CAP-GAN's
domain A; `feature_attack`: CAFD's CAFA) turn each spec into an attack function here, with
one set of checks; a trainer takes the built attack. Every key other than
`name` is passed to the attack as a keyword option, checked against the attack's signature so
that a typo fails before anything is compiled.

    attack = make_attack({"name": "pgd", "eps": 8 / 255, "step_size": 2 / 255, "steps": 40})
    x_adv = attack(logits_fn, x, y, key)
    describe(spec)  # "PGD-40"
    kind(spec)      # "iterative"
    budget(spec)    # ("linf", 0.0313...)
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from capjax import attacks
from capjax.attacks import LogitsFn
from capjax.core.errors import ConfigError

AttackFn = Callable[[LogitsFn, jax.Array, jax.Array, jax.Array], jax.Array]
# (class_activation_fn, x, key) -> x_adv: CAFD's training attack (`feature_attack`).
FeatureAttackFn = Callable[[Callable[[jax.Array], jax.Array], jax.Array, jax.Array], jax.Array]
FEATURE_ATTACK = "cafa"

KINDS = ("none", "single_step", "iterative", "unbounded", "score_based", "ensemble")

# Options the suite owns (the key) or that would change what an attack returns.
_RESERVED = {"key", "return_flow", "return_details"}


@dataclasses.dataclass(frozen=True)
class _Entry:
    fn: Callable[..., jax.Array] | None
    kind: str


ATTACKS: dict[str, _Entry] = {
    "none": _Entry(None, "none"),
    "fgsm": _Entry(attacks.fgsm, "single_step"),
    "pgd": _Entry(attacks.pgd, "iterative"),
    "mifgsm": _Entry(attacks.mifgsm, "iterative"),
    "ti_dim": _Entry(attacks.ti_dim, "iterative"),
    "apgd": _Entry(attacks.apgd, "iterative"),
    "apgd_t": _Entry(attacks.apgd_t, "iterative"),
    "fab": _Entry(attacks.fab, "iterative"),
    "cw": _Entry(attacks.cw_l2, "unbounded"),
    "ddn": _Entry(attacks.ddn, "unbounded"),
    "stadv": _Entry(attacks.stadv, "unbounded"),
    "square": _Entry(attacks.square, "score_based"),
    "spsa": _Entry(attacks.spsa, "score_based"),
    "autoattack": _Entry(attacks.autoattack, "ensemble"),
}
_ALIASES = {"cw_l2": "cw", "mi_fgsm": "mifgsm"}
# Attacks that choose their own target classes (and count any misclassification).
_SELF_TARGETING = {"fab", "apgd_t"}
TARGET_MODES = ("random", "least_likely")
_TARGET_SALT = 0x7461


def plain(value: Any) -> Any:
    """A config value as plain Python: mappings to dicts, lists to tuples (recursively)."""
    if isinstance(value, Mapping) or hasattr(value, "to_dict"):
        items = value.to_dict().items() if hasattr(value, "to_dict") else value.items()
        return {str(k): plain(v) for k, v in items}
    if isinstance(value, (list, tuple)):
        return tuple(plain(v) for v in value)
    return value


def attack_name(spec: Mapping[str, Any]) -> str:
    """The registry name of `spec["name"]` (aliases resolved); ValueError when unknown."""
    if not isinstance(spec, Mapping) and not hasattr(spec, "to_dict"):
        raise ConfigError(f"An attack spec must be a dict with a 'name', got {spec!r}.")
    name = spec.get("name")
    name = _ALIASES.get(name, name)
    if name not in ATTACKS:
        raise ConfigError(f"Unknown attack name {name!r}; choose one of {tuple(ATTACKS)}.")
    return name


def _parameters(name: str) -> dict[str, inspect.Parameter]:
    fn = attacks.cafa if name == FEATURE_ATTACK else ATTACKS[name].fn
    if fn is None:
        return {}
    params = inspect.signature(fn).parameters
    return {k: p for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in _RESERVED}


def accepted_options(name: str) -> tuple[str, ...]:
    """The options attack `name` accepts in a spec: its signature (minus `key`), plus
    `target` for attacks that take target labels."""
    name = _ALIASES.get(name, name)
    extra = ("target",) if _takes_target(name) else ()
    return tuple(_parameters(name)) + extra


def _takes_target(name: str) -> bool:
    return "targeted" in _parameters(name) and name not in _SELF_TARGETING


def _split(spec: Mapping[str, Any]) -> tuple[str, dict[str, Any], str | None]:
    """(name, the attack's keyword options, target mode or None), all checked."""
    name = attack_name(spec)
    given = {k: plain(v) for k, v in plain(spec).items() if k != "name"}
    params = _parameters(name)
    unknown = sorted(set(given) - set(accepted_options(name)))
    if unknown:
        accepted = sorted(accepted_options(name))
        raise ConfigError(
            f"Unknown option(s) {unknown} for attack {name!r}; it accepts "
            f"{accepted if accepted else 'no options'}."
        )
    missing = sorted(
        k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in given
    )
    if missing:
        raise ConfigError(f"Attack {name!r} needs option(s) {missing} in its spec.")
    _check_values(name, given)
    if name == "autoattack" and given.get("version") == "rand":
        raise ConfigError(
            'AutoAttack version="rand" needs a keyed model; evaluate a random defense with '
            'threat "bpda_eot" and version "standard" (or "custom") instead.'
        )
    target = given.pop("target", None)
    if target is not None:
        if target not in TARGET_MODES:
            raise ConfigError(
                f"Attack {name!r}: target must be one of {TARGET_MODES}, got {target!r}."
            )
        if given.get("targeted") is False:
            raise ConfigError(f"Attack {name!r}: target={target!r} contradicts targeted=False.")
        given["targeted"] = True
    elif given.get("targeted") and name not in _SELF_TARGETING:
        raise ConfigError(
            f"Attack {name!r}: targeted=True would aim at the true labels; choose the targets "
            f"with 'target': one of {TARGET_MODES} instead."
        )
    return name, given, target


def options(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword options the attack is called with, checked against its signature
    (`target` becomes `targeted=True`; the targets are drawn by `make_attack`).

    Raises:
      ValueError: an unknown option (the message lists the accepted ones), a required one
        missing, a bad value (eps above 1 for L-inf, say), or an AutoAttack version this
        suite cannot run.
    """
    return _split(spec)[1]


def target_mode(spec: Mapping[str, Any]) -> str | None:
    """The spec's `target` ("random", "least_likely") or None for an untargeted attack."""
    return _split(spec)[2]


def targets(
    mode: str, logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array
) -> jax.Array:
    """(N,) target classes: uniform over the classes other than y ("random"), or the
    class the attacked model finds least likely ("least_likely")."""
    if mode == "least_likely":
        return jnp.argmin(jax.lax.stop_gradient(logits_fn(x)), -1).astype(y.dtype)
    num_classes = jax.eval_shape(logits_fn, x).shape[-1]
    offset = jax.random.randint(key, y.shape, 1, num_classes, dtype=y.dtype)
    return (y + offset) % num_classes


def _check_values(name: str, given: Mapping[str, Any]) -> None:
    """Budget and step counts, checked before anything compiles (docs/design.md principle 7)."""
    eps = given.get("eps")
    if eps is not None:
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
            raise ConfigError(f"Attack {name!r}: eps must be a number >= 0, got {eps!r}.")
        if given.get("norm", "linf") == "linf" and eps > 1:
            raise ConfigError(
                f"Attack {name!r}: eps={eps} is above 1, but images are on the [0, 1] scale; "
                f"did you mean {eps:g}/255 = {eps / 255:.6f}?"
            )
    step_size = given.get("step_size")
    if step_size is not None:
        if (
            isinstance(step_size, bool)
            or not isinstance(step_size, numbers.Real)
            or not step_size >= 0
        ):
            raise ConfigError(
                f"Attack {name!r}: step_size must be a number >= 0, got {step_size!r}."
            )
        if given.get("norm", "linf") == "linf" and step_size > 1:
            raise ConfigError(
                f"Attack {name!r}: step_size={step_size} is above 1, but images are on the "
                f"[0, 1] scale; did you mean {step_size:g}/255 = {step_size / 255:.6f}?"
            )
    for field in ("steps", "restarts", "binary_search_steps", "num_pairs"):
        value = given.get(field)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, numbers.Integral)
        ):
            raise ConfigError(f"Attack {name!r}: {field} must be an int, got {value!r}.")


def resolved(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's options with the attack's defaults filled in (for descriptions, checks);
    `target` is kept for targeted specs."""
    name, given, target = _split(spec)
    defaults = {
        k: p.default
        for k, p in _parameters(name).items()
        if p.default is not inspect.Parameter.empty
    }
    return {**defaults, **given, **({"target": target} if target else {})}


def make_attack(spec: Mapping[str, Any]) -> AttackFn:
    """The attack a spec names, as `(logits_fn, x, y, key) -> x_adv`.

    Args:
      spec: {"name": one of `ATTACKS`, **options of that attack}; "none" returns x. The
        option `target` ("random" or "least_likely") makes the attack targeted, with targets
        drawn from y (true labels) and the key.

    Returns:
      attack(logits_fn, x (N, H, W, C) float in [0, 1], y (N,) int, key) -> x_adv like x.
      Attacks without randomness ignore the key.

    Raises:
      ValueError: unknown name or option, or a required option missing.
    """
    name, kwargs, target = _split(spec)
    fn = ATTACKS[name].fn
    if fn is None:
        return lambda logits_fn, x, y, key: x
    takes_key = "key" in inspect.signature(fn).parameters

    def attack(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array) -> jax.Array:
        if target is not None:
            y = targets(target, logits_fn, x, y, jax.random.fold_in(key, _TARGET_SALT))
        if takes_key:
            return fn(logits_fn, x, y, key=key, **kwargs)
        return fn(logits_fn, x, y, **kwargs)

    return attack


def stops_early_from_host(spec: Mapping[str, Any]) -> bool:
    """Whether the attack drops each example once it is broken, driven from the host outside
    jit (`pgd`'s `early_stop`; SPSA's freezes examples inside one program)."""
    return attack_name(spec) == "pgd" and bool(options(spec).get("early_stop"))


def kind(spec: Mapping[str, Any]) -> str:
    """One of `KINDS`: what sort of evidence the attack gives (used by the sanity checks)."""
    name = attack_name(spec)
    if name == "stadv" and resolved(spec).get("max_flow") is not None:
        return "iterative"
    return ATTACKS[name].kind


def budget(spec: Mapping[str, Any]) -> tuple[str | None, float | None]:
    """(norm, eps) of the threat model the attack stays in; eps None when unbounded.

    The norm is "linf" or "l2" for norm-ball attacks, "l2" for CW/DDN (minimal L2, no
    bound), "flow" for stAdv (its `max_flow`, if any), None for "none".
    """
    name = attack_name(spec)
    opts = resolved(spec)
    if name == "none":
        return None, None
    if name in ("cw", "ddn"):
        return "l2", None
    if name == "stadv":
        flow = opts.get("max_flow")
        return "flow", None if flow is None else float(flow)
    return opts.get("norm", "linf"), float(opts["eps"])


def _steps(opts: Mapping[str, Any]) -> str:
    return str(opts.get("steps", ""))


def describe(spec: Mapping[str, Any]) -> str:
    """A short name like the papers' column headers: "PGD-40", "MI-FGSM-20", "CW-L2"."""
    text = _describe(attack_name(spec), resolved(spec))
    return f"{text} (targeted)" if target_mode(spec) else text


def _describe(name: str, o: Mapping[str, Any]) -> str:
    l2 = " (L2)" if o.get("norm") == "l2" else ""
    restarts = int(o.get("restarts", 1) or 1)
    if name == "none":
        return "Clean"
    if name == "fgsm":
        return "FGM (L2)" if l2 else "FGSM"
    if name == "pgd":
        base = f"PGD-{_steps(o)}" if o.get("random_start", True) else f"BIM-{_steps(o)}"
        return base + l2 + (f" ({restarts} restarts)" if restarts > 1 else "")
    if name == "mifgsm":
        return f"MI-FGSM-{_steps(o)}{l2}"
    if name == "ti_dim":
        return f"TI-DIM-{_steps(o)}{l2}"
    if name == "apgd":
        return f"APGD-{str(o.get('loss', 'ce')).upper()}-{_steps(o)}{l2}"
    if name == "apgd_t":
        return f"APGD-T-{_steps(o)}{l2}"
    if name == "fab":
        return ("FAB-T" if o.get("targeted", True) else "FAB") + l2
    if name == "cw":
        return "CW-L2"
    if name == "ddn":
        return f"DDN-{_steps(o)}"
    if name == "stadv":
        return "stAdv"
    if name == "square":
        plural = "s" if restarts > 1 else ""
        return f"Square{' L2' if l2 else ''} ({o['steps']} q, {restarts} restart{plural})"
    if name == "spsa":
        return f"SPSA-{_steps(o)}{l2}"
    if name == "autoattack":
        return f"AutoAttack ({o.get('version', 'standard')}){l2}"
    raise AssertionError(name)


def training_attack(
    spec: Mapping[str, Any],
    field: str,
    *,
    names: tuple[str, ...] | None = None,
    unroll: bool | int | None = None,
) -> AttackFn:
    """The attack a trainer crafts its adversarial examples with, built and checked here.

    Trainers (HGD, APE-GAN, CAP-GAN's domain A) take the returned function and call it
    inside their jitted step, so everything is checked now, at the edge: the name (one of
    `names` when given), the options against the attack's signature, and the budget (an
    attack with an `eps` must be given one, above 0 and on the [0, 1] scale). The attack
    itself does not validate its inputs inside `jit` (`validate=False`).

    Args:
      spec: {"name": ..., **options}, as in `make_attack`.
      field: the config field the spec comes from, named in every error message.
      names: the attacks this trainer allows (None: any of `ATTACKS`).
      unroll: the attack's loop unrolling, for attacks that take it.

    Returns:
      attack(logits_fn, x, y, key) -> x_adv, a constant (`stop_gradient`).

    Raises:
      ValueError (ConfigError): an unknown or disallowed attack, an unknown option, a
        missing or off-scale eps, a non-integer step count.
    """
    raw = plain(spec).get("name") if isinstance(spec, Mapping) or hasattr(spec, "to_dict") else None
    name = _ALIASES.get(raw, raw)
    allowed = tuple(ATTACKS) if names is None else names
    if name not in allowed or ATTACKS.get(name, _Entry(None, "none")).fn is None:
        raise ConfigError(
            f"Unknown training attack {raw!r} in {field}.name; choose one of {allowed}."
        )
    try:
        given = options(spec)
    except ConfigError as err:
        raise ConfigError(f"{field}: {err}") from None
    _require_budget(name, given, field)
    internal = {"validate": False, "unroll": unroll}
    attack = make_attack(
        {**plain(spec), **{k: v for k, v in internal.items() if k in _parameters(name)}}
    )

    def craft(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array) -> jax.Array:
        return jax.lax.stop_gradient(attack(logits_fn, x, y, key))

    return craft


def _require_budget(name: str, given: Mapping[str, Any], field: str) -> None:
    """A training attack with an `eps` must be given one above 0 (the suite allows eps 0)."""
    if "eps" in _parameters(name) and not given.get("eps", 0) > 0:
        raise ConfigError(
            f"{field}.eps must be above 0 on the [0, 1] pixel scale (8/255, not 8); got "
            f"{given.get('eps')!r}."
        )


def feature_attack(
    spec: Mapping[str, Any], field: str, *, unroll: bool | int | None = None
) -> FeatureAttackFn:
    """CAFD's training attack, CAFA (`capjax.attacks.cafa`), built from its spec and checked
    with the same rules as `training_attack`.

    CAFA attacks class activation features, not logits, and uses no labels, so it is not in
    `ATTACKS` and the suite cannot name it.

    Args:
      spec: {"name": "cafa" (optional), **options of `capjax.attacks.cafa`}, e.g.
        {"eps": 8/255, "step_size": 0.01, "steps": 100}.
      field: the config field the spec comes from, named in every error message.
      unroll: the attack's loop unrolling.

    Returns:
      attack(class_activation_fn, x, key) -> x_adv, a constant (`stop_gradient`).

    Raises:
      ValueError (ConfigError): another name, an unknown option, a missing or off-scale eps,
        a non-integer step count.
    """
    given = {str(k): plain(v) for k, v in plain(spec).items()}
    name = given.pop("name", FEATURE_ATTACK)
    if name != FEATURE_ATTACK:
        raise ConfigError(
            f"Unknown training attack {name!r} in {field}.name; CAFD trains on {FEATURE_ATTACK!r}."
        )
    params = _parameters(name)
    unknown = sorted(set(given) - set(params))
    if unknown:
        raise ConfigError(
            f"{field}: Unknown option(s) {unknown} for attack {name!r}; it accepts "
            f"{sorted(params)}."
        )
    try:
        _check_values(name, given)
    except ConfigError as err:
        raise ConfigError(f"{field}: {err}") from None
    _require_budget(name, given, field)
    kwargs = {**given, "validate": False, "unroll": unroll}

    def craft(class_activation_fn: Callable, x: jax.Array, key: jax.Array) -> jax.Array:
        return jax.lax.stop_gradient(attacks.cafa(class_activation_fn, x, key=key, **kwargs))

    return craft
