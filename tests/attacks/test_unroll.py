"""capjax's loop-unrolling policy on XLA:CPU (`capjax.attacks._common.default_unroll`)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from capjax import attacks
from capjax.attacks import _common

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU policy")


def _body(depth):
    def body(i, carry):
        for _ in range(depth):
            carry = jnp.sin(carry) + i
        return carry

    return body


def test_count_equations_includes_nested_jaxprs():
    inner = jax.jit(lambda x: jnp.sin(x) * 2.0)
    jaxpr = jax.make_jaxpr(lambda x: inner(x) + 1.0)(1.0).jaxpr
    # pjit, add at the top; sin, mul inside
    assert _common.count_equations(jaxpr) == 4


def test_short_small_loops_unroll_fully():
    assert _common.default_unroll(20) == 20
    assert _common.default_unroll(20, body=_body(2), init=jnp.zeros(3)) == 20


def test_long_loops_unroll_partially():
    assert _common.default_unroll(41) == _common.CPU_PARTIAL_UNROLL
    assert _common.default_unroll(100, full_max=100) == 100


def test_a_large_body_keeps_the_loop(monkeypatch):
    """Steps x equations past the bound: compile time would dwarf the run (a CAP-GAN
    generator end to end compiled APGD-100 in 361 s fully unrolled, 21 s rolled)."""
    monkeypatch.setattr(_common, "CPU_FULL_UNROLL_MAX_EQUATIONS", 1000)
    small, large = _body(2), _body(200)
    assert _common.default_unroll(40, body=small, init=jnp.zeros(3)) == 40
    assert _common.default_unroll(40, body=large, init=jnp.zeros(3)) == _common.CPU_PARTIAL_UNROLL

    # inside jit, with a traced carry, as every attack calls it
    @jax.jit
    def run(x):
        return _common.attack_loop(40, large, x)

    expected = _common.attack_loop(40, large, jnp.ones(3), unroll=1)
    assert jnp.allclose(run(jnp.ones(3)), expected)
    jaxpr = jax.make_jaxpr(run)(jnp.ones(3))
    assert "unroll=10" in str(jaxpr) or "unroll=np.int64(10)" in str(jaxpr)


def test_primitive_names_include_nested_jaxprs():
    inner = jax.jit(lambda x: jnp.sin(x) * 2.0)
    jaxpr = jax.make_jaxpr(lambda x: inner(x) + 1.0)(jnp.zeros((10,), jnp.float32)).jaxpr
    assert {"sin", "mul", "add"} <= _common.primitive_names(jaxpr)


def _pool_logits(w):
    """A linear model behind a 2x2 `nn.max_pool`, whose gradient is select-and-scatter."""
    return lambda z: nn.max_pool(z, (2, 2), (2, 2)).reshape(z.shape[0], -1) @ w


def test_a_windowed_max_gradient_keeps_the_loop_rolled():
    x = jnp.full((2, 6, 6, 3), 0.5)
    w = jnp.ones((3 * 3 * 3, 4))

    def body(fn):
        return lambda i, z: z + jax.grad(lambda v: jnp.sum(fn(v)))(z)

    assert _common.default_unroll(20, body=body(_pool_logits(w)), init=x) == 1
    tiled = attacks.tiled_max_pool(_pool_logits(w))
    assert _common.default_unroll(20, body=body(tiled), init=x) == 20


def test_attack_memory_does_not_grow_with_steps_behind_a_max_pool():
    """XLA's compiled temporaries of APGD at 10 and 40 steps through `nn.max_pool`: the same
    (the loop stays rolled), where full unrolling keeps every iteration's select-and-scatter
    buffers."""
    x = jnp.full((5, 6, 6, 3), 0.5)
    y = jnp.zeros((5,), jnp.int32)
    logits = _pool_logits(jnp.ones((3 * 3 * 3, 4)) / 100)

    def temporaries(steps, unroll=None):
        fn = lambda x, y: attacks.apgd(  # noqa: E731
            logits,
            x,
            y,
            eps=0.1,
            steps=steps,
            key=jax.random.key(0),
            unroll=unroll,
            validate=False,
        )
        return jax.jit(fn).lower(x, y).compile().memory_analysis().temp_size_in_bytes

    assert temporaries(40) <= temporaries(10) * 1.1
    assert temporaries(40, unroll=True) > 2 * temporaries(40)  # what the rule avoids
