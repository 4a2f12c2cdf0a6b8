"""HGD: the guided loss, where its gradients go, the train step and the purifier."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from capjax.attack_specs import training_attack
from capjax.defenses.hgd import HGDState, HGDTrainer, guided_loss
from capjax.defenses.purifier_parts import TRAINING_ATTACKS, frozen_target_fn
from capjax.models import get_classifier
from capjax.models.denoiser import DUNet

NUM_CLASSES = 10
SIZE = 16
STEP_DUNET = dict(widths=(8, 16, 16), encoder_blocks=(1, 1, 1), decoder_blocks=(1, 1))
ATTACK = {"name": "pgd", "eps": 8 / 255, "step_size": 4 / 255, "steps": 2}
# "rbg" keys: XLA:CPU compiles threefry's bit generator slowly (measured here, loaded 2-core
# machine: jit(init) of the tiny CNN 16 s with threefry keys, 2.6 s with rbg ones).
rbg_key = functools.partial(jax.random.key, impl="rbg")


def toy_batch(n: int, seed: int) -> dict[str, jax.Array]:
    """uint8 (n, 16, 16, 3) blocky class templates (4x4 blocks), brightness-jittered."""
    templates = np.random.default_rng(99).uniform(0.2, 0.8, (NUM_CLASSES, 4, 4, 3))
    templates = templates.repeat(4, axis=1).repeat(4, axis=2)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
    images = templates[labels] + rng.uniform(-0.15, 0.15, (n, 1, 1, 1))
    images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    return {"image": jnp.asarray(images), "label": jnp.asarray(labels)}


@pytest.fixture(scope="module")
def target():
    """(model, variables) of an untrained tiny BatchNorm CNN: the loss and the step only
    need some fixed f; training one would cost seconds and test nothing more here."""
    model = get_classifier("tiny", num_classes=NUM_CLASSES, widths=(8, 16))
    return model, jax.jit(model.init)(rbg_key(0), jnp.zeros((1, SIZE, SIZE, 3)))


def make_trainer(target, attack=ATTACK, **overrides) -> HGDTrainer:
    """A trainer whose attack is built from the spec `attack` as the HGD task builds it."""
    model, variables = target
    options = dict(
        denoiser=DUNet(**STEP_DUNET),
        target=model,
        target_variables=variables,
        tx=optax.adam(3e-3),
        schedule=optax.constant_schedule(3e-3),
        attack=training_attack(attack, "hgd.attack", names=TRAINING_ATTACKS),
    )
    options.update(overrides)
    return HGDTrainer(**options)


def test_guided_loss_hand_values():
    # A linear stand-in for f: logits = (s, -2 s) with s the pixel sum; features = red channel.
    def target_fn(x):
        s = x.sum(axis=(1, 2, 3))
        return jnp.stack([s, -2 * s], axis=-1), x[..., :1]

    x = jnp.full((2, 4, 4, 3), 0.5)
    x_hat = x + 0.1
    # Logits differ by 4.8 and 9.6 (48 pixels x 0.1): mean 7.2. Features by 0.1 everywhere.
    np.testing.assert_allclose(float(guided_loss(target_fn, x_hat, x)), 7.2, rtol=1e-5)
    np.testing.assert_allclose(
        float(guided_loss(target_fn, x_hat, x, layer="features")), 0.1, rtol=1e-5
    )
    assert float(guided_loss(target_fn, x, x)) == 0.0
    with pytest.raises(ValueError, match="logits"):
        guided_loss(target_fn, x, x, layer="labels")


def test_guided_loss_zero_at_the_clean_image_positive_elsewhere(target):
    fn = frozen_target_fn(*target)
    x = toy_batch(4, seed=1)["image"].astype(jnp.float32) / 255
    noisy = jnp.clip(x + 8 / 255 * jnp.sign(jax.random.normal(rbg_key(1), x.shape)), 0, 1)

    @jax.jit
    def losses(x, noisy):
        return {
            (layer, name): guided_loss(fn, z, x, layer=layer)
            for layer in ("logits", "features")
            for name, z in (("same", x), ("noisy", noisy))
        }

    values = losses(x, noisy)
    for layer in ("logits", "features"):
        same = values[layer, "same"]
        assert same.shape == () and same.dtype == jnp.float32 and float(same) == 0.0, layer
        assert float(values[layer, "noisy"]) > 0.0, layer


def test_gradients_reach_the_denoiser_never_the_target(target):
    _, variables = target
    # The smallest DUNet, with a random final layer so that every layer receives gradient
    # from the start.
    denoiser = DUNet(
        widths=(4, 8), encoder_blocks=(1, 1), decoder_blocks=(1,), zero_init_residual=False
    )
    trainers = {
        loss: make_trainer(target, loss=loss, denoiser=denoiser) for loss in ("logits", "features")
    }
    x = toy_batch(4, seed=2)["image"].astype(jnp.float32) / 255
    x_adv = jnp.clip(x + 8 / 255 * jnp.sign(jax.random.normal(rbg_key(2), x.shape)), 0, 1)
    c_vars = jax.jit(denoiser.init)(rbg_key(3), x)

    @jax.jit
    def grads(c_params, t_vars):
        def loss_fn(params, t_vars, trainer):
            return trainer.denoiser_loss(params, c_vars["batch_stats"], t_vars, x_adv, x)[0]

        grad_fn = jax.grad(loss_fn, argnums=(0, 1))
        return {loss: grad_fn(c_params, t_vars, t) for loss, t in trainers.items()}

    for loss, (c_grads, t_grads) in grads(c_vars["params"], variables).items():
        assert min(float(jnp.abs(g).max()) for g in jax.tree.leaves(c_grads)) > 0, loss
        assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(t_grads)), loss


@pytest.fixture(scope="module")
def trained(target):
    """(trainer, initial state, final state, per-step metrics) of 20 jitted steps."""
    trainer = make_trainer(target)
    step = jax.jit(trainer.train_step)
    state0 = jax.jit(trainer.init_state, static_argnums=1)(rbg_key(0), (SIZE, SIZE, 3))
    state, metrics = state0, []
    for i in range(20):
        state, m = step(state, toy_batch(32, seed=100 + i), rbg_key(i))
        metrics.append(jax.device_get(m))
    return trainer, state0, state, metrics


def test_train_step_learns_and_leaves_the_target_alone(target, trained):
    trainer, state0, state, metrics = trained
    assert isinstance(state, HGDState) and int(state.step) == 20
    for m in metrics:
        assert set(m) == {
            "loss",
            "adversarial_loss",
            "pixel_mse",
            "adversarial_accuracy",
            "denoised_accuracy",
            "learning_rate",
        }
        assert all(np.isfinite(v) and v.dtype == np.float32 for v in m.values())
    # The zero-initialised residual makes the untrained denoiser the identity: C(x_adv) = x_adv.
    first = metrics[0]
    assert first["loss"] == pytest.approx(first["adversarial_loss"], rel=1e-6)
    assert first["denoised_accuracy"] == first["adversarial_accuracy"]
    # A few steps already bring f's logits on C(x_adv) closer to those on x than x_adv's are.
    ratio = [m["loss"] / m["adversarial_loss"] for m in metrics[-5:]]
    assert np.mean(ratio) < 0.9, ratio
    # The denoiser moved; the target's variables are bit-for-bit the ones given.
    for name in ("denoiser_params", "denoiser_batch_stats"):
        moved = jax.tree.map(
            lambda a, b: bool(np.any(a != b)), getattr(state, name), getattr(state0, name)
        )
        assert any(jax.tree.leaves(moved)), name
    same = jax.tree.map(np.array_equal, state.target_variables, target[1])
    assert all(jax.tree.leaves(same))


def test_purify_is_the_eval_mode_denoiser_in_the_unit_box(trained):
    trainer, _, state, _ = trained
    x = toy_batch(4, seed=7)["image"].astype(jnp.float32) / 255
    out = jax.jit(trainer.purify(state))(x)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert float(jnp.abs(out - x).max()) > 0
    with pytest.raises(ValueError, match="float"):
        trainer.purify(state)(jnp.zeros((1, SIZE, SIZE, 3), jnp.uint8))


def test_configuration_errors_are_loud(target):
    with pytest.raises(ValueError, match="hgd.loss"):
        make_trainer(target, loss="kl")
    with pytest.raises(ValueError, match="8/255"):
        make_trainer(target, attack={**ATTACK, "eps": 8.0})
    with pytest.raises(ValueError, match="Unknown training attack"):
        make_trainer(target, attack={"name": "deepfool"})
    with pytest.raises(ValueError, match=r"hgd.attack: Unknown option\(s\) \['momentum'\]"):
        make_trainer(target, attack={**ATTACK, "momentum": 0.9})
