"""The names users import from `capjax.attacks`, and the package's independence."""

import subprocess
import sys

import jax
import jax.numpy as jnp

from capjax import attacks


def test_every_public_name_is_a_callable():
    assert attacks.__all__
    for name in attacks.__all__:
        assert callable(getattr(attacks, name)), name


def test_attacks_import_nothing_else_of_capjax():
    code = (
        "import sys, capjax.attacks; "
        "print(sorted(m for m in sys.modules if m.startswith('capjax') "
        "and not m.startswith('capjax.attacks') and m != 'capjax'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_design_doc_example_runs_on_a_user_model():
    """docs/design.md's example with a plain linear model that is not a capjax model."""
    w = jax.random.normal(jax.random.key(0), (32 * 32 * 3, 10)) * 0.01
    logits_fn = lambda x: x.reshape(x.shape[0], -1) @ w
    x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))
    y = jnp.argmax(logits_fn(x), -1)
    x_adv = attacks.pgd(
        logits_fn,
        x,
        y,
        eps=8 / 255,
        step_size=2 / 255,
        steps=10,
        norm="linf",
        loss="ce",
        targeted=False,
        random_start=True,
        key=jax.random.key(2),
    )
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    # Exact in the images' dtype: eps itself is rounded to float32 first.
    assert jnp.max(jnp.abs(x_adv - x)) <= jnp.float32(8 / 255)
    assert float(jnp.mean(jnp.argmax(logits_fn(x_adv), -1) == y)) < 1.0
