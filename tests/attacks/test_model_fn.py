"""`flax_logits_fn`: the model as a traced argument, so a second call does not compile again."""

import importlib

import jax
import numpy as np
import pytest

from capjax import attacks
from capjax.models import get_classifier

# The package's names shadow its submodules (attacks.apgd is the function).
apgd_module = importlib.import_module("capjax.attacks.apgd")
fab_module = importlib.import_module("capjax.attacks.fab")
square_module = importlib.import_module("capjax.attacks.square")


def _model_and_data():
    model = get_classifier("tiny", widths=(4,), use_bn=False)
    x = np.random.default_rng(0).uniform(0, 1, (3, 8, 8, 3)).astype(np.float32)
    variables = model.init(jax.random.key(0), x)
    other = jax.tree.map(lambda v: v * 1.5, variables)
    y = np.asarray(jax.numpy.argmax(model.apply(variables, x), -1))
    return model, variables, other, x, y


def test_same_logits_as_the_closure():
    model, variables, _, x, _ = _model_and_data()
    fn = attacks.flax_logits_fn(model, variables, train=False)
    np.testing.assert_array_equal(fn(x), model.apply(variables, x, train=False))
    assert jax.tree.leaves(fn) and all(
        a is b for a, b in zip(jax.tree.leaves(fn), jax.tree.leaves(variables), strict=True)
    )


@pytest.mark.parametrize(
    "attack, jitted, options",
    [
        # On CPU outside jit the loop is driven from the host: its chunk is the program.
        (attacks.apgd, apgd_module._chunk_program, {"steps": 2}),
        (attacks.fab, fab_module._chunk_program, {"steps": 2, "num_target_classes": 1}),
        (attacks.square, square_module._square, {"steps": 2}),
    ],
)
def test_second_call_with_new_weights_reuses_the_compiled_program(attack, jitted, options):
    model, variables, other, x, y = _model_and_data()
    key = jax.random.key(0)
    before = jitted._cache_size()
    attack(attacks.flax_logits_fn(model, variables, train=False), x, y, eps=0.1, key=key, **options)
    attack(attacks.flax_logits_fn(model, other, train=False), x, y, eps=0.1, key=key, **options)
    assert jitted._cache_size() == before + 1
    # A closure per call is a new static key: it compiles again (the behaviour documented).
    for v in (variables, other):
        attack(lambda z, v=v: model.apply(v, z, train=False), x, y, eps=0.1, key=key, **options)
    assert jitted._cache_size() == before + 3


def test_results_equal_the_closure_s():
    model, variables, _, x, y = _model_and_data()
    key = jax.random.key(1)
    a = attacks.apgd(
        attacks.flax_logits_fn(model, variables, train=False), x, y, eps=0.1, steps=3, key=key
    )
    b = attacks.apgd(
        lambda z: model.apply(variables, z, train=False), x, y, eps=0.1, steps=3, key=key
    )
    np.testing.assert_allclose(a, b, atol=1e-6)
