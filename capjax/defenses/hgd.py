"""HGD: high-level representation guided denoiser (Liao et al., CVPR 2018), a baseline.

The DUNET denoiser (`capjax.models.denoiser.DUNet`, the network CAFD borrowed from HGD) is
trained so that the frozen target classifier f responds to the denoised adversarial image
as it responds to the clean one: the loss is the L1 distance between a high-level
representation of f on C(x_adv) and on x (Section 3.2 of the paper):
- `loss="logits"` (default): LGD, the logits ("the best" of the paper's guided denoisers);
- `loss="features"`: FGD, the last convolutional feature map of f.
The distance is the mean absolute difference over the representation's elements and the
batch, as in the authors' code (`torch.abs(a - b).mean()`); the clean side is a constant.

Training examples: the paper trained on FGSM/IFGSM examples of ImageNet classifiers, made
offline. Here they are crafted against f inside every jitted step (PGD L-inf eps 8/255,
step 2/255, 10 iterations by default; the CAFD paper trained its HGD on non-targeted CW-L2
examples against VGG-19 (its Section 4.2), the CAP-GAN paper on "PGD or CW examples as in
the papers"; any of `purifier_parts.TRAINING_ATTACKS`, built and checked by
`capjax.attack_specs.training_attack`).
Optimizer: Adam lr 1e-3 by default (the paper's), built by the task from config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from capjax.attack_specs import AttackFn
from capjax.core.errors import ConfigError
from capjax.defenses.purifier_parts import (
    CraftsAgainstFrozenTarget,
    TargetFn,
    default_training_attack,
    frozen_target_fn,
    make_purify,
    training_batch,
)

GUIDED_LOSSES = ("logits", "features")


def guided_loss(
    target_fn: TargetFn, x_hat: jax.Array, x_clean: jax.Array, *, layer: str = "logits"
) -> jax.Array:
    """HGD's loss: mean |f_l(x_hat) - f_l(x_clean)| for the representation l of the target f.

    Args:
      target_fn: x -> (logits, last conv features), e.g. `frozen_target_fn(model, variables)`.
      x_hat: (N, H, W, C) denoised images C(x_adv).
      x_clean: (N, H, W, C) clean images x (a constant: no gradient flows through it).
      layer: "logits" (LGD) or "features" (FGD).

    Returns:
      Scalar float32, the mean over the representation's elements and the batch; exactly 0
      when x_hat == x_clean.
    """
    if layer not in GUIDED_LOSSES:
        raise ConfigError(f"Unknown HGD loss {layer!r}; choose one of {GUIDED_LOSSES}.")
    index = 0 if layer == "logits" else 1
    clean = jax.lax.stop_gradient(target_fn(x_clean)[index]).astype(jnp.float32)
    hat = target_fn(x_hat)[index].astype(jnp.float32)
    return jnp.mean(jnp.abs(hat - clean))


@flax.struct.dataclass
class HGDState:
    """The denoiser's training state, and the frozen target's variables (only read; they
    travel in the state so that jit does not embed them as constants, see `CAFDState`)."""

    step: jax.Array
    denoiser_params: Any
    denoiser_batch_stats: Any
    denoiser_opt_state: Any
    target_variables: Any

    @property
    def denoiser_variables(self) -> dict[str, Any]:
        return {"params": self.denoiser_params, "batch_stats": self.denoiser_batch_stats}


@dataclasses.dataclass
class HGDTrainer(CraftsAgainstFrozenTarget):
    """The pure pieces of HGD training, for the generic loop and for tests.

    Attributes:
      denoiser: C, e.g. `DUNet()`; `apply(variables, x, train)` -> x_hat in [0, 1].
      target: the pretrained classifier f (capjax zoo interface: `return_features`).
      target_variables: f's {"params", "batch_stats"}, never changed.
      tx: C's optimizer.
      schedule: C's learning-rate schedule, logged as `learning_rate` (None: not logged).
      loss: "logits" (LGD, default) or "features" (FGD).
      attack: crafts the training examples, (logits_fn, x, y, key) -> x_adv, built by
        `capjax.attack_specs.training_attack` (default: PGD-10, eps 8/255).
    """

    denoiser: nn.Module
    target: nn.Module
    target_variables: Any
    tx: optax.GradientTransformation
    schedule: optax.Schedule | None = None
    loss: str = "logits"
    attack: AttackFn = dataclasses.field(default_factory=default_training_attack)

    def __post_init__(self):
        if self.loss not in GUIDED_LOSSES:
            raise ConfigError(f"Unknown hgd.loss {self.loss!r}; choose one of {GUIDED_LOSSES}.")

    def init_state(self, key: jax.Array, image_shape: tuple[int, ...]) -> HGDState:
        """A fresh denoiser for images of `image_shape` (H, W, C), and f's variables."""
        variables = self.denoiser.init(key, jnp.zeros((1, *image_shape), jnp.float32))
        return HGDState(
            step=jnp.zeros((), jnp.int32),
            denoiser_params=variables["params"],
            denoiser_batch_stats=variables.get("batch_stats", {}),
            denoiser_opt_state=self.tx.init(variables["params"]),
            target_variables=self.target_variables,
        )

    def target_fn(self, target_variables: Any) -> TargetFn:
        """x -> (logits, features) of f in eval mode, behind stop_gradient."""
        return frozen_target_fn(self.target, target_variables)

    def denoiser_loss(self, params, batch_stats, target_variables, x_adv, x):
        """(HGD loss of C(x_adv) against x, (x_hat, updated batch_stats)); C in train mode."""
        x_hat, updates = self.denoiser.apply(
            {"params": params, "batch_stats": batch_stats},
            x_adv,
            train=True,
            mutable=["batch_stats"],
        )
        loss = guided_loss(self.target_fn(target_variables), x_hat, x, layer=self.loss)
        return loss, (x_hat, updates["batch_stats"])

    def train_step(
        self, state: HGDState, batch: dict[str, jax.Array], key: jax.Array
    ) -> tuple[HGDState, dict[str, jax.Array]]:
        """Training examples, then one step of C: (state, batch, key) -> (state, metrics).

        Args:
          state: the current `HGDState`.
          batch: {"image": (N, H, W, C) uint8 (or float in [0, 1]), "label": (N,) int}; the
            labels drive the attack and the accuracy metrics.
          key: this step's randomness (the attack's random start).

        Returns:
          The new state and float32 scalar metrics: loss (the HGD loss of C(x_adv)),
          adversarial_loss (the same distance for x_adv itself: the undefended baseline),
          pixel_mse (C(x_adv) against x), adversarial_accuracy and denoised_accuracy (f on
          x_adv and on C(x_adv)), and learning_rate if a schedule is set.
        """
        x, labels = training_batch(batch)
        target_variables = state.target_variables
        x_adv = self.craft(target_variables, x, labels, key)

        grad_fn = jax.value_and_grad(self.denoiser_loss, has_aux=True)
        (loss, (x_hat, batch_stats)), grads = grad_fn(
            state.denoiser_params, state.denoiser_batch_stats, target_variables, x_adv, x
        )
        updates, opt_state = self.tx.update(grads, state.denoiser_opt_state, state.denoiser_params)
        params = optax.apply_updates(state.denoiser_params, updates)
        new_state = HGDState(
            step=state.step + 1,
            denoiser_params=params,
            denoiser_batch_stats=batch_stats,
            denoiser_opt_state=opt_state,
            target_variables=target_variables,
        )
        x_hat = jax.lax.stop_gradient(x_hat)
        target_fn = self.target_fn(target_variables)
        metrics = {
            "loss": loss,
            "adversarial_loss": guided_loss(target_fn, x_adv, x, layer=self.loss),
            "pixel_mse": jnp.mean(jnp.square(x_hat - x)),
            "adversarial_accuracy": self._accuracy(target_fn, x_adv, labels),
            "denoised_accuracy": self._accuracy(target_fn, x_hat, labels),
        }
        if self.schedule is not None:
            metrics["learning_rate"] = self.schedule(state.step)
        return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

    @staticmethod
    def _accuracy(target_fn: TargetFn, x: jax.Array, labels: jax.Array) -> jax.Array:
        return jnp.mean(jnp.argmax(target_fn(x)[0], axis=-1) == labels)

    def purify(self, state: HGDState) -> Callable[[jax.Array], jax.Array]:
        """The eval-mode purifier of `state`'s denoiser: (N, H, W, C) -> same, in [0, 1]."""
        return make_purify(self.denoiser, state.denoiser_variables)
