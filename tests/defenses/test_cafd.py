"""CAFD: denoiser and discriminator networks, the losses of Eq. 6-10 and the train step."""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from capjax.attack_specs import feature_attack
from capjax.defenses.cafd import (
    AUTHORS_CAFA,
    CAFDState,
    CAFDTrainer,
    caf_loss_eq6,
    caf_loss_eq7,
    cafd_denoiser_loss,
    ragan_discriminator_loss,
    ragan_generator_loss,
)
from capjax.defenses.purifier_parts import frozen_target_fn, make_purify
from capjax.models import get_classifier
from capjax.models.denoiser import CAFDDiscriminator, DUNet

NUM_CLASSES = 10
SIZE = 16  # toy images are 16x16: the step costs a quarter of 32x32 on the shared CPU
TINY_DUNET = dict(widths=(8, 16, 16, 16, 16))
# Tests that run a DUNet use a shallower one: XLA:CPU compile time grows with depth.
STEP_DUNET = dict(widths=(8, 16, 16), encoder_blocks=(1, 1, 1), decoder_blocks=(1, 1))
TINY_DISCRIMINATOR = dict(widths=(8, 16), hidden=16)


def toy_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 16, 16, 3): class c is a fixed blocky colour template, brightness-jittered.

    The images are piecewise constant in 4x4 blocks, so CAFA's pixel noise is the only high
    frequency in them and a tiny denoiser can learn to remove it within a few steps.
    """
    templates = np.random.default_rng(99).uniform(0.2, 0.8, (NUM_CLASSES, 4, 4, 3))
    templates = templates.repeat(4, axis=1).repeat(4, axis=2)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
    images = templates[labels] + rng.uniform(-0.15, 0.15, (n, 1, 1, 1))
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8), labels


@pytest.fixture(scope="module")
def target():
    """(model, variables) of a tiny BatchNorm CNN trained for a few seconds on `toy_images`."""
    model = get_classifier("tiny", num_classes=NUM_CLASSES, widths=(8, 16))
    images, labels = toy_images(512, seed=0)
    x = images.astype(np.float32) / 255
    variables = model.init(jax.random.key(0), jnp.asarray(x[:1]))
    tx = optax.adam(3e-3)
    params, stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, stats, opt_state, x, y):
        def loss_fn(p):
            logits, updates = model.apply(
                {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, updates["batch_stats"]

        grads, stats = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state

    for i in range(80):
        sl = slice(i * 64 % 512, i * 64 % 512 + 64)
        params, stats, opt_state = step(params, stats, opt_state, x[sl], labels[sl])
    variables = {"params": params, "batch_stats": stats}
    test_x, test_y = toy_images(128, seed=1)
    logits = model.apply(variables, jnp.asarray(test_x / 255, jnp.float32))
    assert float(jnp.mean(jnp.argmax(logits, -1) == test_y)) >= 0.9
    return model, variables


def make_trainer(target, **overrides) -> CAFDTrainer:
    model, variables = target
    options = dict(
        denoiser=DUNet(**STEP_DUNET),
        discriminator=CAFDDiscriminator(**TINY_DISCRIMINATOR),
        target=model,
        target_variables=variables,
        denoiser_tx=optax.chain(optax.add_decayed_weights(2e-4), optax.adam(3e-3)),
        # SGD, not Adam, for D in tests: some of D's biases get exactly zero gradient from
        # the relativistic losses (a shift common to all logits cancels), and Adam turns
        # their round-off into lr-sized steps of random sign, which would make the sharded
        # and single-device runs differ for no reason of interest.
        discriminator_tx=optax.sgd(1e-2, momentum=0.9),
        schedule=optax.constant_schedule(3e-3),
        attack=feature_attack({**AUTHORS_CAFA, "steps": 2}, "cafd.attack"),
    )
    options.update(overrides)
    return CAFDTrainer(**options)


def batch_of(n: int, seed: int) -> dict[str, jax.Array]:
    images, labels = toy_images(n, seed)
    return {"image": jnp.asarray(images), "label": jnp.asarray(labels)}


def tree_allclose(a, b, **tol) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda u, v: np.allclose(u, v, **tol), a, b)))


# --- networks -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_dunet():
    """(model, variables, jitted eval apply) of a small DUNet with a random residual layer.

    (The full depth is checked by `test_full_size_dunet_builds_with_paper_widths`; compile
    time on XLA:CPU grows with depth.)
    """
    model = DUNet(**STEP_DUNET, zero_init_residual=False)
    variables = jax.jit(model.init)(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))
    return model, variables, jax.jit(model.apply)


def test_dunet_output_in_unit_box_and_same_shape(small_dunet):
    model, variables, apply = small_dunet
    x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
    out = apply(variables, x)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(jnp.abs(out - x).max()) > 0.05  # the random residual changes the image
    # Sizes that do not halve evenly come back whole (upsampling targets the skip's size).
    odd = jax.eval_shape(DUNet(**TINY_DUNET).init_with_output, jax.random.key(0), x[:2, :24, :20])
    assert odd[0].shape == (2, 24, 20, 3)


def test_dunet_residual_identity_when_final_conv_zeroed(small_dunet):
    _, variables, apply = small_dunet
    x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
    params = dict(variables["params"])
    params["residual"] = jax.tree.map(jnp.zeros_like, params["residual"])
    np.testing.assert_array_equal(np.asarray(apply({**variables, "params": params}, x)), x)


def _conv_params(convs: list[tuple[int, int]], kernel: int = 3) -> int:
    """Parameters of bias-free convs each followed by BatchNorm (scale and bias)."""
    return sum(kernel * kernel * cin * cout + 2 * cout for cin, cout in convs)


def test_full_size_dunet_builds_with_paper_widths():
    model = DUNet()
    assert tuple(model.widths) == (64, 128, 256, 256, 256)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes["params"]))
    encoder = [(3, 64), (64, 64)] + [(64, 128)] + [(128, 128)] * 2 + [(128, 256)]
    encoder += [(256, 256)] * 8
    decoder = [(512, 256), (256, 256), (256, 256), (512, 256), (256, 256), (256, 256)]
    decoder += [(384, 128), (128, 128), (128, 128), (192, 64), (64, 64)]
    expected = _conv_params(encoder + decoder) + 64 * 3 + 3
    assert count == expected == 11_033_987
    # The deepest map is 2x2 and the decoder returns to full size.
    enc = shapes["params"]["encoder_4"]["Conv_0"]["kernel"]
    assert enc.shape == (3, 3, 256, 256)
    assert shapes["params"]["decoder_3"]["Conv_0"]["kernel"].shape == (3, 3, 192, 64)


def test_discriminator_shapes_and_paper_flatten_size():
    model = CAFDDiscriminator()
    x = jax.random.uniform(jax.random.key(0), (3, 32, 32, 3))
    params = jax.eval_shape(model.init, jax.random.key(1), x)["params"]
    assert params["Dense_0"]["kernel"].shape == (512, 100)  # 2 * 2 * 128 at 32x32
    assert params["Dense_1"]["kernel"].shape == (100, 1)
    assert "bias" not in params["Dense_1"]  # cancels in the relativistic losses
    count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    convs = [(32, 32, 4), (32, 64, 3), (64, 64, 4), (64, 128, 3), (128, 128, 4)]
    convs += [(128, 128, 3), (128, 128, 4)]
    expected = 27 * 32 + 32 + sum(k * k * i * o + 2 * o for i, o, k in convs)
    assert count == expected + 512 * 100 + 100 + 100 == 899_464
    # A small one runs: (N,) float32 logits; the flatten size follows the input (16x16 with
    # two halvings leaves 4x4x16).
    small = CAFDDiscriminator(**TINY_DISCRIMINATOR)
    logits, v = jax.jit(small.init_with_output)(jax.random.key(2), x[:, :16, :16])
    assert v["params"]["Dense_0"]["kernel"].shape == (4 * 4 * 16, 16)
    assert logits.shape == (3,) and logits.dtype == jnp.float32 and np.all(np.isfinite(logits))


# --- losses ---------------------------------------------------------------------------------


LOSSES = [
    ("eq6", lambda fn, k, a, b: caf_loss_eq6(fn, k, a, b)),
    ("eq6-own-map", lambda fn, k, a, b: caf_loss_eq6(fn, k, a, b, cam_classes="own", kind="map")),
    ("eq7", lambda fn, k, a, b: caf_loss_eq7(fn, k, a, b)),
    ("eq7-argmax", lambda fn, k, a, b: caf_loss_eq7(fn, k, a, b, class_weights="argmax")),
]


@pytest.mark.parametrize("name,loss", LOSSES, ids=[n for n, _ in LOSSES])
def test_caf_losses_zero_for_identical_positive_otherwise(target, name, loss):
    model, variables = target
    fn, kernel = frozen_target_fn(model, variables), variables["params"]["head"]["kernel"]
    x = jnp.asarray(toy_images(8, seed=2)[0] / 255, jnp.float32)
    noisy = jnp.clip(x + 0.05 * jax.random.normal(jax.random.key(0), x.shape), 0, 1)
    same = loss(fn, kernel, x, x)
    assert same.shape == () and same.dtype == jnp.float32
    assert float(same) == 0.0
    assert float(loss(fn, kernel, noisy, x)) > 0.0


def test_eq7_softmax_class_term_is_differentiable_and_argmax_is_not(target):
    model, variables = target
    fn, kernel = frozen_target_fn(model, variables), variables["params"]["head"]["kernel"]
    x = jnp.asarray(toy_images(4, seed=3)[0] / 255, jnp.float32)
    noisy = jnp.clip(x + 0.1 * jax.random.normal(jax.random.key(1), x.shape), 0, 1)
    only_weights = dict(weight_scale=1.0, size=None)

    def class_term(z, mode):
        # The class term alone: Eq. 7 minus its feature term (weight_scale=0).
        full = caf_loss_eq7(fn, kernel, z, x, class_weights=mode, **only_weights)
        features = caf_loss_eq7(fn, kernel, z, x, class_weights=mode, weight_scale=0.0, size=None)
        return full - features

    g_soft = jax.grad(class_term)(noisy, "softmax")
    g_arg = jax.grad(class_term)(noisy, "argmax")
    assert float(jnp.abs(g_soft).max()) > 0
    assert float(jnp.abs(g_arg).max()) == 0


def test_caf_gradients_reach_denoiser_not_target(target):
    _, variables = target
    trainers = {form: make_trainer(target, loss_form=form) for form in ("eq6", "eq7")}
    # The smallest DUNet, with a random residual layer so that gradient flows into every
    # layer from the start.
    denoiser = DUNet(
        widths=(4, 8), encoder_blocks=(1, 1), decoder_blocks=(1,), zero_init_residual=False
    )
    x = jnp.asarray(toy_images(4, seed=4)[0] / 255, jnp.float32)
    x_adv = jnp.clip(x + 8 / 255 * jnp.sign(jax.random.normal(jax.random.key(2), x.shape)), 0, 1)
    c_vars = jax.jit(denoiser.init)(jax.random.key(3), x)

    def grads(c_params, t_vars):
        def loss(c_params, t_vars, trainer):
            x_hat = denoiser.apply({**c_vars, "params": c_params}, x_adv)
            return trainer.caf_loss(t_vars, x_hat, x)

        grad_fn = jax.grad(loss, argnums=(0, 1))
        return {form: grad_fn(c_params, t_vars, t) for form, t in trainers.items()}

    for form, (c_grads, t_grads) in jax.jit(grads)(c_vars["params"], variables).items():
        c_norms = [float(jnp.abs(g).max()) for g in jax.tree.leaves(c_grads)]
        assert min(c_norms) > 0, f"{form}: every denoiser parameter should receive gradient"
        assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(t_grads)), form


def test_ragan_losses_hand_values():
    softplus = lambda z: math.log1p(math.exp(z))
    real, fake = jnp.array([1.0, 3.0]), jnp.array([0.0, 2.0])
    # D: real - mean(fake) = [0, 2] against 1; fake - mean(real) = [-2, 0] against 0.
    d_expected = 0.5 * ((softplus(0.0) + softplus(-2.0)) / 2 + (softplus(-2.0) + softplus(0.0)) / 2)
    np.testing.assert_allclose(float(ragan_discriminator_loss(real, fake)), d_expected, 1e-6)
    # G: fake - mean(real) = [-2, 0] against 1; real - mean(fake) = [0, 2] against 0.
    g_expected = 0.5 * ((softplus(2.0) + softplus(0.0)) / 2 + (softplus(0.0) + softplus(2.0)) / 2)
    np.testing.assert_allclose(float(ragan_generator_loss(real, fake)), g_expected, 1e-6)
    # One image each: exactly the printed Eq. 8 and Eq. 9.
    r, f = jnp.array([0.7]), jnp.array([-0.4])
    sigmoid = lambda z: 1 / (1 + math.exp(-z))
    np.testing.assert_allclose(
        float(ragan_discriminator_loss(r, f)), -math.log(sigmoid(0.7 + 0.4)), 1e-6
    )
    np.testing.assert_allclose(
        float(ragan_generator_loss(r, f)), -math.log(sigmoid(-0.4 - 0.7)), 1e-6
    )
    assert float(cafd_denoiser_loss(jnp.float32(2.0), jnp.float32(4.0))) == pytest.approx(
        1e3 * 2 + 5e-3 * 4
    )


# --- train step -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def step_trainer(target):
    return make_trainer(target)


@pytest.fixture(scope="module")
def jitted_step(step_trainer):
    return jax.jit(step_trainer.train_step)


@pytest.fixture(scope="module")
def init_state(step_trainer):
    return jax.jit(step_trainer.init_state, static_argnums=1)


def run_steps(step, state, batches, mesh, seed=0):
    """Runs `step` over `batches` with replicated state and the batch split over `mesh`."""
    rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    state = jax.device_put(state, rep)
    metrics = []
    for i, batch in enumerate(batches):
        state, m = step(state, jax.device_put(batch, data), jax.random.key(seed + i))
        metrics.append(m)
    return state, metrics


def test_sharded_step_matches_single_device(target, step_trainer, jitted_step, init_state):
    devices = jax.devices()
    assert len(devices) == 8, "tests/conftest.py should simulate 8 CPU devices"
    _, variables = target
    before = jax.tree.map(np.array, variables)
    state0 = init_state(jax.random.key(0), (SIZE, SIZE, 3))
    batches = [batch_of(16, seed=10 + i) for i in range(2)]
    single_state, single_metrics = run_steps(
        jitted_step, state0, batches, Mesh(np.array(devices[:1]), ("data",))
    )
    sharded_state, sharded_metrics = run_steps(
        jitted_step, state0, batches, Mesh(np.array(devices), ("data",))
    )
    assert isinstance(sharded_state, CAFDState) and int(sharded_state.step) == 2
    assert len(sharded_state.denoiser_params["residual"]["kernel"].sharding.device_set) == 8
    for a, b in zip(single_metrics, sharded_metrics, strict=True):
        assert tree_allclose(a, b, rtol=1e-4, atol=1e-6), (a, b)
    assert tree_allclose(single_state, sharded_state, rtol=1e-3, atol=1e-6)
    # Parameters and batch statistics of C and D moved; the target's variables did not.
    for name in (
        "denoiser_params",
        "denoiser_batch_stats",
        "discriminator_params",
        "discriminator_batch_stats",
    ):
        assert not tree_allclose(getattr(single_state, name), getattr(state0, name)), name
    assert tree_allclose(
        jax.tree.map(np.array, step_trainer.target_variables), before, rtol=0, atol=0
    )
    for m in sharded_metrics:
        assert set(m) >= {"d_loss", "g_loss", "caf_loss", "gan_loss", "pixel_mse"}
        assert all(v.dtype == jnp.float32 and np.isfinite(v) for v in m.values())


def test_last_conv_feature_source_is_the_pre_batchnorm_conv_output(target):
    """The authors' hook: the last convolution's output, before its BatchNorm and ReLU."""
    model, variables = target
    x = jnp.asarray(toy_images(4, seed=5)[0] / 255, jnp.float32)
    logits, head_input = frozen_target_fn(model, variables)(x)
    last_logits, last_conv = jax.jit(frozen_target_fn(model, variables, "last_conv"))(x)
    np.testing.assert_allclose(last_logits, logits, rtol=1e-5, atol=1e-5)
    _, state = model.apply(
        variables, x, capture_intermediates=lambda m, _: isinstance(m, nn.Conv), mutable=True
    )
    convs = sorted(k for k in state["intermediates"] if k.startswith("Conv_"))
    expected = state["intermediates"][convs[-1]]["__call__"][0]
    np.testing.assert_allclose(last_conv, expected, rtol=1e-6, atol=1e-6)
    assert last_conv.shape[-1] == head_input.shape[-1]
    assert float(jnp.min(last_conv)) < 0 <= float(jnp.min(head_input))  # before the ReLU
    with pytest.raises(ValueError, match="feature_source"):
        frozen_target_fn(model, variables, "penultimate")


def test_authors_feature_choices_train_the_denoiser(target):
    """With the authors' feature source and normalisation order, both CAF losses are zero
    at x_hat = x, positive otherwise, and send gradient to the denoiser only."""
    trainer = make_trainer(
        target, loss_form="eq6", feature_source="last_conv", cam_normalize_order="before_upsampling"
    )
    _, variables = target
    x = jnp.asarray(toy_images(4, seed=6)[0] / 255, jnp.float32)
    x_adv = jax.jit(trainer.craft)(variables, x, jax.random.key(0))
    assert float(jnp.max(jnp.abs(x_adv - x))) <= 8 / 255 + 1e-6
    for form in ("eq6", "eq7"):
        t = dataclasses.replace(trainer, loss_form=form)
        assert float(t.caf_loss(variables, x, x)) == 0.0
        loss, grad = jax.value_and_grad(lambda z, t=t: t.caf_loss(variables, z, x))(x_adv)
        assert float(loss) > 0 and float(jnp.max(jnp.abs(grad))) > 0, form
    model = NoFeatures()
    dense_only = (model, model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3))))
    with pytest.raises(ValueError, match="calls no flax.linen.Conv"):
        make_trainer(dense_only, feature_source="last_conv").init_state(
            jax.random.key(0), (SIZE, SIZE, 3)
        )


def test_configuration_errors_are_loud(target):
    with pytest.raises(ValueError, match="decoder blocks"):
        DUNet(widths=(8, 16, 16), encoder_blocks=(1, 1, 1), decoder_blocks=(1,))
    with pytest.raises(ValueError, match="encoder block per width"):
        DUNet(widths=(8, 16), encoder_blocks=(1,), decoder_blocks=(1,))
    with pytest.raises(ValueError, match="loss_form"):
        make_trainer(target, loss_form="eq8")
    with pytest.raises(ValueError, match="cafd.attack: .*8/255"):
        feature_attack({**AUTHORS_CAFA, "eps": 8.0}, "cafd.attack")
    model, variables = target
    params = {k: v for k, v in variables["params"].items() if k != "head"}
    headless = {**variables, "params": params}
    with pytest.raises(ValueError, match="head"):
        make_trainer((model, headless))


class NoFeatures(nn.Module):
    """A user's classifier with a `head` but no `return_features`."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(NUM_CLASSES, name="head")(x.reshape(x.shape[0], -1))


def test_target_without_return_features_is_refused_before_compiling():
    model = NoFeatures()
    variables = model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
    trainer = make_trainer((model, variables))
    with pytest.raises(ValueError, match="NoFeatures cannot return its features"):
        trainer.init_state(jax.random.key(0), (SIZE, SIZE, 3))


def test_train_step_rejects_integer_images_other_than_uint8(step_trainer):
    init = functools.partial(step_trainer.init_state, image_shape=(SIZE, SIZE, 3))
    state = jax.eval_shape(init, jax.random.key(0))
    batch = {"image": jnp.zeros((2, SIZE, SIZE, 3), jnp.int32), "label": jnp.zeros((2,), jnp.int32)}
    with pytest.raises(ValueError, match="uint8"):
        jax.eval_shape(step_trainer.train_step, state, batch, jax.random.key(0))


def test_short_training_beats_the_undefended_caf_distance(step_trainer, jitted_step, init_state):
    """25 steps of Eq. 7 training bring L_caf(C(x~), x) well below L_caf(x~, x)."""
    state = init_state(jax.random.key(1), (SIZE, SIZE, 3))
    batches = [batch_of(16, seed=100 + i) for i in range(25)]
    # The same 1-device mesh as the sharding test, so the compiled step is reused.
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    state, metrics = run_steps(jitted_step, state, batches, mesh, seed=100)
    ratio = [float(m["caf_loss"] / m["adversarial_caf_loss"]) for m in metrics]
    # The zero-initialised residual makes the untrained denoiser the identity.
    assert ratio[0] == pytest.approx(1.0, abs=1e-6)
    assert np.mean(ratio[-5:]) < 0.9, ratio
    assert np.mean([float(m["caf_loss"]) for m in metrics[-5:]]) < float(metrics[0]["caf_loss"])
    # make_purify is the trained denoiser in eval mode, in [0, 1].
    x = jnp.asarray(toy_images(4, seed=5)[0] / 255, jnp.float32)
    out = make_purify(step_trainer.denoiser, state.denoiser_variables)(x)
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    assert float(jnp.abs(out - x).max()) > 0
    np.testing.assert_array_equal(out, step_trainer.purify(state)(x))
