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
