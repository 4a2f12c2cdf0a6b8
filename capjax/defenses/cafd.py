"""CAFD: removing adversarial noise in class activation feature space (Zhou et al., ICCV 2021).

A denoiser C (`capjax.models.denoiser.DUNet`) is trained against a frozen, pretrained target
classifier P by a max-min game (Section 3, Algorithms 1 and 2): CAFA examples x~ maximise the
distance between the class activation features of x~ and of the clean x
(`capjax.attacks.feature.cafa`); C minimises that distance for C(x~) (Eq. 6 or Eq. 7), plus a
relativistic average GAN loss from an image discriminator D (Eq. 8-10).

Reading of the paper's ambiguous points (each is an option):
- Eq. 6, which class's CAM: Phi_x is defined with x's predicted class c_x (Section 3.2). For
  the restored image the default (`cam_classes="clean"`) also uses c_x, the class C should
  restore: the loss is then a smooth function of C(x~) instead of jumping when the restored
  prediction flips. `"own"` uses each image's own argmax, the literal per-image reading and
  CAFA's. Either way the argmax carries no gradient.
- Eq. 7, differentiability: with argmax rows (the authors' code) delta(W_x, W_C(x~)) has no
  gradient at all. The default `class_weights="softmax"` replaces each row by its expectation
  under the softmax of the logits, on both sides, so the term pulls C(x~)'s prediction
  towards x's and is exactly zero when C(x~) = x. `"argmax"` reproduces the authors.
- Eq. 8-9 print one term without the batch average; the "relativistic average" GAN (their
  [16]) with BCE, as in ESRGAN (whose 5e-3 weight the authors kept), averages a real and a
  fake term, each against the mean logit of the other side. That form is used.

Facts from the authors' code (dwDavidxd/CAFD, `docs/sources.md`) used as defaults: CAFA with
eps 8/255, step 0.01, 100 iterations, random start; Eq. 7 as 1e3 x MSE of the upsampled
last-conv features + 1e-3 x MSE of the class weight rows; GAN weight 5e-3; Adam lr 1e-3 with
PyTorch-style L2 weight decay 2e-4 (`optax.chain(optax.add_decayed_weights(2e-4),
optax.adam(schedule))`) for both networks, lr x0.3 after epochs 40, 50, 60 of 70, batch 300;
one discriminator step, then one denoiser step, per batch.

Where capjax departs from the authors' code (`train_or_test_denoiser.py`,
`networks/denoiser.py`), by choice:
- CAFA examples are made afresh against P at every training step, from the batch's clean
  images (Algorithm 1 inside Algorithm 2). The authors attack the training set once, save
  the pairs as .npy files, and train on those fixed pairs for all 70 epochs.
- One Adam state per network for the whole run. The authors build new Adam optimisers at
  the start of every epoch (inside `train(epoch)`), which resets Adam's moments each epoch.
- BatchNorm keeps PyTorch's default running-average weight (flax momentum 0.9, PyTorch
  0.1). The authors' denoiser sets PyTorch momentum 0.9, i.e. each batch's statistics
  weigh 0.9 in the running estimate (flax momentum 0.1).
- P's features are, by default, the map its head pools (after the last BatchNorm and
  ReLU), and CAFA's maps are normalised after upsampling. The authors hook the last
  convolution's output, before BatchNorm, and normalise before upsampling: both are options
  (`feature_source="last_conv"`, `cam_normalize_order="before_upsampling"`). Measured on
  real CIFAR-10 (`configs/cifar_cpu.py:validation`, 273 steps with CAFA-10, 2,000 held-out
  images, one run each), capjax's choices against the authors' two: purified clean 80.6%
  against 79.35% (a paired McNemar z of 2.7), white-box PGD-40 then purify 51.45% against
  50.7% (z 1.3), BPDA-I PGD-40 14.55% against 15.55% (z -1.9). Neither purifies better
  under attack, and the default keeps the higher clean accuracy (docs/cifar_cpu.md).
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

from capjax.attack_specs import FeatureAttackFn, feature_attack
from capjax.attacks.feature import (
    NORMALIZE_ORDERS,
    class_activation_features,
    class_activation_features_fn,
    class_activation_maps,
    feature_distance,
)
from capjax.core.errors import ConfigError
from capjax.defenses.purifier_parts import (
    FEATURE_SOURCES,
    TargetFn,
    check_choice,
    frozen_target_fn,
    make_purify,
    training_batch,
)

LOSS_FORMS = ("eq6", "eq7")
CLASS_WEIGHTS = ("softmax", "argmax")
CAM_CLASSES = ("clean", "own")
CAM_KINDS = ("features", "map")
# Eq. 10 weights. lambda1 = 1e3 on CIFAR-10 and 1e2 on SVHN; lambda2 = 5e-3 (authors' code).
LAMBDA_CAF_CIFAR10 = 1e3
LAMBDA_CAF_SVHN = 1e2
LAMBDA_ADV = 5e-3
# Eq. 7's class-weight term relative to its feature term: the authors weight them 1e-3 and
# 1e3 in absolute terms, i.e. 1e-6 inside L_caf once lambda1 = 1e3 multiplies it.
EQ7_WEIGHT_SCALE = 1e-6

Size = tuple[int, int] | str | None
# CAFA as the authors' code runs it: eps 8/255, step 0.01, 100 iterations, random start.
AUTHORS_CAFA = {"eps": 8 / 255, "step_size": 0.01, "steps": 100}


def default_cafa() -> FeatureAttackFn:
    """The authors' CAFA, built: a trainer's attack when none is given."""
    return feature_attack(AUTHORS_CAFA, "cafd.attack")


def _out_size(size: Size, x: jax.Array) -> tuple[int, int] | None:
    return tuple(x.shape[1:3]) if size == "input" else size


def caf_loss_eq6(
    target_fn: TargetFn,
    head_kernel: jax.Array,
    x_hat: jax.Array,
    x_clean: jax.Array,
    *,
    cam_classes: str = "clean",
    kind: str = "features",
    size: Size = "input",
    normalize: str | None = "per_image",
    normalize_order: str = "after_upsampling",
) -> jax.Array:
    """Eq. 6: MSE between the class activation features of the restored and the clean image.

    The representation is CAFA's (`capjax.attacks.feature.class_activation_features`: ReLU,
    bilinear upsampling, min-max normalisation), so the denoiser minimises the very distance
    the attack maximises (Eq. 1/2). The clean side is a constant.

    Args:
      target_fn: x -> (logits, features), e.g. `frozen_target_fn(model, variables)`.
      head_kernel: (C', K) kernel of the target's final linear layer.
      x_hat: (N, H, W, C) restored images C(x~).
      x_clean: (N, H, W, C) clean images x.
      cam_classes: "clean" (both sides use x's predicted class) or "own" (each image its own
        predicted class); see the module docstring.
      kind: "features" (per-channel Phi, the paper's) or "map" (their channel sum, the CAM).
      size: "input", (H, W) or None (the feature map's resolution).
      normalize, normalize_order: as in CAFA (`class_activation_features`).

    Returns:
      Scalar float32, the batch mean; exactly 0 when x_hat == x_clean.
    """
    check_choice("cam_classes", cam_classes, CAM_CLASSES)
    check_choice("kind", kind, CAM_KINDS)
    compute = class_activation_features if kind == "features" else class_activation_maps
    kernel = jax.lax.stop_gradient(head_kernel)
    clean_logits, clean_features = jax.lax.stop_gradient(target_fn(x_clean))
    hat_logits, hat_features = target_fn(x_hat)
    clean_classes = jnp.argmax(clean_logits, axis=-1)
    hat_classes = clean_classes
    if cam_classes == "own":
        hat_classes = jnp.argmax(jax.lax.stop_gradient(hat_logits), axis=-1)
    options = dict(
        size=_out_size(size, x_hat), normalize=normalize, normalize_order=normalize_order
    )
    phi_clean = compute(clean_features, kernel, clean_classes, **options)
    phi_hat = compute(hat_features, kernel, hat_classes, **options)
    return jnp.mean(feature_distance(phi_hat, phi_clean, "mse"))


def _class_weight_rows(logits: jax.Array, kernel: jax.Array, class_weights: str) -> jax.Array:
    """(N, C') class weights W_x: the argmax class's kernel column, or its softmax mean."""
    if class_weights == "argmax":
        classes = jnp.argmax(jax.lax.stop_gradient(logits), axis=-1)
        return jnp.take(kernel, classes, axis=1).T
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1) @ kernel.T


def caf_loss_eq7(
    target_fn: TargetFn,
    head_kernel: jax.Array,
    x_hat: jax.Array,
    x_clean: jax.Array,
    *,
    class_weights: str = "softmax",
    weight_scale: float = EQ7_WEIGHT_SCALE,
    size: Size = "input",
) -> jax.Array:
    """Eq. 7: delta(F_x, F_C(x~)) + weight_scale * delta(W_x, W_C(x~)), both MSE.

    F is the target's last conv feature map, bilinearly upsampled to `size` (the authors'
    code upsamples it to 32x32; upsampling only reweights the MSE). W is the class weight row
    of the predicted class (`"argmax"`, the authors': no gradient) or its expectation under
    the softmax of the logits (`"softmax"`, default: differentiable), the same on both sides.

    Args:
      target_fn, head_kernel, x_hat, x_clean: as in `caf_loss_eq6`.
      class_weights: "softmax" or "argmax".
      weight_scale: relative weight of the class term (default: the authors' 1e-3 / 1e3).
      size: "input", (H, W) or None.

    Returns:
      Scalar float32, the batch mean; exactly 0 when x_hat == x_clean.
    """
    check_choice("class_weights", class_weights, CLASS_WEIGHTS)
    kernel = jax.lax.stop_gradient(head_kernel).astype(jnp.float32)
    clean_logits, clean_features = jax.lax.stop_gradient(target_fn(x_clean))
    hat_logits, hat_features = target_fn(x_hat)
    out_size = _out_size(size, x_hat)

    def upsample(features: jax.Array) -> jax.Array:
        features = features.astype(jnp.float32)
        if out_size is None:
            return features
        return jax.image.resize(
            features, features.shape[:1] + out_size + features.shape[3:], "bilinear"
        )

    feature_term = feature_distance(upsample(hat_features), upsample(clean_features), "mse")
    weight_term = feature_distance(
        _class_weight_rows(hat_logits, kernel, class_weights),
        _class_weight_rows(clean_logits, kernel, class_weights),
        "mse",
    )
    return jnp.mean(feature_term + weight_scale * weight_term)


def ragan_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """Eq. 8, relativistic average GAN with BCE, for the discriminator.

    0.5 * (BCE(D(x) - mean D(C(x~)), 1) + BCE(D(C(x~)) - mean D(x), 0)), batch means.

    Args:
      real_logits: (N,) raw discriminator outputs D(x) on clean images.
      fake_logits: (M,) raw outputs D(C(x~)) on restored images.

    Returns:
      Scalar float32.
    """
    real = real_logits.astype(jnp.float32)
    fake = fake_logits.astype(jnp.float32)
    # BCE with logits: -log sigmoid(z) = softplus(-z), -log(1 - sigmoid(z)) = softplus(z).
    real_term = jnp.mean(jax.nn.softplus(-(real - jnp.mean(fake))))
    fake_term = jnp.mean(jax.nn.softplus(fake - jnp.mean(real)))
    return 0.5 * (real_term + fake_term)


def ragan_generator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """Eq. 9, the denoiser's RaGAN loss: Eq. 8 with the roles of real and fake swapped.

    Args: as `ragan_discriminator_loss` (gradients flow through `fake_logits`).

    Returns:
      Scalar float32.
    """
    return ragan_discriminator_loss(fake_logits, real_logits)


def cafd_denoiser_loss(
    caf_loss: jax.Array,
    adv_loss: jax.Array,
    *,
    lambda_caf: float = LAMBDA_CAF_CIFAR10,
    lambda_adv: float = LAMBDA_ADV,
) -> jax.Array:
    """Eq. 10: L_C = lambda1 * L_caf + lambda2 * L_adv (CIFAR-10: 1e3, 5e-3; SVHN 1e2)."""
    return lambda_caf * caf_loss + lambda_adv * adv_loss


@flax.struct.dataclass
class CAFDState:
    """Training state of the denoiser C and the discriminator D, and the frozen target P.

    `target_variables` never changes: the step only reads it. It travels in the state so
    that the jitted step receives it as an argument. Closed over instead, jax.jit embeds it
    in the compiled program as constants (measured for VGG-19's 20M parameters: 160 MB of
    HLO text and 3x the compile time of one forward pass).
    """

    step: jax.Array
    denoiser_params: Any
    denoiser_batch_stats: Any
    denoiser_opt_state: Any
    discriminator_params: Any
    discriminator_batch_stats: Any
    discriminator_opt_state: Any
    target_variables: Any

    @property
    def denoiser_variables(self) -> dict[str, Any]:
        return {"params": self.denoiser_params, "batch_stats": self.denoiser_batch_stats}

    @property
    def discriminator_variables(self) -> dict[str, Any]:
        return {
            "params": self.discriminator_params,
            "batch_stats": self.discriminator_batch_stats,
        }


@dataclasses.dataclass
class CAFDTrainer:
    """The pure pieces of CAFD training (Algorithm 2), for the generic loop and for tests.

    The target classifier P is frozen: its variables, given here, are copied into the state
    by `init_state` and only read by the step (`CAFDState` says why they travel there), with
    `train=False` behind `stop_gradient`, so neither its params nor its batch statistics ever
    change. Optimizers and the schedule are inputs so that the task code builds them from
    config (defaults in the module docstring).

    Attributes:
      denoiser: C, e.g. `DUNet()`; `apply(variables, x, train)` -> x_hat in [0, 1].
      discriminator: D, e.g. `CAFDDiscriminator()`; `apply(variables, x, train)` -> (N,).
      target: the pretrained classifier P (capjax zoo interface, final layer named `head`).
      target_variables: P's {"params", "batch_stats"}.
      denoiser_tx, discriminator_tx: optimizers of C and D.
      schedule: C's learning-rate schedule, logged as `learning_rate` (None: not logged).
      loss_form: "eq7" (the paper's CAFD, default) or "eq6" (the paper's CAFD').
      class_weights: Eq. 7's "softmax" (default) or "argmax" (the authors').
      eq7_weight_scale: Eq. 7's class-term weight inside L_caf.
      cam_classes: Eq. 6's "clean" (default) or "own"; see the module docstring.
      cam_kind, cam_size, cam_normalize: the class activation representation of CAFA and
        Eq. 6 ("features", "input", "per_image"; "batch" is the authors' normalisation).
      cam_normalize_order: "after_upsampling" (default) or "before_upsampling" (the
        authors'), for CAFA and Eq. 6 (Eq. 7 compares unnormalised features).
      feature_source: P's features for CAFA and L_caf, "head_input" (default) or
        "last_conv" (the authors'); see `frozen_target_fn`.
      lambda_caf, lambda_adv: Eq. 10's lambda1 and lambda2.
      attack: CAFA, (class_activation_fn, x, key) -> x_adv, built by
        `capjax.attack_specs.feature_attack` (default: the authors' eps 8/255, step 0.01,
        100 iterations).
    """

    denoiser: nn.Module
    discriminator: nn.Module
    target: nn.Module
    target_variables: Any
    denoiser_tx: optax.GradientTransformation
    discriminator_tx: optax.GradientTransformation
    schedule: optax.Schedule | None = None
    loss_form: str = "eq7"
    class_weights: str = "softmax"
    eq7_weight_scale: float = EQ7_WEIGHT_SCALE
    cam_classes: str = "clean"
    cam_kind: str = "features"
    cam_size: Size = "input"
    cam_normalize: str | None = "per_image"
    cam_normalize_order: str = "after_upsampling"
    feature_source: str = "head_input"
    lambda_caf: float = LAMBDA_CAF_CIFAR10
    lambda_adv: float = LAMBDA_ADV
    attack: FeatureAttackFn = dataclasses.field(default_factory=default_cafa)

    def __post_init__(self):
        check_choice("loss_form", self.loss_form, LOSS_FORMS)
        check_choice("class_weights", self.class_weights, CLASS_WEIGHTS)
        check_choice("cam_classes", self.cam_classes, CAM_CLASSES)
        check_choice("cam_kind", self.cam_kind, CAM_KINDS)
        check_choice("feature_source", self.feature_source, FEATURE_SOURCES)
        check_choice("cam_normalize_order", self.cam_normalize_order, NORMALIZE_ORDERS)
        if "head" not in self.target_variables.get("params", {}):
            raise ConfigError(
                "target_variables['params'] has no 'head' layer; CAFD needs the final linear "
                "layer's kernel (capjax zoo classifiers name it 'head')."
            )

    def _target_fn(self, target_variables: Any) -> TargetFn:
        return frozen_target_fn(self.target, target_variables, self.feature_source)

    def _check_target_features(self, x: jax.Array) -> None:
        """Fails before any compilation unless P gives (logits, last conv features) for x."""
        name = type(self.target).__name__
        try:
            out = jax.eval_shape(self._target_fn(self.target_variables), x)
        except TypeError as error:
            raise ConfigError(
                f"The target classifier {name} cannot return its features ({error}). CAFD "
                "needs `model.apply(variables, x, train=False, return_features=True)` -> "
                "(logits, features (N, h, w, C)), as every capjax zoo classifier gives."
            ) from error
        if not (isinstance(out, tuple) and len(out) == 2 and out[1].ndim == 4):
            raise ConfigError(
                f"The target classifier {name} with return_features=True gave {out}; CAFD "
                "needs (logits (N, K), last conv features (N, h, w, C))."
            )

    def init_state(self, key: jax.Array, image_shape: tuple[int, ...]) -> CAFDState:
        """Fresh C and D for images of `image_shape` (H, W, C), and P's variables."""
        denoiser_key, discriminator_key = jax.random.split(key)
        x = jnp.zeros((1, *image_shape), jnp.float32)
        self._check_target_features(x)
        c_vars = self.denoiser.init(denoiser_key, x)
        d_vars = self.discriminator.init(discriminator_key, x)
        return CAFDState(
            step=jnp.zeros((), jnp.int32),
            denoiser_params=c_vars["params"],
            denoiser_batch_stats=c_vars.get("batch_stats", {}),
            denoiser_opt_state=self.denoiser_tx.init(c_vars["params"]),
            discriminator_params=d_vars["params"],
            discriminator_batch_stats=d_vars.get("batch_stats", {}),
            discriminator_opt_state=self.discriminator_tx.init(d_vars["params"]),
            target_variables=self.target_variables,
        )

    def craft(self, target_variables: Any, x: jax.Array, key: jax.Array) -> jax.Array:
        """CAFA examples (Algorithm 1) for clean x (N, H, W, C) in [0, 1], against P."""
        caf_fn = class_activation_features_fn(
            self._target_fn(target_variables),
            target_variables["params"]["head"]["kernel"],
            kind=self.cam_kind,
            size=self.cam_size,
            normalize=self.cam_normalize,
            normalize_order=self.cam_normalize_order,
        )
        return self.attack(caf_fn, x, key)

    def caf_loss(self, target_variables: Any, x_hat: jax.Array, x: jax.Array) -> jax.Array:
        """L_caf of the configured form (Eq. 6 or Eq. 7), scalar float32."""
        target_fn = self._target_fn(target_variables)
        kernel = target_variables["params"]["head"]["kernel"]
        if self.loss_form == "eq6":
            return caf_loss_eq6(
                target_fn,
                kernel,
                x_hat,
                x,
                cam_classes=self.cam_classes,
                kind=self.cam_kind,
                size=self.cam_size,
                normalize=self.cam_normalize,
                normalize_order=self.cam_normalize_order,
            )
        return caf_loss_eq7(
            target_fn,
            kernel,
            x_hat,
            x,
            class_weights=self.class_weights,
            weight_scale=self.eq7_weight_scale,
            size=self.cam_size,
        )

    def _discriminate(self, params, batch_stats, x):
        """D in train mode (batch statistics): (logits, updated batch_stats)."""
        logits, updates = self.discriminator.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        return logits, updates["batch_stats"]

    def train_step(
        self, state: CAFDState, batch: dict[str, jax.Array], key: jax.Array
    ) -> tuple[CAFDState, dict[str, jax.Array]]:
        """CAFA, one D step (Eq. 8), one C step (Eq. 10): (state, batch, key) -> (state, metrics).

        Args:
          state: the current `CAFDState`.
          batch: {"image": (N, H, W, C) uint8 (or float in [0, 1]), "label": (N,) int};
            labels only feed the accuracy metrics (CAFD itself is label-free).
          key: randomness of this step (CAFA's random start).

        Returns:
          The new state and float32 scalar metrics: d_loss, g_loss (Eq. 10), caf_loss,
          gan_loss (Eq. 9), adversarial_caf_loss (L_caf of x~ itself, the undefended
          baseline), pixel_mse (x_hat vs x), adversarial_accuracy and
          denoised_accuracy of P on x~ and C(x~), and learning_rate if a schedule is set.
        """
        x, labels = training_batch(batch)
        target_variables = state.target_variables
        x_adv = self.craft(target_variables, x, key)

        # One forward of C serves both updates, as in the authors' loop: D sees the detached
        # output, and C's gradient is pulled back through the same forward's VJP.
        def denoise(params):
            variables = {"params": params, "batch_stats": state.denoiser_batch_stats}
            x_hat, updates = self.denoiser.apply(
                variables, x_adv, train=True, mutable=["batch_stats"]
            )
            return x_hat, updates["batch_stats"]

        x_hat, denoise_vjp, denoiser_stats = jax.vjp(denoise, state.denoiser_params, has_aux=True)

        # Real and fake in separate passes, as in the authors' PyTorch loop: each batch is
        # normalised by its own statistics, and the running averages move twice.
        def d_loss_fn(params):
            real, stats = self._discriminate(params, state.discriminator_batch_stats, x)
            fake, stats = self._discriminate(params, stats, jax.lax.stop_gradient(x_hat))
            return ragan_discriminator_loss(real, fake), stats

        (d_loss, d_stats), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
            state.discriminator_params
        )
        d_updates, d_opt_state = self.discriminator_tx.update(
            d_grads, state.discriminator_opt_state, state.discriminator_params
        )
        d_params = optax.apply_updates(state.discriminator_params, d_updates)

        # C's step sees the updated D (PyTorch order: D.step() before C's loss). D runs on
        # batch statistics, as a PyTorch module in train mode; its running averages belong
        # to D's own step, so the ones this pass would produce are dropped.
        def g_loss_fn(x_hat):
            real, _ = self._discriminate(d_params, d_stats, x)
            fake, _ = self._discriminate(d_params, d_stats, x_hat)
            gan = ragan_generator_loss(jax.lax.stop_gradient(real), fake)
            caf = self.caf_loss(target_variables, x_hat, x)
            total = cafd_denoiser_loss(
                caf, gan, lambda_caf=self.lambda_caf, lambda_adv=self.lambda_adv
            )
            return total, (caf, gan)

        (g_loss, (caf, gan)), x_hat_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(x_hat)
        (c_grads,) = denoise_vjp(x_hat_grad)
        c_updates, c_opt_state = self.denoiser_tx.update(
            c_grads, state.denoiser_opt_state, state.denoiser_params
        )
        c_params = optax.apply_updates(state.denoiser_params, c_updates)

        new_state = CAFDState(
            step=state.step + 1,
            denoiser_params=c_params,
            denoiser_batch_stats=denoiser_stats,
            denoiser_opt_state=c_opt_state,
            discriminator_params=d_params,
            discriminator_batch_stats=d_stats,
            discriminator_opt_state=d_opt_state,
            target_variables=target_variables,
        )
        metrics = {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "caf_loss": caf,
            "gan_loss": gan,
            "adversarial_caf_loss": self.caf_loss(target_variables, x_adv, x),
            "pixel_mse": jnp.mean(jnp.square(x_hat - x)),
            "adversarial_accuracy": self._accuracy(target_variables, x_adv, labels),
            "denoised_accuracy": self._accuracy(target_variables, x_hat, labels),
        }
        if self.schedule is not None:
            metrics["learning_rate"] = self.schedule(state.step)
        return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

    def _accuracy(self, target_variables: Any, x: jax.Array, labels: jax.Array) -> jax.Array:
        logits, _ = frozen_target_fn(self.target, target_variables)(jax.lax.stop_gradient(x))
        return jnp.mean(jnp.argmax(logits, axis=-1) == labels)

    def purify(self, state: CAFDState) -> Callable[[jax.Array], jax.Array]:
        """The eval-mode purifier of `state`'s denoiser."""
        return make_purify(self.denoiser, state.denoiser_variables)
