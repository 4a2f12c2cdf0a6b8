"""CAP-GAN: cycle-consistent attentional purification (Kang, Tran, Cho & Kim, IJCNN 2021).

Two attentional generators, T_A->C (the purifier) and T_C->A, and two discriminators, D_C and
D_A (`capjax.models.capgan_nets`), learn to translate between the adversarial domain A and the
clean domain C, CycleGAN style, with pixel-level terms (LSGAN, identity, cycle) and
feature-level terms (CAM, semantic distillation from the frozen target classifier f).

How the gaps of the paper's text are filled (`docs/sources.md`; each is an option):
- Domain A: PGD (L-inf, eps 8/255) against f on the current training batch, crafted inside
  the jitted step, fresh at every step: x_adv and x are paired, which L_sem needs.
- L_sem (end of Section III-C, missing from the text): Hinton et al.'s distillation,
  T^2 * KL(softmax(f(x)/T) || softmax(f(T_A->C(x_adv))/T)), with f frozen; best T = 10.
- alpha (best 0.7): L_T = alpha * L_pixel + (1 - alpha) * L_feature (`combine="alpha"`);
  `combine="sum"` adds the weighted terms as U-GAT-IT does.
- Which term is which: L_pixel = w_adv * L_GAN + w_cyc * L_cyc + w_id * L_identity, where
  L_GAN scores the discriminators' convolutional classifiers; L_feature = L_cam + w_sem *
  L_sem, where L_cam holds the generator's part of Section III-C's CAM loss (w_cam * BCE of
  eta_T, w_adv * LSGAN of eta_D on the translated images). The discriminators' own CAM terms
  (L_cam^D) join their LSGAN loss.
- LSGAN labels: real -> 1, fake -> 0 for the discriminators, fake -> 1 for the generators
  (U-GAT-IT's). The paper prints the opposite labelling (real -> 0), which is the same game
  mirrored; the BCE of eta_T follows the paper's sign convention with its typo fixed
  (-E log eta(x_adv) - E log(1 - eta(x)) for T_A->C).
- U-GAT-IT facts: Adam lr 1e-4, betas (0.5, 0.999), weight decay 1e-4, linear decay over the
  second half; weights adversarial 1, cycle 10, identity 10, CAM 1000; rho of every
  (Ada)ILN clipped to [0, 1] after each update; one discriminator step (with fakes from the
  current generators), then one generator step against the updated discriminators.
- Ablations (Table VI): `use_cam`, `use_sem`, `use_cycle` switch terms off. Without the
  cycle, the T_C->A(T_A->C(.)) passes are skipped, so T_A->C no longer sees T_C->A's outputs
  (the paper: "without cycle-consistent learning in both pixel-level and feature-level").
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
    training_batch,
)

COMBINES = ("alpha", "sum")
DOMAIN_ATTACKS = ("pgd", "fgsm", "mifgsm")


def lsgan_loss(outputs: jax.Array, target: float) -> jax.Array:
    """Least-squares GAN loss: mean (outputs - target)^2, float32 scalar."""
    return jnp.mean(jnp.square(outputs.astype(jnp.float32) - target))


def bce_with_logits(logits: jax.Array, target: float) -> jax.Array:
    """Mean binary cross-entropy of sigmoid(logits) against a constant label in {0, 1}."""
    z = logits.astype(jnp.float32)
    return jnp.mean(target * jax.nn.softplus(-z) + (1 - target) * jax.nn.softplus(z))


def l1_loss(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean absolute difference, float32 scalar."""
    return jnp.mean(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))


def semantic_loss(
    teacher_logits: jax.Array, student_logits: jax.Array, temperature: float
) -> jax.Array:
    """L_sem: T^2 * KL(softmax(teacher/T) || softmax(student/T)), batch mean (Hinton et al.).

    Args:
      teacher_logits: (N, K) f(x) on clean images (treated as constants).
      student_logits: (N, K) f(T_A->C(x_adv)).
      temperature: T > 0.

    Returns:
      Scalar float32 >= 0; exactly 0 when the two logits agree.
    """
    teacher = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)) / temperature
    student = student_logits.astype(jnp.float32) / temperature
    p = jax.nn.softmax(teacher, axis=-1)
    kl = jnp.sum(p * (jax.nn.log_softmax(teacher, -1) - jax.nn.log_softmax(student, -1)), -1)
    return temperature**2 * jnp.mean(kl)


def discriminator_loss(real_outputs, fake_outputs, *, use_cam: bool) -> tuple[jax.Array, ...]:
    """One domain's LSGAN losses: (conv classifier part, eta_D part), summed over scales.

    Args:
      real_outputs, fake_outputs: lists over scales of (patch_logits, cam_logits, heatmap).
      use_cam: whether eta_D is trained (L_cam^D); its part is 0 otherwise.
    """
    pairs = list(zip(real_outputs, fake_outputs, strict=True))
    gan = sum(lsgan_loss(r[0], 1.0) + lsgan_loss(f[0], 0.0) for r, f in pairs)
    cam = sum(lsgan_loss(r[1], 1.0) + lsgan_loss(f[1], 0.0) for r, f in pairs)
    return gan, (cam if use_cam else jnp.zeros((), jnp.float32))


def rho_clipped(params: Any) -> Any:
    """Every parameter leaf named `rho` (the (Ada)ILN mixing weights) clipped to [0, 1]."""

    def clip(path, leaf):
        name = getattr(path[-1], "key", None)
        return jnp.clip(leaf, 0.0, 1.0) if name == "rho" else leaf

    return jax.tree_util.tree_map_with_path(clip, params)


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """The weights of every CAP-GAN term (defaults: U-GAT-IT's and the paper's best).

    Attributes:
      adversarial: LSGAN weight (also of the eta_D terms).
      cycle, identity: L1 weights.
      cam: weight of the generators' eta_T BCE.
      semantic: weight of L_sem inside L_feature.
      alpha: L_T = alpha * L_pixel + (1 - alpha) * L_feature when combine == "alpha".
      temperature: L_sem's T.
      combine: "alpha" or "sum" (L_pixel + L_feature).
      use_cam, use_sem, use_cycle: the ablation switches of Table VI.
    """

    adversarial: float = 1.0
    cycle: float = 10.0
    identity: float = 10.0
    cam: float = 1000.0
    semantic: float = 1.0
    alpha: float = 0.7
    temperature: float = 10.0
    combine: str = "alpha"
    use_cam: bool = True
    use_sem: bool = True
    use_cycle: bool = True

    def __post_init__(self):
        if self.combine not in COMBINES:
            raise ConfigError(f"Unknown combine {self.combine!r}; choose one of {COMBINES}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha={self.alpha} must lie in [0, 1].")
        if self.temperature <= 0:
            raise ConfigError(f"temperature={self.temperature} must be positive.")
        for name in ("adversarial", "cycle", "identity", "cam", "semantic"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss weight {name}={getattr(self, name)} must be >= 0.")

    def total(self, pixel: jax.Array, feature: jax.Array) -> jax.Array:
        if self.combine == "sum":
            return pixel + feature
        return self.alpha * pixel + (1.0 - self.alpha) * feature


@flax.struct.dataclass
class CAPGANState:
    """Both generators ({"a2c", "c2a"}), both discriminators ({"c", "a"}), the frozen f.

    The discriminators' `batch_stats` hold spectral normalisation's power-iteration vectors
    (empty without spectral norm). `target_variables` is only read; it travels in the state
    so the jitted step takes it as an argument rather than as embedded constants (see
    `capjax.defenses.cafd.CAFDState`).
    """

    step: jax.Array
    generator_params: Any
    generator_opt_state: Any
    discriminator_params: Any
    discriminator_stats: Any
    discriminator_opt_state: Any
    target_variables: Any


def make_purify(generator: nn.Module, params: Any) -> Callable[[jax.Array], jax.Array]:
    """purify(x) = T_A->C(x): (N, H, W, C) float in [0, 1] -> same shape, float32 in [0, 1]."""

    def purify(x: jax.Array) -> jax.Array:
        if x.ndim != 4 or not jnp.issubdtype(x.dtype, jnp.floating):
            raise ConfigError(
                f"purify expects (N, H, W, C) float images in [0, 1], got shape "
                f"{tuple(x.shape)} and dtype {x.dtype}."
            )
        return generator.apply({"params": params}, x)

    return purify


@dataclasses.dataclass
class CAPGANTrainer(CraftsAgainstFrozenTarget):
    """The pure pieces of CAP-GAN training, for the generic loop and for tests.

    Attributes:
      generator: T (`AttentionGenerator`); both directions share the architecture.
      discriminator: one domain's D (`MultiScaleDiscriminator`); D_C and D_A share it.
      target: the frozen classifier f (capjax zoo interface).
      target_variables: f's {"params", "batch_stats"}.
      generator_tx, discriminator_tx: one optimizer over both generators, one over both
        discriminators (U-GAT-IT's).
      weights: the loss weights and ablation switches.
      schedule: the generators' learning-rate schedule, logged (None: not logged).
      attack: crafts domain A, (logits_fn, x, y, key) -> x_adv, built by
        `capjax.attack_specs.training_attack` from one of `DOMAIN_ATTACKS` (default:
        PGD-10, eps 8/255).
    """

    generator: nn.Module
    discriminator: nn.Module
    target: nn.Module
    target_variables: Any
    generator_tx: optax.GradientTransformation
    discriminator_tx: optax.GradientTransformation
    weights: LossWeights = LossWeights()
    schedule: optax.Schedule | None = None
    attack: AttackFn = dataclasses.field(default_factory=default_training_attack)

    # -- networks ---------------------------------------------------------------------------

    def init_state(self, key: jax.Array, image_shape: tuple[int, ...]) -> CAPGANState:
        """Fresh T_A->C, T_C->A, D_C, D_A for images of `image_shape` (H, W, C), and f."""
        keys = jax.random.split(key, 4)
        x = jnp.zeros((1, *image_shape), jnp.float32)
        g_params = {
            "a2c": self.generator.init(keys[0], x)["params"],
            "c2a": self.generator.init(keys[1], x)["params"],
        }
        d_vars = {
            "c": self.discriminator.init(keys[2], x),
            "a": self.discriminator.init(keys[3], x),
        }
        d_params = {k: v["params"] for k, v in d_vars.items()}
        return CAPGANState(
            step=jnp.zeros((), jnp.int32),
            generator_params=g_params,
            generator_opt_state=self.generator_tx.init(g_params),
            discriminator_params=d_params,
            discriminator_stats={k: v.get("batch_stats", {}) for k, v in d_vars.items()},
            discriminator_opt_state=self.discriminator_tx.init(d_params),
            target_variables=self.target_variables,
        )

    def translate(self, params: Any, x: jax.Array):
        """T(x) with attention: (x_out, cam_logits (N, 2), heatmap (N, h, w))."""
        return self.generator.apply({"params": params}, x, return_attention=True)

    def discriminate(self, params: Any, stats: Any, x: jax.Array, update_stats: bool):
        """D(x): (list over scales of (patch_logits, cam_logits, heatmap), new stats)."""
        variables = {"params": params, "batch_stats": stats}
        if not update_stats:
            return self.discriminator.apply(variables, x), stats
        outputs, updates = self.discriminator.apply(
            variables, x, update_stats=True, mutable=["batch_stats"]
        )
        return outputs, updates.get("batch_stats", stats)

    # -- losses -----------------------------------------------------------------------------

    def discriminator_losses(self, d_params, d_stats, g_params, x, x_adv):
        """L_D (both domains) with fakes from the current generators; (loss, (terms, stats))."""
        fake_c = jax.lax.stop_gradient(self.translate(g_params["a2c"], x_adv)[0])
        fake_a = jax.lax.stop_gradient(self.translate(g_params["c2a"], x)[0])
        stats = dict(d_stats)
        terms = {}
        for domain, real, fake in (("c", x, fake_c), ("a", x_adv, fake_a)):
            real_out, stats[domain] = self.discriminate(d_params[domain], stats[domain], real, True)
            fake_out, stats[domain] = self.discriminate(d_params[domain], stats[domain], fake, True)
            gan, cam = discriminator_loss(real_out, fake_out, use_cam=self.weights.use_cam)
            terms[f"d_gan_{domain}"], terms[f"d_cam_{domain}"] = gan, cam
        w = self.weights.adversarial
        loss = w * sum(terms.values())
        return loss, (terms, stats)

    def generator_losses(self, g_params, d_params, d_stats, target_variables, x, x_adv):
        """L_T and its terms: (loss, (terms dict, purified T_A->C(x_adv)))."""
        w = self.weights
        zero = jnp.zeros((), jnp.float32)
        fake_c, cam_a2c, _ = self.translate(g_params["a2c"], x_adv)  # eta_T_A: from A -> 1
        fake_a, cam_c2a, _ = self.translate(g_params["c2a"], x)  # eta_T_C: from C -> 1
        same_c, cam_cc, _ = self.translate(g_params["a2c"], x)  # identity: from C -> 0
        same_a, cam_aa, _ = self.translate(g_params["c2a"], x_adv)  # identity: from A -> 0

        d_fake_c, _ = self.discriminate(d_params["c"], d_stats["c"], fake_c, False)
        d_fake_a, _ = self.discriminate(d_params["a"], d_stats["a"], fake_a, False)
        gan = sum(lsgan_loss(o[0], 1.0) for o in d_fake_c + d_fake_a)
        identity = l1_loss(same_c, x) + l1_loss(same_a, x_adv)
        cycle = zero
        if w.use_cycle:
            cycle_a = self.translate(g_params["c2a"], fake_c)[0]
            cycle_c = self.translate(g_params["a2c"], fake_a)[0]
            cycle = l1_loss(cycle_a, x_adv) + l1_loss(cycle_c, x)
        cam_t = cam_d = zero
        if w.use_cam:
            cam_t = (
                bce_with_logits(cam_a2c, 1.0)
                + bce_with_logits(cam_cc, 0.0)
                + bce_with_logits(cam_c2a, 1.0)
                + bce_with_logits(cam_aa, 0.0)
            )
            cam_d = sum(lsgan_loss(o[1], 1.0) for o in d_fake_c + d_fake_a)
        semantic = zero
        if w.use_sem:
            semantic = semantic_loss(
                self.classify(target_variables, x),
                self.classify(target_variables, fake_c),
                w.temperature,
            )
        pixel = w.adversarial * gan + w.cycle * cycle + w.identity * identity
        feature = w.cam * cam_t + w.adversarial * cam_d + w.semantic * semantic
        loss = w.total(pixel, feature)
        terms = {
            "g_gan": gan,
            "g_identity": identity,
            "g_cycle": cycle,
            "g_cam_t": cam_t,
            "g_cam_d": cam_d,
            "g_semantic": semantic,
            "g_pixel": pixel,
            "g_feature": feature,
        }
        return loss, (terms, fake_c)

    def term_coefficients(self) -> dict[str, float]:
        """Each generator term's factor in L_T (its weight times alpha or 1 - alpha)."""
        w = self.weights
        pixel, feature = float(w.total(1.0, 0.0)), float(w.total(0.0, 1.0))
        return {
            "g_gan": pixel * w.adversarial,
            "g_cycle": pixel * w.cycle * w.use_cycle,
            "g_identity": pixel * w.identity,
            "g_cam_t": feature * w.cam * w.use_cam,
            "g_cam_d": feature * w.adversarial * w.use_cam,
            "g_semantic": feature * w.semantic * w.use_sem,
        }

    def term_gradients(self, state: CAPGANState, x: jax.Array, x_adv: jax.Array) -> dict:
        """{term: the gradient of its weighted part of L_T on both generators' parameters}.

        The weighted terms add up to L_T, so these gradients add up to L_T's: this shows
        which term steers the generators (`python -m capjax.bench capgan --term-gradients`).
        """
        args = (state.discriminator_params, state.discriminator_stats, state.target_variables)

        def weighted(name: str, coefficient: float):
            def loss(g_params):
                return coefficient * self.generator_losses(g_params, *args, x, x_adv)[1][0][name]

            return jax.grad(loss)(state.generator_params)

        return {name: weighted(name, c) for name, c in self.term_coefficients().items()}

    # -- the step ---------------------------------------------------------------------------

    def train_step(
        self, state: CAPGANState, batch: dict[str, jax.Array], key: jax.Array
    ) -> tuple[CAPGANState, dict[str, jax.Array]]:
        """Domain A, a step of both D, a step of both T: (state, batch, key) -> (state, metrics).

        Args:
          state: the current `CAPGANState`.
          batch: {"image": (N, H, W, C) uint8 or float in [0, 1], "label": (N,) int}; the
            labels drive the domain attack and the accuracy metrics.
          key: this step's randomness (the domain attack's random start).

        Returns:
          The new state and float32 scalar metrics: d_loss, g_loss, every term of both,
          adversarial_accuracy (f on x_adv), purified_accuracy (f on T_A->C(x_adv)),
          pixel_mse of the purified images against x, and learning_rate if a schedule is set.
        """
        x, labels = training_batch(batch)
        target_variables = state.target_variables
        x_adv = self.craft(target_variables, x, labels, key)

        d_grad_fn = jax.value_and_grad(self.discriminator_losses, has_aux=True)
        (d_loss, (d_terms, d_stats)), d_grads = d_grad_fn(
            state.discriminator_params,
            state.discriminator_stats,
            state.generator_params,
            x,
            x_adv,
        )
        d_updates, d_opt_state = self.discriminator_tx.update(
            d_grads, state.discriminator_opt_state, state.discriminator_params
        )
        d_params = optax.apply_updates(state.discriminator_params, d_updates)

        g_grad_fn = jax.value_and_grad(self.generator_losses, has_aux=True)
        (g_loss, (g_terms, purified)), g_grads = g_grad_fn(
            state.generator_params, d_params, d_stats, target_variables, x, x_adv
        )
        g_updates, g_opt_state = self.generator_tx.update(
            g_grads, state.generator_opt_state, state.generator_params
        )
        g_params = rho_clipped(optax.apply_updates(state.generator_params, g_updates))

        new_state = CAPGANState(
            step=state.step + 1,
            generator_params=g_params,
            generator_opt_state=g_opt_state,
            discriminator_params=d_params,
            discriminator_stats=d_stats,
            discriminator_opt_state=d_opt_state,
            target_variables=target_variables,
        )
        purified = jax.lax.stop_gradient(purified)
        metrics = {
            "d_loss": d_loss,
            "g_loss": g_loss,
            **d_terms,
            **g_terms,
            "adversarial_accuracy": self._accuracy(target_variables, x_adv, labels),
            "purified_accuracy": self._accuracy(target_variables, purified, labels),
            "pixel_mse": jnp.mean(jnp.square(purified - x)),
        }
        if self.schedule is not None:
            metrics["learning_rate"] = self.schedule(state.step)
        return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

    def _accuracy(self, target_variables: Any, x: jax.Array, labels: jax.Array) -> jax.Array:
        return jnp.mean(jnp.argmax(self.classify(target_variables, x), -1) == labels)

    def purify(self, state: CAPGANState) -> Callable[[jax.Array], jax.Array]:
        """T_A->C of `state`: the purifier."""
        return make_purify(self.generator, state.generator_params["a2c"])
