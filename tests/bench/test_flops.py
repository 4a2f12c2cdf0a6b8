"""`measure.traced_flops`: 2 x multiply-adds of convolutions and matrix products, from the jaxpr."""

import jax
import jax.numpy as jnp
import pytest

from capjax.bench.measure import traced_flops


def conv(x, k, stride=1):
    return jax.lax.conv_general_dilated(
        x, k, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def test_convolution_and_dense_counts():
    x, k = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    assert traced_flops(conv, (x, k)) == 2 * (2 * 8 * 8 * 4) * (3 * 3 * 3)
    a, b = jnp.ones((2, 5)), jnp.ones((5, 7))
    assert traced_flops(jnp.dot, (a, b)) == 2 * 2 * 7 * 5


def test_input_gradient_of_a_strided_conv_costs_about_the_forward_again():
    x, k = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    forward = traced_flops(lambda x: conv(x, k, 2), (x,))
    gradient = traced_flops(jax.grad(lambda x: jnp.sum(conv(x, k, 2))), (x,))
    assert gradient == pytest.approx(2 * forward)


def test_loops_and_jitted_calls_are_counted_inside():
    a, b = jnp.ones((2, 5)), jnp.ones((5, 5))
    one = traced_flops(jnp.dot, (a, b))
    looped = lambda a, b: jax.lax.fori_loop(0, 3, lambda i, c: jnp.dot(c, b), a)
    assert traced_flops(looped, (a, b)) == 3 * one
    assert traced_flops(jax.jit(jnp.dot), (a, b)) == one
    assert traced_flops(lambda a: a + 1, (a,)) is None  # no convolution or product
