"""Tiny-output convolutions run as one matrix product, with the convolution's values."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capjax.models.layers import conv


@pytest.mark.parametrize(
    "size, kernel, stride",
    [(2, 3, 1), (1, 3, 1), (4, 3, 2), (3, 3, 2), (2, 1, 1), (8, 3, 1)],  # last: a plain conv
)
def test_matches_flax_conv_in_values_and_gradients(size, kernel, stride):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, size, size, 5)), jnp.float32)
    mine = conv(7, kernel, stride, jnp.float32, jnp.float32)
    pad = kernel // 2
    reference = nn.Conv(
        7, (kernel, kernel), strides=stride, padding=((pad, pad),) * 2, use_bias=False
    )
    variables = mine.init(jax.random.key(0), x)

    def loss(module, v, x):
        return jnp.sum(jnp.sin(module.apply(v, x)))

    np.testing.assert_allclose(mine.apply(variables, x), reference.apply(variables, x), atol=1e-5)
    for argnum in (0, 1):
        got = jax.grad(lambda v, x: loss(mine, v, x), argnum)(variables, x)
        want = jax.grad(lambda v, x: loss(reference, v, x), argnum)(variables, x)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), got, want)


def test_tiny_outputs_take_the_matmul_path():
    x = jnp.ones((2, 2, 2, 4))
    module = conv(4, 3, 1, jnp.float32, jnp.float32)
    variables = module.init(jax.random.key(0), x)
    hlo = jax.jit(module.apply).lower(variables, x).as_text()
    assert "convolution" not in hlo and "dot_general" in hlo
    big = jnp.ones((2, 8, 8, 4))
    assert "convolution" in jax.jit(module.apply).lower(variables, big).as_text()
