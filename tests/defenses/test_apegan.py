"""APE-GAN: the networks, the losses, where their gradients go, the train step, the purifier."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from capjax.attack_specs import training_attack
from capjax.defenses.apegan import (
    APEGANState,
    APEGANTrainer,
    bce_with_logits,
    discriminator_loss,
    generator_loss,
)
from capjax.defenses.purifier_parts import TRAINING_ATTACKS
from capjax.models import get_classifier
from capjax.models.apegan_nets import APEGANDiscriminator, APEGANGenerator

NUM_CLASSES = 10
SIZE = 16
SMALL_G = dict(widths=(8, 16))
SMALL_D = dict(widths=(8, 16, 16))
ATTACK = {"name": "pgd", "eps": 8 / 255, "step_size": 4 / 255, "steps": 2}
# "rbg" keys: XLA:CPU compiles threefry's bit generator slowly (see tests/defenses/test_hgd.py).
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
    """(model, variables) of an untrained tiny CNN: the step only needs some fixed f."""
    model = get_classifier("tiny", num_classes=NUM_CLASSES, widths=(8, 16))
    return model, jax.jit(model.init)(rbg_key(0), jnp.zeros((1, SIZE, SIZE, 3)))


def make_trainer(target, attack=ATTACK, **overrides) -> APEGANTrainer:
    """A trainer whose attack is built from the spec `attack` as the APE-GAN task builds it."""
    model, variables = target
    options = dict(
        generator=APEGANGenerator(**SMALL_G),
        discriminator=APEGANDiscriminator(**SMALL_D),
        target=model,
        target_variables=variables,
        # A larger step than the paper's 2e-4, so that 12 steps show learning.
        generator_tx=optax.adam(1e-2, b1=0.5),
        discriminator_tx=optax.adam(2e-3, b1=0.5),
        schedule=optax.constant_schedule(2e-3),
        attack=training_attack(attack, "apegan.attack", names=TRAINING_ATTACKS),
    )
    options.update(overrides)
    return APEGANTrainer(**options)


# --- networks -------------------------------------------------------------------------------


def test_paper_networks_have_the_papers_layers():
    x = jnp.zeros((2, 32, 32, 3))
    g = jax.eval_shape(APEGANGenerator().init, rbg_key(0), x)["params"]
    kernels = [g[name]["kernel"].shape for name in sorted(g) if name.startswith("Conv")]
    # conv s2 3->64, conv s2 64->128, (resize) conv 128->64, (resize) conv 64->3.
    assert kernels == [(3, 3, 3, 64), (3, 3, 64, 128), (3, 3, 128, 64), (3, 3, 64, 3)]
    assert [("bias" in g[f"Conv_{i}"]) for i in range(4)] == [False, False, False, True]
    assert sorted(n for n in g if n.startswith("BatchNorm")) == [f"BatchNorm_{i}" for i in range(3)]
    d = jax.eval_shape(APEGANDiscriminator().init, rbg_key(0), x)["params"]
    kernels = [d[f"Conv_{i}"]["kernel"].shape for i in range(3)]
    assert kernels == [(3, 3, 3, 64), (3, 3, 64, 128), (3, 3, 128, 256)]
    assert sorted(n for n in d if n.startswith("BatchNorm")) == ["BatchNorm_0", "BatchNorm_1"]
    assert d["Dense_0"]["kernel"].shape == (4 * 4 * 256, 1)


def test_generator_output_in_unit_box_any_size_and_discriminator_logits():
    x = jax.random.uniform(rbg_key(1), (3, SIZE, SIZE, 3))
    out, g_vars = jax.jit(APEGANGenerator(**SMALL_G).init_with_output)(rbg_key(2), x)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    # Sizes that do not halve evenly come back whole (each resize targets its stage's size).
    odd = jax.eval_shape(APEGANGenerator(**SMALL_G).init_with_output, rbg_key(0), x[:, :15, :13])
    assert odd[0].shape == (3, 15, 13, 3)
    bilinear = APEGANGenerator(**SMALL_G, upsampling="bilinear")
    assert jax.eval_shape(bilinear.init_with_output, rbg_key(0), x)[0].shape == x.shape
    logits = jax.eval_shape(APEGANDiscriminator(**SMALL_D).init_with_output, rbg_key(0), x)[0]
    assert logits.shape == (3,) and logits.dtype == jnp.float32
    with pytest.raises(ValueError, match="upsampling"):
        APEGANGenerator(upsampling="transposed")


# --- losses ---------------------------------------------------------------------------------


def test_losses_hand_values_and_ideal_inputs():
    assert float(bce_with_logits(jnp.zeros(4), 1.0)) == pytest.approx(math.log(2), rel=1e-6)
    assert float(bce_with_logits(jnp.array([2.0]), 0.0)) == pytest.approx(
        math.log1p(math.exp(2.0)), rel=1e-6
    )
    # A perfect D (large positive on real, large negative on fake) has loss ~0.
    big = jnp.full((4,), 30.0)
    assert float(discriminator_loss(big, -big)) < 1e-12
    # Undecided D: log 2 for each term.
    np.testing.assert_allclose(
        float(discriminator_loss(jnp.zeros(4), jnp.zeros(4))), 2 * math.log(2), rtol=1e-6
    )
    # G: exact restoration that fools D has loss ~0; otherwise 0.7 MSE + 0.3 BCE(., 1).
    x = jnp.full((2, 4, 4, 3), 0.5)
    total, (mse, gan) = generator_loss(x, x, big[:2])
    assert float(total) < 1e-12 and float(mse) == 0.0
    total, (mse, gan) = generator_loss(x + 0.1, x, jnp.zeros(2))
    np.testing.assert_allclose(float(mse), 0.01, rtol=1e-5)
    np.testing.assert_allclose(float(gan), math.log(2), rtol=1e-6)
    np.testing.assert_allclose(float(total), 0.7 * 0.01 + 0.3 * math.log(2), rtol=1e-5)


def test_each_loss_reaches_only_its_own_network(target):
    """D's loss: gradient to D only (G's output is detached); G's loss: to G, and through
    the frozen classifier nothing at all."""
    trainer = make_trainer(target)
    state = jax.jit(trainer.init_state, static_argnums=1)(rbg_key(0), (SIZE, SIZE, 3))
    batch = toy_batch(8, seed=1)
    x = batch["image"].astype(jnp.float32) / 255
    x_adv = jnp.clip(x + 8 / 255 * jnp.sign(jax.random.normal(rbg_key(2), x.shape)), 0, 1)

    @jax.jit
    def grads(g_params, d_params, t_vars):
        def d_loss(g_params, d_params):
            x_hat, _ = trainer.generate(g_params, state.generator_batch_stats, x_adv)
            return trainer.discriminator_losses(
                d_params, state.discriminator_batch_stats, x, x_hat
            )[0]

        def g_loss(g_params, t_vars):
            # The classifier only enters through the accuracy metric; it must stay frozen.
            loss = trainer.generator_losses(
                g_params,
                state.generator_batch_stats,
                d_params,
                state.discriminator_batch_stats,
                x_adv,
                x,
            )[0]
            return loss + jnp.sum(trainer.classify(t_vars, x_adv) ** 2)

        return jax.grad(d_loss, argnums=(0, 1))(g_params, d_params), jax.grad(
            g_loss, argnums=(0, 1)
        )(g_params, t_vars)

    (d_to_g, d_to_d), (g_to_g, g_to_t) = grads(
        state.generator_params, state.discriminator_params, state.target_variables
    )

    def max_abs(tree):
        return max(float(jnp.abs(leaf).max()) for leaf in jax.tree.leaves(tree))

    assert max_abs(d_to_g) == 0.0
    assert max_abs(d_to_d) > 0.0
    assert min(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_to_g)) > 0.0
    assert max_abs(g_to_t) == 0.0


# --- train step -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(target):
    """(trainer, initial state, final state, per-step metrics) of 12 jitted steps."""
    trainer = make_trainer(target)
    step = jax.jit(trainer.train_step)
    state0 = jax.jit(trainer.init_state, static_argnums=1)(rbg_key(0), (SIZE, SIZE, 3))
    state, metrics = state0, []
    for i in range(12):
        state, m = step(state, toy_batch(16, seed=100 + i), rbg_key(i))
        metrics.append(jax.device_get(m))
    return trainer, state0, state, metrics


def test_train_step_moves_both_networks_and_leaves_the_target_alone(target, trained):
    trainer, state0, state, metrics = trained
    assert isinstance(state, APEGANState) and int(state.step) == 12
    for m in metrics:
        assert set(m) == {
            "d_loss",
            "g_loss",
            "mse_loss",
            "gan_loss",
            "adversarial_mse",
            "adversarial_accuracy",
            "purified_accuracy",
            "learning_rate",
        }
        assert all(np.isfinite(v) and v.dtype == np.float32 for v in m.values())
        np.testing.assert_allclose(m["g_loss"], 0.7 * m["mse_loss"] + 0.3 * m["gan_loss"], 1e-5)
        # The attack stays in its budget: mean squared perturbation <= eps^2.
        assert m["adversarial_mse"] <= (8 / 255) ** 2 + 1e-7
    # G starts far from the identity (a random tanh decoder) and learns to restore x.
    mse = [float(m["mse_loss"]) for m in metrics]
    assert np.mean(mse[-3:]) < 0.6 * mse[0], mse  # measured: 0.150 -> 0.071
    for name in (
        "generator_params",
        "generator_batch_stats",
        "discriminator_params",
        "discriminator_batch_stats",
    ):
        moved = jax.tree.map(
            lambda a, b: bool(np.any(a != b)), getattr(state, name), getattr(state0, name)
        )
        assert any(jax.tree.leaves(moved)), name
    same = jax.tree.map(np.array_equal, state.target_variables, target[1])
    assert all(jax.tree.leaves(same))


def test_purify_is_the_eval_mode_generator_in_the_unit_box(trained):
    trainer, _, state, _ = trained
    x = toy_batch(4, seed=7)["image"].astype(jnp.float32) / 255
    purify = jax.jit(trainer.purify(state))
    out = purify(x)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    # Eval mode: an image's output does not depend on the rest of its batch.
    np.testing.assert_allclose(purify(x[::-1])[::-1], out, atol=1e-6)


def test_cw_training_examples_and_configuration_errors(target):
    cw = {
        "name": "cw",
        "steps": 3,
        "binary_search_steps": 1,
        "initial_const": 100.0,
        "learning_rate": 0.1,
        "confidence": 0.0,  # the untrained f's logits lie within 0.3 of each other
    }
    trainer = make_trainer(target, attack=cw)
    batch = toy_batch(8, seed=3)
    x = batch["image"].astype(jnp.float32) / 255

    @jax.jit
    def craft(x):
        # Labels = f's own predictions, so that every image is one CW has to move.
        y = jnp.argmax(trainer.classify(trainer.target_variables, x), -1)
        x_adv = trainer.craft(trainer.target_variables, x, y, rbg_key(0))
        return x_adv, y, jnp.argmax(trainer.classify(trainer.target_variables, x_adv), -1)

    x_adv, y, y_adv = craft(x)
    assert x_adv.shape == x.shape and bool(jnp.all((x_adv >= 0) & (x_adv <= 1)))
    moved = jnp.any(x_adv != x, axis=(1, 2, 3))
    assert bool(jnp.any(moved))
    # CW returns x where it failed, and a misclassified image where it moved one.
    assert bool(jnp.all(jnp.where(moved, y_adv != y, True)))
    with pytest.raises(ValueError, match=r"apegan.attack: Unknown option\(s\) \['eps'\]"):
        make_trainer(target, attack={**cw, "eps": 8 / 255})
    with pytest.raises(ValueError, match="8/255"):
        make_trainer(target, attack={**ATTACK, "eps": 8})
    with pytest.raises(ValueError, match=">= 0"):
        make_trainer(target, gan_weight=-1.0)
