"""PGD adversarial training of a classifier (Madry et al., ICLR 2018), the AT baseline.

A classifier config's `train.adversarial` section, `{"steps": 0, "eps": 8/255,
"step_size": 2/255, "random_start": True}`, turns it on when `steps > 0`: every train step
replaces its (augmented) batch by PGD-`steps` L-inf examples crafted against the current
parameters, and the gradient step is taken on those alone (Madry et al.'s objective, no mix
of clean examples). The CAP-GAN paper's AT baseline is PGD-7, eps 8/255, step 2/255
(`configs/classifier_cifar.py:adv`).

BatchNorm while crafting: train mode (batch statistics), with the running averages the
attack's forward passes would produce thrown away, so only the step on the adversarial batch
moves them. This is the closest to Madry et al.'s TensorFlow code, whose attack ran the
training graph; many PyTorch repositories craft in eval mode (running averages) instead,
which early in training attacks a network quite unlike the one being trained (the running
averages start at 0 and 1). Dropout, if the model has any, is on, with its own key.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from capjax import attack_specs
from capjax.core.errors import ConfigError

FIELD = "train.adversarial"


def _check(steps: Any, eps: Any, step_size: Any) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ConfigError(f"{FIELD}.steps={steps!r} must be an int >= 0 (0: off).")
    if steps > 0:  # the budget, checked as every attack spec is
        attack_specs.training_attack(
            {"name": "pgd", "eps": eps, "step_size": step_size, "steps": steps}, FIELD
        )


@dataclasses.dataclass(frozen=True)
class AdversarialTraining:
    """PGD L-inf examples of each training batch against the current parameters.

    Attributes:
      steps: PGD iterations (>= 1; a config's 0 means no adversarial training at all).
      eps, step_size: budget and step on the [0, 1] pixel scale.
      random_start: start from a uniform point of the eps-ball (Madry et al.'s).
      unroll: PGD's loop unrolling (`capjax.attacks._common.attack_loop`).
    """

    steps: int = 7
    eps: float = 8 / 255
    step_size: float = 2 / 255
    random_start: bool = True
    unroll: bool | int | None = None

    def __post_init__(self):
        _check(self.steps, self.eps, self.step_size)
        if self.steps < 1:
            raise ConfigError("AdversarialTraining needs steps >= 1 (use None for none).")

    @classmethod
    def from_config(cls, train_config) -> AdversarialTraining | None:
        """The `train.adversarial` section's setting; None when absent or `steps == 0`.

        Raises:
          ValueError: a negative or non-integer `steps`, or eps/step_size off the [0, 1] scale.
        """
        a = train_config.get("adversarial")
        if a is None:
            return None
        _check(a.steps, a.eps, a.step_size)
        if a.steps == 0:
            return None
        return cls(steps=a.steps, eps=a.eps, step_size=a.step_size, random_start=a.random_start)

    def attack(self) -> attack_specs.AttackFn:
        """This PGD as `(logits_fn, x, y, key) -> x_adv`, built by `capjax.attack_specs`."""
        spec = {
            "name": "pgd",
            "eps": self.eps,
            "step_size": self.step_size,
            "steps": self.steps,
            "random_start": self.random_start,
        }
        return attack_specs.training_attack(spec, FIELD, names=("pgd",), unroll=self.unroll)

    def describe(self) -> str:
        """E.g. "pgd-7 linf eps 8/255 step 2/255 random start": names the setting in a
        checkpoint's fingerprint, so standard and adversarial runs never resume each other."""
        start = " random start" if self.random_start else ""
        return (
            f"pgd-{self.steps} linf eps {self.eps * 255:.4g}/255 step "
            f"{self.step_size * 255:.4g}/255{start}"
        )

    def perturb(
        self, model: Any, variables: Any, x: jax.Array, y: jax.Array, key: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """(x_adv, clean logits) for the batch x (N, H, W, C) in [0, 1], labels y (N,).

        Both come from `model` in train mode on `variables` with the batch-statistics updates
        discarded (module docstring); x_adv is a constant within eps of x in L-inf and in
        [0, 1]; the clean logits (N, K) serve the clean-accuracy metric.
        """
        variables = jax.lax.stop_gradient(variables)
        attack_key, dropout_key = jax.random.split(key)

        def logits_fn(v: jax.Array) -> jax.Array:
            logits, _ = model.apply(
                variables, v, train=True, mutable=["batch_stats"], rngs={"dropout": dropout_key}
            )
            return logits

        return self.attack()(logits_fn, x, y, attack_key), logits_fn(x)

    def test_attack(self, logits_fn: Any, key: jax.Array) -> Any:
        """(x, y) -> x_adv: this PGD against an eval-mode `logits_fn`, for test accuracy."""

        craft = self.attack()
        return lambda x, y: craft(logits_fn, x, y, key)


def adversarial_fingerprint(train_config) -> str:
    """The string "none", or the `describe()` of the config's adversarial training."""
    setting = AdversarialTraining.from_config(train_config)
    return "none" if setting is None else setting.describe()
