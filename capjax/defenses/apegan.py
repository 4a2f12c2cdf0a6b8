"""APE-GAN: adversarial perturbation elimination with a GAN (Shen et al., 2017), a baseline.

A generator G (`capjax.models.apegan_nets.APEGANGenerator`) maps adversarial images back to clean
ones; a discriminator D (`APEGANDiscriminator`) tells clean images from G's outputs. The
paper's losses (Section 3), with BCE on D's logits:
- D: BCE(D(x), 1) + BCE(D(G(x_adv)), 0);
- G: xi1 * MSE(G(x_adv), x) + xi2 * BCE(D(G(x_adv)), 1), xi1 = 0.7, xi2 = 0.3.
One D step, then one G step against the updated D, per batch; Adam lr 2e-4, beta1 0.5 for
both (the paper's; built by the task from config).

Training examples: the paper trained on FGSM examples made offline. Here they are crafted
against the frozen target f inside every jitted step: PGD L-inf eps 8/255, step 2/255, 10
iterations by default, or CW-L2 (`capjax.attacks.cw_l2`): the CAP-GAN paper says APE-GAN and
HGD were "trained on PGD or CW examples as in the papers"; the CAFD paper trained its
APE-G on non-targeted CW-L2 examples against VGG-19 (its Section 4.2). The labels only
drive the attack and the accuracy metrics.
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
    default_training_attack,
    make_purify,
    training_batch,
)

# The paper's loss weights (xi1, xi2).
MSE_WEIGHT = 0.7
GAN_WEIGHT = 0.3


def bce_with_logits(logits: jax.Array, target: float) -> jax.Array:
    """Mean binary cross-entropy of sigmoid(logits) against a constant label in {0, 1}."""
    z = logits.astype(jnp.float32)
    # -log sigmoid(z) = softplus(-z), -log(1 - sigmoid(z)) = softplus(z): stable for any z.
    return jnp.mean(target * jax.nn.softplus(-z) + (1 - target) * jax.nn.softplus(z))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """D's loss: BCE(D(x), 1) + BCE(D(G(x_adv)), 0), batch means, float32 scalar."""
    return bce_with_logits(real_logits, 1.0) + bce_with_logits(fake_logits, 0.0)


def generator_loss(
    x_hat: jax.Array,
    x: jax.Array,
    fake_logits: jax.Array,
    *,
    mse_weight: float = MSE_WEIGHT,
    gan_weight: float = GAN_WEIGHT,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """G's loss: mse_weight * MSE(G(x_adv), x) + gan_weight * BCE(D(G(x_adv)), 1).

    Args:
      x_hat: (N, H, W, C) G(x_adv).
      x: (N, H, W, C) clean images (constants).
      fake_logits: (N,) D(G(x_adv)).

    Returns:
      (total, (mse, gan)), float32 scalars; mse is the mean over pixels and the batch.
    """
    mse = jnp.mean(jnp.square(x_hat.astype(jnp.float32) - jax.lax.stop_gradient(x)))
    gan = bce_with_logits(fake_logits, 1.0)
    return mse_weight * mse + gan_weight * gan, (mse, gan)


@flax.struct.dataclass
class APEGANState:
    """G's and D's training states, and the frozen target's variables (only read; they travel
    in the state so that jit does not embed them as constants, see `CAFDState`)."""

    step: jax.Array
    generator_params: Any
    generator_batch_stats: Any
    generator_opt_state: Any
    discriminator_params: Any
    discriminator_batch_stats: Any
    discriminator_opt_state: Any
    target_variables: Any

    @property
    def generator_variables(self) -> dict[str, Any]:
        return {"params": self.generator_params, "batch_stats": self.generator_batch_stats}


@dataclasses.dataclass
class APEGANTrainer(CraftsAgainstFrozenTarget):
    """The pure pieces of APE-GAN training, for the generic loop and for tests.

    Attributes:
      generator: G, e.g. `APEGANGenerator()`; `apply(variables, x, train)` -> [0, 1] images.
      discriminator: D, e.g. `APEGANDiscriminator()`; `apply(variables, x, train)` -> (N,).
      target: the frozen classifier f (capjax zoo interface), attacked for the examples.
      target_variables: f's {"params", "batch_stats"}, never changed.
      generator_tx, discriminator_tx: optimizers of G and D.
      schedule: G's learning-rate schedule, logged (None: not logged).
      mse_weight, gan_weight: the paper's xi1 and xi2.
      attack: crafts the training examples, (logits_fn, x, y, key) -> x_adv, built by
        `capjax.attack_specs.training_attack` (default: PGD-10, eps 8/255).
    """

    generator: nn.Module
    discriminator: nn.Module
    target: nn.Module
    target_variables: Any
    generator_tx: optax.GradientTransformation
    discriminator_tx: optax.GradientTransformation
    schedule: optax.Schedule | None = None
    mse_weight: float = MSE_WEIGHT
    gan_weight: float = GAN_WEIGHT
    attack: AttackFn = dataclasses.field(default_factory=default_training_attack)

    def __post_init__(self):
        if self.mse_weight < 0 or self.gan_weight < 0:
            raise ConfigError(
                f"apegan loss weights must be >= 0, got mse {self.mse_weight}, "
                f"gan {self.gan_weight}."
            )

    def init_state(self, key: jax.Array, image_shape: tuple[int, ...]) -> APEGANState:
        """Fresh G and D for images of `image_shape` (H, W, C), and f's variables."""
        g_key, d_key = jax.random.split(key)
        x = jnp.zeros((1, *image_shape), jnp.float32)
        g_vars = self.generator.init(g_key, x)
        d_vars = self.discriminator.init(d_key, x)
        return APEGANState(
            step=jnp.zeros((), jnp.int32),
            generator_params=g_vars["params"],
            generator_batch_stats=g_vars.get("batch_stats", {}),
            generator_opt_state=self.generator_tx.init(g_vars["params"]),
            discriminator_params=d_vars["params"],
            discriminator_batch_stats=d_vars.get("batch_stats", {}),
            discriminator_opt_state=self.discriminator_tx.init(d_vars["params"]),
            target_variables=self.target_variables,
        )

    def generate(self, params: Any, batch_stats: Any, x_adv: jax.Array):
        """G(x_adv) in train mode: (x_hat, updated batch_stats)."""
        x_hat, updates = self.generator.apply(
            {"params": params, "batch_stats": batch_stats},
            x_adv,
            train=True,
            mutable=["batch_stats"],
        )
        return x_hat, updates["batch_stats"]

    def discriminate(self, params: Any, batch_stats: Any, x: jax.Array):
        """D(x) in train mode (batch statistics): (logits, updated batch_stats)."""
        logits, updates = self.discriminator.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        return logits, updates["batch_stats"]

    def discriminator_losses(self, d_params, d_stats, x, x_hat):
        """D's loss on clean x and detached G(x_adv): (loss, updated batch_stats).

        Real and fake go through D in separate passes, as in a PyTorch loop: each batch is
        normalised by its own statistics, and the running averages move twice.
        """
        real, d_stats = self.discriminate(d_params, d_stats, x)
        fake, d_stats = self.discriminate(d_params, d_stats, jax.lax.stop_gradient(x_hat))
        return discriminator_loss(real, fake), d_stats

    def generator_losses(self, g_params, g_stats, d_params, d_stats, x_adv, x):
        """G's loss against D: (loss, (mse, gan, x_hat, updated G batch_stats)).

        D runs on batch statistics, as a PyTorch module in train mode; its running averages
        belong to D's own step, so the ones this pass would produce are dropped.
        """
        x_hat, g_stats = self.generate(g_params, g_stats, x_adv)
        fake, _ = self.discriminate(d_params, d_stats, x_hat)
        loss, (mse, gan) = generator_loss(
            x_hat, x, fake, mse_weight=self.mse_weight, gan_weight=self.gan_weight
        )
        return loss, (mse, gan, x_hat, g_stats)

    def train_step(
        self, state: APEGANState, batch: dict[str, jax.Array], key: jax.Array
    ) -> tuple[APEGANState, dict[str, jax.Array]]:
        """Examples, one D step, one G step: (state, batch, key) -> (state, metrics).

        Args:
          state: the current `APEGANState`.
          batch: {"image": (N, H, W, C) uint8 (or float in [0, 1]), "label": (N,) int}.
          key: this step's randomness (the attack's random start).

        Returns:
          The new state and float32 scalar metrics: d_loss, g_loss, mse_loss (G(x_adv)
          against x) and gan_loss (G's two terms, unweighted), adversarial_mse (x_adv
          against x: the undefended baseline of mse_loss), adversarial_accuracy and
          purified_accuracy (f on x_adv and on G(x_adv)), and learning_rate if a schedule
          is set.
        """
        x, labels = training_batch(batch)
        target_variables = state.target_variables
        x_adv = self.craft(target_variables, x, labels, key)

        # D's fakes come from the current G in train mode, as in a PyTorch loop; G's running
        # averages are updated once, by G's own step below.
        x_fake, _ = self.generate(state.generator_params, state.generator_batch_stats, x_adv)
        d_grad_fn = jax.value_and_grad(self.discriminator_losses, has_aux=True)
        (d_loss, d_stats), d_grads = d_grad_fn(
            state.discriminator_params, state.discriminator_batch_stats, x, x_fake
        )
        d_updates, d_opt_state = self.discriminator_tx.update(
            d_grads, state.discriminator_opt_state, state.discriminator_params
        )
        d_params = optax.apply_updates(state.discriminator_params, d_updates)

        g_grad_fn = jax.value_and_grad(self.generator_losses, has_aux=True)
        (g_loss, (mse, gan, x_hat, g_stats)), g_grads = g_grad_fn(
            state.generator_params, state.generator_batch_stats, d_params, d_stats, x_adv, x
        )
        g_updates, g_opt_state = self.generator_tx.update(
            g_grads, state.generator_opt_state, state.generator_params
        )
        g_params = optax.apply_updates(state.generator_params, g_updates)

        new_state = APEGANState(
            step=state.step + 1,
            generator_params=g_params,
            generator_batch_stats=g_stats,
            generator_opt_state=g_opt_state,
            discriminator_params=d_params,
            discriminator_batch_stats=d_stats,
            discriminator_opt_state=d_opt_state,
            target_variables=target_variables,
        )
        x_hat = jax.lax.stop_gradient(x_hat)
        metrics = {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "mse_loss": mse,
            "gan_loss": gan,
            "adversarial_mse": jnp.mean(jnp.square(x_adv - x)),
            "adversarial_accuracy": self._accuracy(target_variables, x_adv, labels),
            "purified_accuracy": self._accuracy(target_variables, x_hat, labels),
        }
        if self.schedule is not None:
            metrics["learning_rate"] = self.schedule(state.step)
        return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

    def _accuracy(self, target_variables: Any, x: jax.Array, labels: jax.Array) -> jax.Array:
        return jnp.mean(jnp.argmax(self.classify(target_variables, x), -1) == labels)

    def purify(self, state: APEGANState) -> Callable[[jax.Array], jax.Array]:
        """G of `state` in eval mode: (N, H, W, C) float in [0, 1] -> same shape, in [0, 1]."""
        return make_purify(self.generator, state.generator_variables)
