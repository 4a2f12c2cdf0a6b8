"""`capjax.run_once`: programs compiled for compile speed give the default compile's values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from capjax.core import mesh as mesh_lib
from capjax.models.zoo import get_classifier
from capjax.run_once import run_once


def draws(key):
    k1, k2 = jax.random.split(key)
    return {
        "normal": jax.random.normal(k1, (257,)),
        "truncated": jax.random.truncated_normal(k2, -2.0, 2.0, (3, 3, 5)),
    }


def test_values_are_the_default_compiles_up_to_float32_rounding():
    key = jax.random.key(7)
    fast = run_once(draws, key)
    default = jax.jit(draws)(key)
    for name in fast:
        # The generator's bits are the same; only the float transforms may round apart.
        np.testing.assert_allclose(fast[name], default[name], rtol=1e-6, atol=1e-7)


def test_model_init_is_reproducible_and_placed_as_asked():
    model = get_classifier("tiny", num_classes=10, widths=(4, 8, 8))
    mesh = mesh_lib.make_mesh()
    rep = mesh_lib.replicated(mesh)

    def init(key):
        return model.init(key, jnp.zeros((1, 16, 16, 3)))

    first = run_once(init, jax.random.key(0), out_shardings=rep)
    again = run_once(init, jax.random.key(0), out_shardings=rep)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.sharding.is_equivalent_to(rep, a.ndim)
    other = run_once(init, jax.random.key(1))
    kernel = first["params"]["Conv_0"]["kernel"]
    assert not np.array_equal(kernel, other["params"]["Conv_0"]["kernel"])
