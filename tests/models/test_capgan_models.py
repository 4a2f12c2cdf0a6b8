"""Properties of CAP-GAN's networks (U-GAT-IT generator and discriminators at 32x32).

Default-size models are only traced (`jax.eval_shape`: shapes and parameter counts, checked
against hand counts of U-GAT-IT's layers); numbers come from narrow versions (width 4-8, one
residual block, 16x16 or 32x32 inputs, batch 2) so the file runs in seconds on 2 CPU cores.

Parameters are drawn with numpy into the structure `jax.eval_shape(model.init)` reports:
compiling a Flax init (threefry for every parameter shape, plus the forward pass) costs
several times the apply on XLA:CPU, and these properties hold for any parameters. The
initial values `init` does set by construction (`rho`) are checked on the norm layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capjax.models import (
    AttentionDiscriminator,
    AttentionGenerator,
    MultiScaleDiscriminator,
    attention_features,
)
from capjax.models.capgan_nets import ILN, AdaILN

WIDTH = 8


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _images(seed: int, shape=(2, 16, 16, 3)) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), jnp.float32)


def _random_variables(model, x, seed: int):
    """Variables of `model`'s structure: LeCun-normal kernels, small random everything else."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            value = rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
        elif name == "rho":
            value = rng.uniform(size=leaf.shape)
        elif name == "gamma":
            value = 1.0 + 0.1 * rng.normal(size=leaf.shape)
        elif name.endswith("/sigma"):
            value = np.ones(leaf.shape)
        else:  # biases, beta, spectral-norm u vectors
            value = 0.1 * rng.normal(size=leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _with_zero_eta(variables):
    params = dict(variables["params"])
    for name in ("gap_fc", "gmp_fc"):
        params[name] = {"kernel": jnp.zeros_like(params[name]["kernel"])}
    return {**variables, "params": params}


@pytest.fixture(scope="module")
def generator():
    """A width-8, one-block generator on 16x16 (bottleneck 4x4x32) and its jitted apply."""
    model = AttentionGenerator(base_width=WIDTH, num_blocks=1)
    variables = _random_variables(model, _images(0), seed=0)
    run = jax.jit(lambda v, x: model.apply(v, x, return_attention=True, mutable=["intermediates"]))
    return model, variables, run


@pytest.fixture(scope="module")
def discriminator():
    """A spectrally normalised width-8, 2-downsample discriminator on 16x16 (features 3x3)."""
    model = AttentionDiscriminator(base_width=WIDTH, num_downsamples=2)
    variables = _random_variables(model, _images(1), seed=1)
    run = jax.jit(
        lambda v, x, update: model.apply(
            v, x, update_stats=update, mutable=["intermediates", "batch_stats"]
        ),
        static_argnums=2,
    )
    return model, variables, run


def test_default_sizes_and_parameter_counts():
    x = jnp.zeros((2, 32, 32, 3))
    gen = AttentionGenerator()
    gen_vars = jax.eval_shape(gen.init, jax.random.key(0), x)
    out, cam, heat = jax.eval_shape(lambda v: gen.apply(v, x, return_attention=True), gen_vars)
    assert (out.shape, out.dtype) == ((2, 32, 32, 3), jnp.float32)
    assert (cam.shape, heat.shape) == ((2, 2), (2, 8, 8))
    assert set(gen_vars) == {"params"}
    # Hand count of U-GAT-IT's light ResnetGenerator (ngf 64, 4 blocks, 3 channels).
    assert _count(gen_vars["params"]) == 10_589_888
    # Non-light: the first MLP layer sees the flattened 8x8x256 map instead of its mean.
    heavy_vars = jax.eval_shape(AttentionGenerator(light=False).init, jax.random.key(0), x)
    assert _count(heavy_vars["params"]) - 10_589_888 == (8 * 8 - 1) * 256 * 256

    disc = MultiScaleDiscriminator()
    disc_vars = jax.eval_shape(disc.init, jax.random.key(0), x)
    outs = jax.eval_shape(disc.apply, disc_vars, x)
    assert set(disc_vars["params"]) == {"scale_0", "scale_1"}
    # Global (32 -> 4): features 3x3, patches 2x2; local (32 -> 8): 7x7 and 6x6.
    assert [tuple(o.shape for o in scale) for scale in outs] == [
        ((2, 2, 2), (2, 2), (2, 3, 3)),
        ((2, 6, 6), (2, 2), (2, 7, 7)),
    ]
    assert _count(disc_vars["params"]["scale_0"]) == 3_290_560
    assert _count(disc_vars["params"]) == 4_085_376


def test_attention_features_is_eta_weighted_features():
    features = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 3, 4)), jnp.float32)
    gap_kernel = jnp.array([[1.0], [-2.0], [0.5], [0.0]])
    gmp_kernel = jnp.array([[0.0], [1.0], [3.0], [-1.0]])
    gap_logits, gmp_logits, attended = attention_features(features, gap_kernel, gmp_kernel)
    assert (gap_logits.shape, gmp_logits.shape, attended.shape) == ((2, 1), (2, 1), (2, 3, 3, 8))
    f = np.asarray(features)
    np.testing.assert_allclose(gap_logits[:, 0], f.mean((1, 2)) @ [1, -2, 0.5, 0], rtol=1e-5)
    np.testing.assert_allclose(gmp_logits[:, 0], f.max((1, 2)) @ [0, 1, 3, -1], rtol=1e-5)
    np.testing.assert_allclose(attended[..., 1], -2.0 * f[..., 1], rtol=1e-6)
    np.testing.assert_allclose(attended[..., 6], 3.0 * f[..., 2], rtol=1e-6)
    # The average-pool logit is the spatial mean of the attended map's channel sum.
    np.testing.assert_allclose(
        gap_logits[:, 0], np.asarray(attended[..., :4]).sum(-1).mean((1, 2)), rtol=1e-5
    )
    zeros = jnp.zeros((4, 1))
    gap_logits, gmp_logits, attended = attention_features(features, zeros, zeros)
    assert not np.any(np.asarray(attended)) and not np.any(np.asarray(gap_logits))
    with pytest.raises(ValueError, match=r"\(4, 1\)"):
        attention_features(features, jnp.zeros((3, 1)), zeros)


def test_generator_output_in_unit_box_even_for_extreme_inputs(generator):
    model, variables, run = generator
    extreme = jnp.concatenate(
        [jnp.full((1, 16, 16, 3), 1e6), -1e6 * _images(3, (1, 16, 16, 3))], axis=0
    )
    outputs = {}
    for name, x in (("a", _images(4)), ("b", _images(5)), ("extreme", extreme)):
        (out, cam, heat), _ = run(variables, x)
        assert (out.shape, out.dtype) == ((2, 16, 16, 3), jnp.float32)
        assert (cam.shape, cam.dtype) == ((2, 2), jnp.float32)
        assert (heat.shape, heat.dtype) == ((2, 4, 4), jnp.float32)
        out = np.asarray(out)
        assert np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 1.0
        outputs[name] = out
    # The output depends on the input; without return_attention only the image comes back.
    assert np.abs(outputs["a"] - outputs["b"]).max() > 1e-3
    plain_call = jax.eval_shape(model.apply, variables, _images(4))
    assert (plain_call.shape, plain_call.dtype) == ((2, 16, 16, 3), jnp.float32)


def test_generator_attention_is_built_from_eta_weights(generator):
    _, variables, run = generator
    x = _images(6)
    (_, cam, heat), state = run(variables, x)
    (features,) = state["intermediates"]["features"]
    assert features.shape == (2, 4, 4, 4 * WIDTH)
    params = variables["params"]
    gap_k, gmp_k = params["gap_fc"]["kernel"], params["gmp_fc"]["kernel"]
    gap_logits, gmp_logits, attended = attention_features(features, gap_k, gmp_k)
    np.testing.assert_allclose(cam, jnp.concatenate([gap_logits, gmp_logits], -1), atol=1e-5)
    np.testing.assert_allclose(
        cam[:, 0], np.asarray(features).mean((1, 2)) @ np.asarray(gap_k)[:, 0], atol=1e-5
    )
    fuse = params["conv1x1"]
    expected_heat = jax.nn.relu(attended @ fuse["kernel"][0, 0] + fuse["bias"]).sum(-1)
    np.testing.assert_allclose(heat, expected_heat, rtol=1e-4, atol=1e-4)

    # Without eta's weights there is no attention: logits 0, heatmap only the 1x1 bias.
    (_, cam0, heat0), _ = run(_with_zero_eta(variables), x)
    np.testing.assert_array_equal(cam0, 0.0)
    np.testing.assert_allclose(heat0, float(jax.nn.relu(fuse["bias"]).sum()), rtol=1e-5)


def test_rho_parameters(generator):
    model, _, _ = generator
    shapes = jax.eval_shape(model.init, jax.random.key(0), _images(0))["params"]
    rhos = {
        jax.tree_util.keystr(path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]
        if path[-1].key == "rho"
    }
    # One per AdaILN (2 per decoder block; 1 block here) and one per upsampling ILN.
    assert set(rhos) == {
        "['up_block_0']['norm1']['rho']",
        "['up_block_0']['norm2']['rho']",
        "['up_norm_0']['rho']",
        "['up_norm_1']['rho']",
    }
    widths = [4 * WIDTH, 4 * WIDTH, 2 * WIDTH, WIDTH]
    assert [(r.shape, r.dtype) for r in rhos.values()] == [((w,), jnp.float32) for w in widths]

    # U-GAT-IT's initial values: AdaILN 0.9 (mostly IN), ILN 0.0 (pure LN), ILN gamma 1.
    h, style = jnp.ones((1, 2, 2, 3)), jnp.ones((1, 3))
    ada = AdaILN().init(jax.random.key(0), h, style, style)["params"]
    iln = ILN().init(jax.random.key(0), h)["params"]
    np.testing.assert_array_equal(ada["rho"], np.full(3, 0.9, np.float32))
    np.testing.assert_array_equal(iln["rho"], np.zeros(3, np.float32))
    np.testing.assert_array_equal(iln["gamma"], np.ones(3, np.float32))


def test_adailn_mixes_instance_and_layer_norm():
    x = jnp.asarray(3.0 * np.random.default_rng(7).normal(size=(2, 4, 4, 3)) + 1.0, jnp.float32)
    gamma = jnp.array([[1.0, 2.0, 0.5], [1.0, 1.0, 1.0]])
    beta = jnp.array([[0.0, 1.0, -1.0], [0.5, 0.5, 0.5]])
    xn = np.asarray(x, np.float64)
    inst = (xn - xn.mean((1, 2), keepdims=True)) / np.sqrt(xn.var((1, 2), keepdims=True) + 1e-5)
    layer = (xn - xn.mean((1, 2, 3), keepdims=True)) / np.sqrt(
        xn.var((1, 2, 3), keepdims=True) + 1e-5
    )
    for rho in (1.0, 0.0, 0.25):
        out = AdaILN().apply({"params": {"rho": jnp.full((3,), rho)}}, x, gamma, beta)
        mixed = rho * inst + (1 - rho) * layer
        expected = mixed * np.asarray(gamma)[:, None, None] + np.asarray(beta)[:, None, None]
        np.testing.assert_allclose(out, expected, atol=1e-4)


def test_discriminator_attention_uses_normalised_eta_weights(discriminator):
    _, variables, run = discriminator
    x = _images(8)
    (patch, cam, heat), state = run(variables, x, False)
    assert (patch.shape, cam.shape, heat.shape) == ((2, 2, 2), (2, 2), (2, 3, 3))
    assert patch.dtype == cam.dtype == heat.dtype == jnp.float32
    (features,) = state["intermediates"]["features"]
    assert features.shape == (2, 3, 3, 4 * WIDTH)
    params = variables["params"]
    # A (C, 1) kernel's only singular value is its norm: spectral norm gives w / |w| exactly.
    gap_k, gmp_k = (
        params[n]["kernel"] / jnp.linalg.norm(params[n]["kernel"]) for n in ("gap_fc", "gmp_fc")
    )
    gap_logits, gmp_logits, attended = attention_features(features, gap_k, gmp_k)
    np.testing.assert_allclose(cam, jnp.concatenate([gap_logits, gmp_logits], -1), atol=1e-5)
    fuse = params["conv1x1"]
    fused = attended @ fuse["kernel"][0, 0] + fuse["bias"]
    np.testing.assert_allclose(heat, jax.nn.leaky_relu(fused, 0.2).sum(-1), rtol=1e-4, atol=1e-4)

    (_, cam0, heat0), _ = run(_with_zero_eta(variables), x, False)
    np.testing.assert_array_equal(cam0, 0.0)
    expected = float(jax.nn.leaky_relu(fuse["bias"], 0.2).sum())
    np.testing.assert_allclose(heat0, expected, rtol=1e-5)


def test_spectral_norm_state_and_effective_kernels(discriminator):
    _, variables, run = discriminator
    x = _images(9)
    stats = variables["batch_stats"]
    assert set(stats) == {f"{n}_sn" for n in ("down_0", "down_1", "down_last", "classifier")} | {
        "gap_fc_sn",
        "gmp_fc_sn",
    }
    # Without update_stats the power-iteration state is left alone; with it, it moves.
    _, frozen = run(variables, x, False)
    jax.tree_util.tree_map(np.testing.assert_array_equal, frozen["batch_stats"], stats)
    _, moved = run(variables, x, True)
    u = "down_0/kernel/u"
    assert np.abs(moved["batch_stats"]["down_0_sn"][u] - stats["down_0_sn"][u]).max() > 1e-3

    # Power iteration from a random u: each step shrinks the error by (s2 / s1)**2, which
    # is 0.97 for `down_last` here, hence the many steps (each a cached jitted call).
    updated = variables
    for _ in range(400):
        _, new_state = run(updated, x, True)
        updated = {"params": variables["params"], "batch_stats": new_state["batch_stats"]}
    # A step with update_stats stores the sigma its own forward pass divided by.
    got, new_state = run(updated, x, True)
    params = variables["params"]
    plain_params = {"conv1x1": params["conv1x1"]}  # U-GAT-IT leaves the 1x1 conv unnormalised
    for name in ("down_0", "down_1", "down_last", "classifier"):
        kernel = np.asarray(params[name]["kernel"], np.float64)
        matrix = kernel.reshape(-1, kernel.shape[-1])
        top = np.linalg.svd(matrix, compute_uv=False)[0]
        sigma = float(new_state["batch_stats"][f"{name}_sn"][f"{name}/kernel/sigma"])
        # sigma = v^T W u with unit u, v never exceeds the top singular value, and it has
        # converged to it, so the kernel the layer uses (raw / sigma) has spectral norm 1.
        assert sigma <= top * (1 + 1e-5)
        np.testing.assert_allclose(sigma, top, rtol=1e-3)
        np.testing.assert_allclose(np.linalg.svd(matrix / sigma, compute_uv=False)[0], 1, 1e-3)
        plain_params[name] = {**params[name], "kernel": params[name]["kernel"] / sigma}
    for name in ("gap_fc", "gmp_fc"):
        kernel = params[name]["kernel"]
        plain_params[name] = {"kernel": kernel / jnp.linalg.norm(kernel)}

    # The normalised module is exactly the plain one applied to the normalised kernels.
    plain = AttentionDiscriminator(base_width=WIDTH, num_downsamples=2, spectral_norm=False)
    plain_shapes = jax.eval_shape(plain.init, jax.random.key(0), x)
    assert set(plain_shapes) == {"params"}
    assert jax.tree_util.tree_structure(plain_shapes["params"]) == jax.tree_util.tree_structure(
        plain_params
    )
    expected = jax.jit(plain.apply)({"params": plain_params}, x)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def test_multiscale_discriminator_without_spectral_norm_has_no_batch_stats():
    model = MultiScaleDiscriminator(base_width=4, scales=(3, 2), spectral_norm=False)
    x = _images(10, (2, 32, 32, 3))
    variables = _random_variables(model, x, seed=10)
    assert set(variables) == {"params"} and set(variables["params"]) == {"scale_0", "scale_1"}
    outs = jax.jit(model.apply)(variables, x)
    assert [tuple(o.shape for o in scale) for scale in outs] == [
        ((2, 2, 2), (2, 2), (2, 3, 3)),
        ((2, 6, 6), (2, 2), (2, 7, 7)),
    ]
    # Each scale is an AttentionDiscriminator of its own depth under its own name.
    local = AttentionDiscriminator(base_width=4, num_downsamples=2, spectral_norm=False)
    local_outs = jax.jit(local.apply)({"params": variables["params"]["scale_1"]}, x)
    for g, e in zip(outs[1], local_outs, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_outputs(generator, discriminator):
    _, gen_vars, gen_run = generator
    x = _images(11)
    gen16 = AttentionGenerator(base_width=WIDTH, num_blocks=1, dtype=jnp.bfloat16)
    shapes = jax.eval_shape(gen16.init, jax.random.key(0), x)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype("float32")}
    out16, cam16, heat16 = jax.jit(lambda v: gen16.apply(v, x, return_attention=True))(gen_vars)
    (out32, cam32, _), _ = gen_run(gen_vars, x)
    assert out16.dtype == cam16.dtype == heat16.dtype == jnp.float32
    assert 0.0 <= float(out16.min()) and float(out16.max()) <= 1.0
    assert float(jnp.abs(out16 - out32).max()) < 0.1
    np.testing.assert_allclose(cam16, cam32, rtol=0.1, atol=0.1)

    _, disc_vars, disc_run = discriminator
    disc16 = AttentionDiscriminator(base_width=WIDTH, num_downsamples=2, dtype=jnp.bfloat16)
    shapes = jax.eval_shape(disc16.init, jax.random.key(0), x)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype("float32")}
    outs16, updates = jax.jit(
        lambda v: disc16.apply(v, x, update_stats=True, mutable=["batch_stats"])
    )(disc_vars)
    outs32, _ = disc_run(disc_vars, x, True)
    assert all(o.dtype == jnp.float32 for o in outs16)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(updates)} == {jnp.dtype("float32")}
    for g, e in zip(outs16, outs32, strict=True):
        np.testing.assert_allclose(g, e, rtol=0.1, atol=0.1)


def test_invalid_inputs_raise():
    gen = AttentionGenerator(base_width=4, num_blocks=1)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="divisible by 4"):
        jax.eval_shape(gen.init, key, jnp.zeros((1, 18, 18, 3)))
    with pytest.raises(ValueError, match="NHWC"):
        jax.eval_shape(gen.init, key, jnp.zeros((16, 16, 3)))
    disc = AttentionDiscriminator(base_width=4, num_downsamples=3)
    with pytest.raises(ValueError, match="H, W >= 24"):
        jax.eval_shape(disc.init, key, jnp.zeros((1, 16, 16, 3)))


def test_residual_generator_starts_as_the_identity():
    model = AttentionGenerator(base_width=4, num_blocks=1, stem_kernel=3, residual=True)
    x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
    variables = model.init(jax.random.key(1), x)
    out, cam_logits, heatmap = model.apply(variables, x, return_attention=True)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x))
    assert cam_logits.shape == (2, 2) and heatmap.shape == (2, 4, 4)
