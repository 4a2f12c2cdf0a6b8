"""Parts every trained purifier shares: the frozen target classifier it trains against, the
attack that crafts its training examples against that target, and the trained network as a
purify function (CAFD, HGD, APE-GAN and CAP-GAN use them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from capjax import attack_specs
from capjax import data as data_lib
from capjax.core.errors import ConfigError

# (N, H, W, C) images -> (logits (N, K), last conv features (N, h, w, C')).
TargetFn = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
FEATURE_SOURCES = ("head_input", "last_conv")
# The attacks HGD and APE-GAN may train on (`capjax.attack_specs.training_attack` names).
TRAINING_ATTACKS = ("pgd", "fgsm", "cw")
DEFAULT_TRAINING_ATTACK = {"name": "pgd", "eps": 8 / 255, "step_size": 2 / 255, "steps": 10}


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"Unknown {name} {value!r}; choose one of {choices}.")


def _last_conv_output(model: nn.Module, variables: Any, x: jax.Array):
    """(logits, output of the last `nn.Conv` that `model` calls) in eval mode.

    The convolutions are recorded in call order as the model is traced (Flax calls the
    `capture_intermediates` filter at each module call), so "last" means last executed, not
    last declared. In a residual network that can be a shortcut projection.
    """
    called: list[tuple[str, ...]] = []

    def record_conv(module: nn.Module, method_name: str) -> bool:
        if isinstance(module, nn.Conv) and method_name == "__call__":
            called.append(tuple(module.scope.path))
            return True
        return False

    logits, state = model.apply(
        variables, x, train=False, capture_intermediates=record_conv, mutable=["intermediates"]
    )
    if not called:
        raise ConfigError(
            f"feature_source='last_conv': {type(model).__name__} calls no flax.linen.Conv, so "
            "there is no last convolution to take the features from."
        )
    node = state["intermediates"]
    for name in called[-1]:
        node = node[name]
    return logits, node["__call__"][0]


def frozen_target_fn(
    model: nn.Module, variables: Any, feature_source: str = "head_input"
) -> TargetFn:
    """x -> (logits, features) of a capjax classifier in eval mode, its variables constant.

    The variables pass through `stop_gradient`, so no gradient ever reaches the target, and
    `train=False` means its batch statistics are only read.

    Args:
      model, variables: a capjax zoo classifier (or any with the same interface).
      feature_source: "head_input" (default): the map the head pools, i.e. the model's
        `return_features=True` output, after the last BatchNorm and ReLU (CAM's definition);
        "last_conv": the output of the last convolution the model calls, before its
        BatchNorm (the authors' hook on the last `nn.Conv2d`).
    """
    check_choice("feature_source", feature_source, FEATURE_SOURCES)

    def target_fn(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        frozen = jax.lax.stop_gradient(variables)
        if feature_source == "last_conv":
            return _last_conv_output(model, frozen, x)
        return model.apply(frozen, x, train=False, return_features=True)

    return target_fn


def make_purify(denoiser: nn.Module, variables: Any) -> Callable[[jax.Array], jax.Array]:
    """purify(x): (N, H, W, C) float in [0, 1] -> x_hat, same shape, float32 in [0, 1].

    Eval mode: the denoiser's batch statistics are read, never updated.
    """

    def purify(x: jax.Array) -> jax.Array:
        if x.ndim != 4 or not jnp.issubdtype(x.dtype, jnp.floating):
            raise ConfigError(
                f"purify expects (N, H, W, C) float images in [0, 1], got shape "
                f"{tuple(x.shape)} and dtype {x.dtype}."
            )
        return denoiser.apply(variables, x, train=False)

    return purify


def training_batch(batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """(x float in [0, 1], labels) of a purifier's training batch, checked at trace time.

    Args:
      batch: {"image": (N, H, W, C) uint8 or float in [0, 1], "label": (N,) int}.
    """
    images = batch["image"]
    if images.ndim != 4:
        raise ConfigError(f"batch['image'] must be (N, H, W, C), got {tuple(images.shape)}.")
    return data_lib.to_float(images), batch["label"]


def default_training_attack() -> attack_specs.AttackFn:
    """PGD L-inf, eps 8/255, step 2/255, 10 iterations: a trainer's attack when none is given."""
    return attack_specs.training_attack(DEFAULT_TRAINING_ATTACK, "attack")


class CraftsAgainstFrozenTarget:
    """The target f and the training attack of a purifier's trainer (HGD, APE-GAN, CAP-GAN).

    A trainer dataclass mixes this in and has the fields `target` and `attack`, an attack
    built and checked by `capjax.attack_specs.training_attack`.
    """

    def classify(self, target_variables: Any, x: jax.Array) -> jax.Array:
        """f(x) in eval mode with frozen variables (no gradient reaches f)."""
        return self.target.apply(jax.lax.stop_gradient(target_variables), x, train=False)

    def craft(self, target_variables: Any, x: jax.Array, y: jax.Array, key) -> jax.Array:
        """The training examples: the trainer's attack against f, as constants."""
        return self.attack(lambda v: self.classify(target_variables, v), x, y, key)
