"""The non-trained baselines: JPEG, TVM and thermometer encoding."""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from capjax.data.synthetic import load_synthetic
from capjax.defenses import jpeg as jpeg_lib
from capjax.defenses import thermometer as thermo
from capjax.defenses import tvm as tvm_lib
from capjax.models import get_classifier

# Jitted once per shape and option set: on XLA:CPU one compiled program is much cheaper
# than the op-by-op dispatch of eager mode (tests run on 2 shared cores).
jpeg = jax.jit(jpeg_lib.jpeg, static_argnames=("quality", "subsampling", "rounding"))
tvm = jax.jit(tvm_lib.tvm, static_argnames=("steps",))


@pytest.fixture(scope="module")
def synthetic_uint8() -> np.ndarray:
    """(16, 32, 32, 3) uint8: 15 synthetic-dataset images (textures, edges, noise) and, last,
    `_gradient_image` (colour ramps and a flat rectangle)."""
    images = load_synthetic(num_train=1, num_test=15, seed=0).test_images
    ramps = (_gradient_image() * 255).round().astype(np.uint8)
    return np.concatenate([images, ramps[None]])


def _gradient_image() -> np.ndarray:
    """(32, 32, 3) float in [0, 1]: linear colour ramps and one flat rectangle."""
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    image = np.stack([xx, yy, 0.5 * (xx + yy)], -1)
    image[8:20, 10:24] = [0.9, 0.2, 0.3]
    return image


def _smooth_image() -> np.ndarray:
    """(32, 32, 3) float in [0, 1] without edges: low-frequency sinusoid and ramps."""
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    channels = [0.5 + 0.3 * np.sin(2 * np.pi * xx) * np.cos(np.pi * yy), 0.2 + 0.6 * yy]
    return np.stack(channels + [0.4 + 0.3 * xx * yy], -1)


def _pil_jpeg(images: np.ndarray, quality: int, subsampling: int) -> np.ndarray:
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
        out.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue()))))
    return np.stack(out).astype(np.float64)


def _levels(x: jax.Array) -> np.ndarray:
    return np.asarray(x, np.float64) * 255


# ----------------------------------------------------------------------------------- JPEG


def test_quantization_tables_follow_libjpeg_scaling():
    assert jpeg_lib.quantization_table(75)[0].tolist() == [8, 6, 5, 8, 12, 20, 26, 31]
    assert jpeg_lib.quantization_table(75, chroma=True)[0].tolist() == [
        9,
        9,
        12,
        24,
        50,
        50,
        50,
        50,
    ]
    np.testing.assert_array_equal(jpeg_lib.quantization_table(50), jpeg_lib.LUMINANCE_TABLE)
    assert np.all(jpeg_lib.quantization_table(100) == 1)
    # quality 10: scale 500; 121 * 5 = 605 is clipped to the baseline maximum 255.
    assert jpeg_lib.quantization_table(10)[0, 0] == 80
    assert jpeg_lib.quantization_table(10).max() == 255


def test_dct_matrix_is_orthonormal():
    d = jpeg_lib.dct_matrix()
    np.testing.assert_allclose(d @ d.T, np.eye(8), atol=1e-12)


@pytest.mark.parametrize(
    "subsampling, pil_subsampling, bound",
    # Measured mean |ours - PIL| in levels: synthetic 0.34 (4:4:4) and 0.38 (4:2:0), ramps
    # 0.06 and 0.63. Bounds leave room for other libjpeg builds, and stay far below what
    # JPEG itself changes (6.2 and 10 levels on the synthetic images).
    [("444", 0, 0.6), ("420", 2, 1.0)],
)
def test_jpeg_is_close_to_pil(synthetic_uint8, subsampling, pil_subsampling, bound):
    reference = _pil_jpeg(synthetic_uint8, 75, pil_subsampling)
    ours = _levels(jpeg(jnp.asarray(synthetic_uint8, jnp.float32) / 255, 75, subsampling))
    difference = np.abs(ours - reference)
    for part in (slice(0, 15), slice(15, 16)):  # synthetic images, then the ramps
        assert difference[part].mean() < bound, difference[part].mean()
        assert np.mean(difference[part] < 0.5) > 0.7  # most pixels identical
        assert difference[part].mean() < 0.2 * np.abs(synthetic_uint8 - reference)[part].mean()


def test_jpeg_odd_sizes_and_grayscale_match_pil(synthetic_uint8):
    crop = synthetic_uint8[:4, 3:23, 1:30]  # 20 x 29: padded to 24 x 32 and cropped back
    ours = jpeg(jnp.asarray(crop, jnp.float32) / 255)
    assert ours.shape == crop.shape
    assert np.abs(_levels(ours) - _pil_jpeg(crop, 75, 0)).mean() < 0.6  # measured 0.30
    gray = synthetic_uint8[:4].mean(-1).round().astype(np.uint8)
    reference = _pil_jpeg(gray, 75, 0)
    ours = _levels(jpeg(jnp.asarray(gray[..., None], jnp.float32) / 255))[..., 0]
    assert np.abs(ours - reference).mean() < 0.6  # measured 0.18


def test_jpeg_output_is_8bit_and_jits(synthetic_uint8):
    x = jnp.asarray(synthetic_uint8, jnp.float32) / 255
    x = jnp.clip(x + 0.01 * jax.random.normal(jax.random.key(0), x.shape), 0, 1)
    out = jpeg(x, 75)
    assert out.dtype == jnp.float32 and out.shape == x.shape
    levels = np.asarray(out) * 255
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    assert levels.min() >= 0 and levels.max() <= 255
    # Quality orders the distortion.
    assert float(jnp.abs(jpeg(x, 30) - x).mean()) > float(jnp.abs(out - x).mean())


def test_jpeg_gradients_exact_zero_smooth_useful(synthetic_uint8):
    x = jnp.asarray(synthetic_uint8, jnp.float32) / 255
    exact = jax.jit(jax.grad(lambda x: jnp.sum(jpeg_lib.jpeg(x))))(x)
    assert float(jnp.abs(exact).max()) == 0.0
    smooth = jax.jit(jax.grad(lambda x: jnp.sum(jpeg_lib.jpeg(x, rounding="smooth"))))(x)
    assert float(jnp.mean(smooth != 0)) > 0.99
    assert 0.1 < float(jnp.mean(smooth)) < 1.5  # measured 0.30
    # The smooth forward pass stays near the exact one (measured 0.97 levels mean).
    forward = jnp.abs(jpeg(x, rounding="smooth") - jpeg(x)).mean() * 255
    assert float(forward) < 2.0


def test_jpeg_purifier_is_keyed_and_deterministic(synthetic_uint8):
    purify, differentiable = map(jax.jit, jpeg_lib.jpeg_purifier(75))
    x = jnp.asarray(synthetic_uint8, jnp.float32) / 255
    a, b = purify(x, jax.random.key(0)), purify(x, jax.random.key(1))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, jpeg(x))
    np.testing.assert_array_equal(differentiable(x, jax.random.key(0)), jpeg(x, rounding="smooth"))


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(quality=0), "1..100"),
        (dict(quality=101), "1..100"),
        (dict(quality=75.0), "Python int"),
        (dict(subsampling="422"), "subsampling"),
        (dict(rounding="floor"), "rounding"),
    ],
)
def test_jpeg_rejects_bad_options(args, message):
    with pytest.raises(ValueError, match=message):
        jpeg_lib.jpeg(jnp.zeros((1, 8, 8, 3)), **args)


def test_jpeg_rejects_bad_images():
    with pytest.raises(ValueError, match="float"):
        jpeg_lib.jpeg(jnp.zeros((1, 8, 8, 3), jnp.uint8))
    with pytest.raises(ValueError, match="NHWC"):
        jpeg_lib.jpeg(jnp.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        jpeg(jnp.zeros((1, 8, 8, 4)))  # shape checks run under jit too
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        jpeg_lib.jpeg(jnp.full((1, 8, 8, 3), 255.0))


# ------------------------------------------------------------------------------------ TVM


def test_divergence_is_minus_adjoint_of_gradient():
    keys = jax.random.split(jax.random.key(0), 3)
    z, ph, pw = (jax.random.normal(k, (2, 3, 7, 9)) for k in keys)

    @jax.jit
    def both_sides(z, ph, pw):
        dh, dw = tvm_lib._gradient(z)
        return jnp.sum(dh * ph + dw * pw), -jnp.sum(z * tvm_lib._divergence(ph, pw))

    np.testing.assert_allclose(*both_sides(z, ph, pw), rtol=1e-4)


def _noisy(x: np.ndarray, seed: int = 1) -> tuple[jax.Array, jax.Array]:
    clean = jnp.asarray(x, jnp.float32)
    noise = (8 / 255) * jax.random.normal(jax.random.key(seed), clean.shape)
    return clean, jnp.clip(clean + noise, 0, 1)


def _l2(a: jax.Array, b: jax.Array) -> float:
    return float(jnp.sqrt(jnp.sum((a - b) ** 2, axis=(1, 2, 3))).mean())


def test_tvm_default_solve_is_converged(synthetic_uint8):
    _, noisy = _noisy(synthetic_uint8[:2] / 255)
    mask = tvm_lib.dropout_mask(jax.random.key(2), noisy.shape, 0.5)
    weight = tvm_lib.DEFAULT_WEIGHT
    tau = tvm_lib.STEP_SIZE_SCALE / weight
    solve = jax.jit(tvm_lib.solve_tv, static_argnames=("steps",))
    default = solve(noisy, mask, weight, steps=tvm_lib.DEFAULT_STEPS, step_size=tau)
    reference = solve(noisy, mask, weight, steps=500, step_size=tau)
    objective = lambda z: float(tvm_lib.tvm_objective(z, noisy, mask, weight).mean())
    start, ours, best = objective(noisy), objective(default), objective(reference)
    assert ours < start
    assert (ours - best) / (start - best) < 0.01  # measured: 0.11% of the optimum above it
    np.testing.assert_allclose(default, tvm(noisy, jax.random.key(2)), atol=1e-6)


def test_tvm_removes_noise_on_smooth_images(synthetic_uint8):
    # Defaults (keep 0.5, weight 0.003) on an image without edges: measured L2 1.735 ->
    # 1.336 (-23%); dropped pixels are refilled from their neighbours.
    clean, noisy = _noisy(np.repeat(_smooth_image()[None], 2, axis=0))
    purified = tvm(noisy, jax.random.key(2))
    assert _l2(purified, clean) < 0.85 * _l2(noisy, clean)
    # The TV term alone (nothing dropped) smooths the textured synthetic images too
    # (measured -6%); with half the pixels dropped they lose more to the inpainting of
    # edges and textures than they gain (1.70 -> 2.87, see tvm.py).
    clean, noisy = _noisy(synthetic_uint8[:2] / 255)
    purified = tvm(noisy, jax.random.key(2), keep_prob=1.0)
    assert _l2(purified, clean) < 0.97 * _l2(noisy, clean)


def test_tvm_randomness_is_the_key_and_weight_zero_is_identity(synthetic_uint8):
    x = jnp.asarray(synthetic_uint8[:2], jnp.float32) / 255
    a, b = tvm(x, jax.random.key(0)), tvm(x, jax.random.key(0))
    c = tvm(x, jax.random.key(1))
    np.testing.assert_array_equal(a, b)
    assert float(jnp.abs(a - c).max()) > 0.05
    assert a.shape == x.shape and a.dtype == jnp.float32
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    np.testing.assert_allclose(tvm(x, jax.random.key(0), weight=0.0), x, atol=1e-6)
    purify = tvm_lib.tvm_purifier(steps=5, keep_prob=0.7)
    x = x[:1, :8, :8]
    expected = tvm_lib.tvm(x, jax.random.key(3), steps=5, keep_prob=0.7)
    np.testing.assert_array_equal(purify(x, jax.random.key(3)), expected)


def test_tvm_is_differentiable_end_to_end(synthetic_uint8):
    x = jnp.asarray(synthetic_uint8[:2, :16, :16], jnp.float32) / 255
    weights = jax.random.normal(jax.random.key(3), x.shape)
    loss = lambda x: jnp.sum(weights * tvm_lib.tvm(x, jax.random.key(0), steps=20))
    grad = jax.jit(jax.grad(loss))(x)
    assert bool(jnp.all(jnp.isfinite(grad)))
    assert float(jnp.mean(grad != 0)) > 0.5


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(keep_prob=0.0), "keep_prob"),
        (dict(keep_prob=1.5), "keep_prob"),
        (dict(weight=-1.0), "weight"),
        (dict(step_size=0.0), "step_size"),
        (dict(steps=2.5), "steps"),
    ],
)
def test_tvm_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        tvm_lib.tvm(jnp.zeros((1, 8, 8, 3)), jax.random.key(0), **options)
    with pytest.raises(ValueError, match=message):
        tvm_lib.tvm_purifier(**options)


def test_tvm_purifier_rejects_unknown_options():
    with pytest.raises(ValueError, match="Unknown TVM options"):
        tvm_lib.tvm_purifier(lam=0.1)


# ---------------------------------------------------------------------------- thermometer


def test_thermometer_code_values():
    values = jnp.asarray([0.0, 0.05, 1 / 16, 0.5, 0.99, 1.0])
    x = jnp.stack([values, 1 - values], axis=-1)[None, None]  # (1, 1, 6, 2)
    code = thermo.thermometer_encode(x, 16)
    assert code.shape == (1, 1, 6, 32) and code.dtype == jnp.float32
    ones = np.asarray(code[0, 0, :, :16]).sum(-1)
    np.testing.assert_array_equal(ones, [1, 1, 2, 9, 16, 16])  # min(floor(16 v), 15) + 1
    bits = np.asarray(code[0, 0])
    for row in bits.reshape(6, 2, 16):  # the set bits of each channel come first
        for channel in row:
            k = int(channel.sum())
            np.testing.assert_array_equal(channel, [1] * k + [0] * (16 - k))
    # Channel c's bits are c * L .. c * L + L - 1: the second channel holds 1 - v.
    np.testing.assert_array_equal(bits[:, 16:].sum(-1), [16, 16, 16, 9, 1, 1])


def test_thermometer_gradients_and_smooth_limit():
    # 8-bit levels k / 255, k >= 1, lie at least 1/4080 from every threshold i / 16.
    x = jax.random.randint(jax.random.key(0), (2, 4, 4, 3), 1, 256) / 255
    exact = jax.grad(lambda x: jnp.sum(thermo.thermometer_encode(x, 16)))(x)
    assert float(jnp.abs(exact).max()) == 0.0
    smooth = jax.grad(lambda x: jnp.sum(thermo.thermometer_encode_smooth(x, 16)))(x)
    assert float(jnp.min(smooth)) > 0
    sharp = thermo.thermometer_encode_smooth(x, 16, temperature=1e5)
    np.testing.assert_allclose(sharp, thermo.thermometer_encode(x, 16), atol=1e-6)


def test_thermometer_input_is_a_zoo_classifier():
    levels = 8
    model = thermo.thermometer_classifier("tiny", levels=levels, num_classes=10, widths=(4,))
    x = jax.random.randint(jax.random.key(0), (2, 8, 8, 3), 1, 256) / 255
    plain = get_classifier("tiny", num_classes=10, widths=(4,))
    shapes = jax.tree.map(jnp.shape, jax.eval_shape(model.init, jax.random.key(1), x))
    plain_shapes = jax.tree.map(jnp.shape, jax.eval_shape(plain.init, jax.random.key(1), x))
    assert shapes["params"]["Conv_0"]["kernel"] == (3, 3, 3 * levels, 4)
    shapes["params"]["Conv_0"]["kernel"] = plain_shapes["params"]["Conv_0"]["kernel"]
    assert shapes == plain_shapes  # same tree: head at the top, as CAFA/CAM code expects
    # The attacker's smooth copy shares the variables.
    smooth = thermo.ThermometerInput(model.classifier, levels=levels, smooth=1e5)

    @jax.jit  # one program for all the calls: compiles dominate on the shared CPU
    def run(x):
        variables = model.init(jax.random.key(1), x)
        logits, features = model.apply(variables, x, return_features=True)
        _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        smooth_sum, grad = jax.value_and_grad(lambda x: smooth.apply(variables, x).sum())(x)
        return logits, features, updates, smooth_sum, grad

    logits, features, updates, smooth_sum, grad = run(x)
    assert logits.shape == (2, 10) and features.shape == (2, 8, 8, 4)
    assert jax.tree.map(jnp.shape, updates["batch_stats"]) == plain_shapes["batch_stats"]
    np.testing.assert_allclose(smooth_sum, logits.sum(), rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(grad).max()) > 0


def test_thermometer_rejects_normalisation_and_bad_levels():
    model = thermo.ThermometerInput(get_classifier("tiny", mean=(0.5,) * 3, std=(0.25,) * 3))
    with pytest.raises(ValueError, match="mean=None"):
        model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="levels"):
        thermo.thermometer_encode(jnp.zeros((1, 8, 8, 3)), 1)
    with pytest.raises(ValueError, match="temperature"):
        thermo.thermometer_encode_smooth(jnp.zeros((1, 8, 8, 3)), 16, temperature=0.0)
