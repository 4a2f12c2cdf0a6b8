"""`attacks.tiled_max_pool`: the same logits and gradients, without select-and-scatter."""

from __future__ import annotations

import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from capjax import attacks

# The package's names shadow its submodules (attacks.apgd is the function).
apgd_module = importlib.import_module("capjax.attacks.apgd")


class PoolNet(nn.Module):
    """A user's CNN: conv-ReLU-max-pool twice (one pool inside a jitted helper), a dense head,
    and one overlapping pool that must be left alone."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(6, (3, 3))(x))
        x = jax.jit(lambda v: nn.max_pool(v, (2, 2), (2, 2)))(x)
        x = nn.max_pool(x, (3, 3), (1, 1), padding="SAME")  # overlapping: not rewritten
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def _setup(seed=0):
    model = PoolNet()
    x = jax.random.uniform(jax.random.key(seed), (3, 9, 9, 3))  # 9: odd rows are dropped
    variables = model.init(jax.random.key(1), x)
    return model, variables, x


def _primitives(jaxpr) -> set[str]:
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                names |= _primitives(inner)
    return names


def test_same_logits_and_input_gradient():
    model, variables, x = _setup()
    plain = attacks.flax_logits_fn(model, variables, fast_max_pool=False)
    tiled = attacks.tiled_max_pool(plain)

    def loss(fn):
        return jax.jit(jax.value_and_grad(lambda x: jnp.sum(jnp.sin(fn(x)))))

    (v0, g0), (v1, g1) = loss(plain)(x), loss(tiled)(x)
    np.testing.assert_allclose(v1, v0, rtol=1e-6)
    np.testing.assert_allclose(g1, g0, rtol=1e-5, atol=1e-7)


def test_tiling_pools_lose_select_and_scatter_and_others_keep_it():
    model, variables, x = _setup()
    grad = jax.grad(lambda x, fn: jnp.sum(fn(x)))
    plain = attacks.flax_logits_fn(model, variables, fast_max_pool=False)
    before = _primitives(jax.make_jaxpr(grad)(x, plain).jaxpr)
    after = _primitives(jax.make_jaxpr(grad)(x, attacks.tiled_max_pool(plain)).jaxpr)
    assert "reduce_window_max" in before and "reduce_window_max" in after  # the SAME pool
    count = lambda names: sum("select_and" in n for n in names)  # noqa: E731
    assert count(before) >= 1
    # Only the overlapping pool's gradient still needs the windowed scatter.
    assert count(after) <= count(before)
    tiled_only = attacks.tiled_max_pool(lambda x: nn.max_pool(x, (2, 2), (2, 2)))
    names = _primitives(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(tiled_only(x))))(x).jaxpr)
    assert not any(n.startswith(("reduce_window", "select_and")) for n in names)


def test_a_second_attack_call_reuses_the_compiled_program():
    model, variables, x = _setup()
    y = jnp.array([0, 1, 2])
    other = jax.tree.map(lambda v: v * 1.01, variables)
    # Whether the loop is one program or driven from the host (`host_loop`).
    programs = lambda: (  # noqa: E731
        apgd_module._apgd._cache_size() + apgd_module._chunk_program._cache_size()
    )
    before = programs()
    for v in (variables, other):
        fn = attacks.tiled_max_pool(attacks.flax_logits_fn(model, v))
        x_adv = attacks.apgd(fn, x, y, eps=8 / 255, steps=2, key=jax.random.key(0))
        assert float(jnp.max(jnp.abs(x_adv - x))) <= 8 / 255 + 1e-6
    assert programs() == before + 1


def test_plain_callable_and_pytree_outputs():
    pool = attacks.tiled_max_pool(lambda x: {"a": nn.max_pool(x, (2, 2), (2, 2)), "b": x.sum()})
    x = jnp.arange(32.0).reshape(1, 4, 4, 2)
    out = pool(x)
    np.testing.assert_array_equal(out["a"], nn.max_pool(x, (2, 2), (2, 2)))
    assert float(out["b"]) == float(x.sum())


def test_flax_logits_fn_rewrites_by_default_and_wrapping_twice_is_once():
    model, variables, x = _setup()
    fast = attacks.flax_logits_fn(model, variables)
    assert attacks.tiled_max_pool(fast) is fast
    grad = jax.grad(lambda x, fn: jnp.sum(fn(x)))
    exact = attacks.flax_logits_fn(model, variables, fast_max_pool=False)

    def scatters(jaxpr) -> int:  # windowed-max gradients, counted per equation
        n = 0
        for eqn in jaxpr.eqns:
            n += "select_and" in eqn.primitive.name
            for value in eqn.params.values():
                inner = getattr(value, "jaxpr", value)
                n += scatters(inner) if hasattr(inner, "eqns") else 0
        return n

    count = lambda fn: scatters(jax.make_jaxpr(grad)(x, fn).jaxpr)  # noqa: E731
    assert count(exact) >= 3 and count(fast) < count(exact)
    np.testing.assert_allclose(fast(x), exact(x), rtol=1e-6)


def test_a_model_without_tiling_pools_runs_as_written(monkeypatch):
    """No equation to rewrite: the wrapper calls the model itself, so its jaxpr (and any
    primitive the interpreter would have to re-bind) is the model's own."""
    fast_pool = importlib.import_module("capjax.attacks.fast_pool")

    def interpreted(*_):
        raise AssertionError("the jaxpr interpreter ran on a model with nothing to rewrite")

    monkeypatch.setattr(fast_pool, "_eval", interpreted)
    w = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)

    def net(x):
        h = nn.max_pool(x, (3, 3), (1, 1), padding="SAME")  # overlapping: left alone
        return jax.lax.cond(h.sum() > 0, lambda v: v @ w, lambda v: -v @ w, h.mean((1, 2)))

    x = jax.random.uniform(jax.random.key(0), (2, 5, 5, 4))
    assert str(jax.make_jaxpr(attacks.tiled_max_pool(net))(x)) == str(jax.make_jaxpr(net)(x))
