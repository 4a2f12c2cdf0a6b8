"""CAP-GAN losses, gradient routing, the train step and its sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from capjax.attack_specs import training_attack
from capjax.core import mesh as mesh_lib
from capjax.defenses import capgan
from capjax.models.capgan_nets import AttentionGenerator, MultiScaleDiscriminator
from capjax.models.tiny import TinyCNN

SHAPE = (32, 32, 3)
PGD_DOMAIN = {"name": "pgd", "eps": 8 / 255, "step_size": 2 / 255, "steps": 2}


@pytest.fixture(scope="module")
def target():
    model = TinyCNN(num_classes=10, widths=(4, 8, 8))
    variables = model.init(jax.random.key(0), jnp.zeros((1, *SHAPE)))
    return model, variables


def make_trainer(target, attack=PGD_DOMAIN, **weights):
    # SGD, not Adam: Adam's first step is ~lr * sign(g), which turns float noise in tiny
    # gradients into full-size differences and would hide what the sharding test compares.
    model, variables = target
    return capgan.CAPGANTrainer(
        generator=AttentionGenerator(base_width=4, num_blocks=1, stem_kernel=3),
        discriminator=MultiScaleDiscriminator(base_width=4, scales=(2,)),
        target=model,
        target_variables=variables,
        generator_tx=optax.sgd(0.05),
        discriminator_tx=optax.sgd(0.05),
        weights=capgan.LossWeights(**weights),
        attack=training_attack(attack, "capgan.domain.attack", names=capgan.DOMAIN_ATTACKS),
    )


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return {
        "image": rng.integers(0, 256, (8, *SHAPE), dtype=np.uint8),
        "label": rng.integers(0, 10, (8,)).astype(np.int32),
    }


@pytest.fixture(scope="module")
def trainer(target):
    return make_trainer(target)


@pytest.fixture(scope="module")
def state(trainer, target):
    # Compiling the GAN pair's init costs a minute on 2 cores (mostly random-number
    # generation); a state of the right structure filled from numpy costs nothing.
    abstract = jax.eval_shape(lambda k: trainer.init_state(k, SHAPE), jax.random.key(1))
    rng = np.random.default_rng(1)

    def fill(path, leaf):
        name = getattr(path[-1], "key", None)
        if name in ("rho", "sigma"):
            return jnp.full(leaf.shape, 0.9 if name == "rho" else 1.0, leaf.dtype)
        scale = 1.0 if name == "u" else 0.2
        return jnp.asarray(scale * rng.standard_normal(leaf.shape), leaf.dtype)

    generated = jax.tree_util.tree_map_with_path(fill, abstract)
    return generated.replace(
        step=jnp.zeros((), jnp.int32),
        target_variables=target[1],
        generator_opt_state=trainer.generator_tx.init(generated.generator_params),
        discriminator_opt_state=trainer.discriminator_tx.init(generated.discriminator_params),
    )


def test_basic_losses_are_zero_on_ideal_inputs():
    logits = jax.random.normal(jax.random.key(0), (4, 10))
    assert float(capgan.semantic_loss(logits, logits, 10.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(capgan.semantic_loss(logits, -logits, 10.0)) > 0
    assert float(capgan.lsgan_loss(jnp.ones((4, 3, 3)), 1.0)) == 0.0
    assert float(capgan.lsgan_loss(jnp.zeros((4, 3, 3)), 1.0)) == 1.0
    assert float(capgan.bce_with_logits(jnp.full((4, 2), 30.0), 1.0)) < 1e-12
    assert float(capgan.bce_with_logits(jnp.full((4, 2), -30.0), 0.0)) < 1e-12
    assert float(capgan.bce_with_logits(jnp.zeros((4, 2)), 1.0)) == pytest.approx(np.log(2))
    x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))
    assert float(capgan.l1_loss(x, x)) == 0.0


def test_semantic_loss_is_hinton_distillation():
    teacher = jnp.array([[2.0, 0.0, -1.0]])
    student = jnp.array([[0.0, 1.0, 0.0]])
    t = 4.0
    p = jax.nn.softmax(teacher / t)
    expected = t**2 * jnp.sum(p * (jnp.log(p) - jax.nn.log_softmax(student / t)))
    assert float(capgan.semantic_loss(teacher, student, t)) == pytest.approx(float(expected))
    # Only the student (the purified images' logits) receives a gradient.
    grad_teacher = jax.grad(lambda a: capgan.semantic_loss(a, student, t))(teacher)
    assert not np.any(np.asarray(grad_teacher))


def test_rho_clipping_touches_only_rho():
    params = {"block": {"rho": jnp.array([1.5, -0.2, 0.5]), "kernel": jnp.array([1.5, -0.2])}}
    clipped = capgan.rho_clipped(params)
    np.testing.assert_array_equal(clipped["block"]["rho"], [1.0, 0.0, 0.5])
    assert clipped["block"]["kernel"] is params["block"]["kernel"]


def _nonzero(tree):
    return jnp.any(jnp.stack([jnp.any(leaf != 0) for leaf in jax.tree.leaves(tree)]))


# Each generator term and the generators it must (and only it must) train.
ROUTES = {
    "g_semantic": {"a2c"},
    "g_identity": {"a2c", "c2a"},
    "g_cycle": {"a2c", "c2a"},
    "g_gan": {"a2c", "c2a"},
    "g_cam_t": {"a2c", "c2a"},
    "g_cam_d": {"a2c", "c2a"},
}


def test_generator_terms_reach_the_right_generators(trainer, batch, state):
    x = jnp.asarray(batch["image"], jnp.float32) / 255
    x_adv = jnp.clip(x + 0.03, 0, 1)

    @jax.jit
    def route(g_params, target_variables):
        def term(name):
            def value(g, t):
                terms = trainer.generator_losses(
                    g, state.discriminator_params, state.discriminator_stats, t, x, x_adv
                )[1][0]
                return terms[name]

            return value

        result = {}
        for name in ROUTES:
            value, (g_grads, t_grads) = jax.value_and_grad(term(name), argnums=(0, 1))(
                g_params, target_variables
            )
            result[name] = (value, {k: _nonzero(v) for k, v in g_grads.items()}, _nonzero(t_grads))
        return result

    for name, (value, reached, target_reached) in route(
        state.generator_params, state.target_variables
    ).items():
        # L_sem of a random tiny target is ~0 (KL of two near-uniform softmaxes) and may
        # round below it; every other term is clearly positive here.
        assert float(value) > 0 or name == "g_semantic", (name, float(value))
        assert {k for k, v in reached.items() if bool(v)} == ROUTES[name], name
        assert not bool(target_reached), f"{name}: no gradient may reach the frozen classifier"


def test_term_gradients_add_up_to_the_generator_loss_gradient(trainer, batch, state):
    """The per-term gradients (`bench capgan --term-gradients`) split L_T's gradient exactly."""
    x = jnp.asarray(batch["image"], jnp.float32) / 255
    x_adv = jnp.clip(x + 0.03, 0, 1)
    args = (state.discriminator_params, state.discriminator_stats, state.target_variables)

    @jax.jit
    def both(state):
        total = jax.grad(lambda g: trainer.generator_losses(g, *args, x, x_adv)[0])(
            state.generator_params
        )
        return total, trainer.term_gradients(state, x, x_adv)

    total, parts = both(state)
    coefficients = trainer.term_coefficients()
    assert set(parts) == set(coefficients)
    assert coefficients["g_cam_t"] == pytest.approx(0.3 * 1000)  # (1 - alpha) x CAM weight
    summed = jax.tree_util.tree_map(lambda *g: sum(g), *parts.values())
    leaves = jax.tree_util.tree_leaves
    for got, want in zip(leaves(summed), leaves(total), strict=True):
        scale = float(np.max(np.abs(want)))  # float32 sums in another order
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5 * max(scale, 1.0))
    norms = {k: float(optax.global_norm(g)) for k, g in parts.items()}
    assert norms["g_cam_t"] > 0 and norms["g_cycle"] > 0, norms


def test_discriminator_loss_trains_only_discriminators(trainer, batch, state):
    x = jnp.asarray(batch["image"], jnp.float32) / 255
    x_adv = jnp.clip(x - 0.03, 0, 1)

    def loss(d_params, g_params):
        return trainer.discriminator_losses(
            d_params, state.discriminator_stats, g_params, x, x_adv
        )[0]

    d_grads, g_grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(
        state.discriminator_params, state.generator_params
    )
    assert bool(_nonzero(d_grads["c"])) and bool(_nonzero(d_grads["a"]))
    assert not bool(_nonzero(g_grads)), "the fakes are constants for the discriminator step"


@pytest.fixture(scope="module")
def stepped(trainer, state, batch):
    step = jax.jit(trainer.train_step)
    return step(state, batch, jax.random.key(2))


def test_train_step_updates_networks_and_keeps_target(state, stepped):
    new_state, metrics = stepped
    assert int(new_state.step) == 1
    for name in ("d_loss", "g_loss", "g_semantic", "g_cycle", "g_cam_t", "purified_accuracy"):
        assert np.isfinite(float(metrics[name])), name
    assert float(metrics["g_cycle"]) > 0 and float(metrics["g_semantic"]) >= 0
    changed = jax.tree.map(jnp.subtract, new_state.generator_params, state.generator_params)
    assert bool(_nonzero(changed))
    changed = jax.tree.map(jnp.subtract, new_state.discriminator_params, state.discriminator_params)
    assert bool(_nonzero(changed))
    chex_equal = jax.tree.map(np.array_equal, new_state.target_variables, state.target_variables)
    assert all(jax.tree.leaves(chex_equal))
    rhos = [
        leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(new_state.generator_params)
        if getattr(path[-1], "key", None) == "rho"
    ]
    assert rhos and all(float(r.min()) >= 0 and float(r.max()) <= 1 for r in rhos)


def test_ablation_switches_zero_their_terms(target, state, batch):
    trainer = make_trainer(target, use_cam=False, use_sem=False, use_cycle=False)
    x = jnp.asarray(batch["image"], jnp.float32) / 255

    @jax.jit
    def terms(s):
        d_terms = trainer.discriminator_losses(
            s.discriminator_params, s.discriminator_stats, s.generator_params, x, x
        )[1][0]
        g_terms = trainer.generator_losses(
            s.generator_params,
            s.discriminator_params,
            s.discriminator_stats,
            s.target_variables,
            x,
            x,
        )[1][0]
        return {**d_terms, **g_terms}

    metrics = terms(state)
    for name in ("g_cycle", "g_cam_t", "g_cam_d", "g_semantic", "d_cam_c", "d_cam_a"):
        assert float(metrics[name]) == 0.0, name
    assert float(metrics["g_gan"]) > 0 and float(metrics["g_identity"]) > 0
    assert float(metrics["d_gan_c"]) > 0


def test_sharded_step_equals_single_device_step(trainer, state, batch, stepped):
    mesh = mesh_lib.make_mesh()
    assert mesh.devices.size == 8
    rep = mesh_lib.replicated(mesh)
    sharded = jax.jit(
        trainer.train_step,
        in_shardings=(rep, mesh_lib.data_sharding(mesh), rep),
        out_shardings=(rep, rep),
    )
    state_8 = jax.device_put(state, rep)
    new_8, metrics_8 = sharded(state_8, mesh_lib.shard_batch(batch, mesh), jax.random.key(2))
    new_1, metrics_1 = stepped
    close = jax.tree.map(
        lambda a, b: np.allclose(a, b, rtol=1e-4, atol=1e-5),
        new_8.generator_params,
        new_1.generator_params,
    )
    assert all(jax.tree.leaves(close))
    for name in ("d_loss", "g_loss"):
        assert float(metrics_8[name]) == pytest.approx(float(metrics_1[name]), rel=1e-4)


def test_purify_is_the_a2c_generator(trainer, state):
    purify = trainer.purify(state)
    x = jax.random.uniform(jax.random.key(3), (2, *SHAPE))
    out = purify(x)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    direct = trainer.translate(state.generator_params["a2c"], x)[0]
    np.testing.assert_allclose(out, direct, atol=1e-6)
    with pytest.raises(ValueError, match="float images"):
        purify(jnp.zeros((2, *SHAPE), jnp.uint8))


def test_bad_settings_are_refused(target):
    with pytest.raises(ValueError, match="alpha"):
        capgan.LossWeights(alpha=1.5)
    with pytest.raises(ValueError, match="combine"):
        capgan.LossWeights(combine="mean")
    with pytest.raises(ValueError, match="capgan.domain.attack: .*8/255"):
        make_trainer(target, attack={**PGD_DOMAIN, "eps": 8})
    with pytest.raises(ValueError, match="Unknown training attack 'cw' in capgan.domain.attack"):
        make_trainer(target, attack={"name": "cw", "eps": 0.03})
