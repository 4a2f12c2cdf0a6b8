"""capjax's loop-unrolling policy on XLA:CPU (`capjax.attacks._common.default_unroll`)."""

import jax
import jax.numpy as jnp
import pytest

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


def test_intermediate_bytes_counts_every_value_nested_ones_too():
    inner = jax.jit(lambda x: jnp.sin(x) * 2.0)
    jaxpr = jax.make_jaxpr(lambda x: inner(x) + 1.0)(jnp.zeros((10,), jnp.float32)).jaxpr
    # pjit's output, add's output; sin and mul inside: four float32[10] values
    assert _common.intermediate_bytes(jaxpr) == 4 * 40


def test_unrolled_buffers_stay_within_the_byte_bound(monkeypatch):
    """An unrolled loop keeps every iteration's buffers: the iterations per trip shrink so
    that they times one body's bytes stay within CPU_UNROLL_MAX_BYTES, down to 1."""
    init = jnp.zeros((1000,), jnp.float32)
    per_step = _common.intermediate_bytes(jax.make_jaxpr(_body(2))(0, init).jaxpr)
    assert 16_000 <= per_step < 16_100  # sin and add twice over 4,000 bytes, and i's casts
    monkeypatch.setattr(_common, "CPU_UNROLL_MAX_BYTES", 5 * per_step)
    assert _common.default_unroll(20, body=_body(2), init=init) == 5
    assert _common.default_unroll(100, full_max=100, body=_body(2), init=init) == 5
    monkeypatch.setattr(_common, "CPU_UNROLL_MAX_BYTES", per_step // 2)
    assert _common.default_unroll(20, body=_body(2), init=init) == 1


def test_attack_memory_does_not_grow_with_steps(monkeypatch):
    """XLA's compiled temporaries of APGD at 10 and 40 steps, with a byte bound that allows
    one iteration per trip: the same, where full unrolling would keep 4x more."""
    from capjax.attacks import apgd

    monkeypatch.setattr(_common, "CPU_UNROLL_MAX_BYTES", 1)
    x = jnp.full((5, 6, 6, 3), 0.5)
    y = jnp.zeros((5,), jnp.int32)
    w = jnp.ones((6 * 6 * 3, 4)) / 100

    def temporaries(steps):
        fn = lambda x, y: apgd(
            lambda z: z.reshape(z.shape[0], -1) @ w,
            x,
            y,
            eps=0.1,
            steps=steps,
            key=jax.random.key(0),
            validate=False,
        )
        return jax.jit(fn).lower(x, y).compile().memory_analysis().temp_size_in_bytes

    assert temporaries(40) <= temporaries(10) * 1.1
