"""Threat models: what the attacker sees, what is scored, and the errors for missing pieces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capjax.eval import threats
from capjax.eval.defense import Defense
from capjax.eval.suite import run_suite


def linear_logits(x):
    w = jnp.arange(12, dtype=jnp.float32).reshape(4, 3) / 10 - 0.5
    return x.reshape(len(x), -1) @ w


def noisy_purify(x, key):
    return jnp.clip(x + 0.1 * jax.random.normal(key, x.shape), 0, 1)


X = jnp.asarray(np.random.default_rng(0).uniform(0.2, 0.8, (4, 2, 2, 1)), jnp.float32)
Y = jnp.array([0, 1, 2, 0])
RANDOM = Defense("noise", linear_logits, purify=noisy_purify)


def loss_grad(fn):
    return jax.grad(lambda x: -jnp.sum(jax.nn.log_softmax(fn(x))[jnp.arange(4), Y]))(X)


@pytest.mark.parametrize("threat, field", [("transfer", "classifier"), ("graybox", "defense")])
def test_surrogate_threats_need_a_surrogate(threat, field, tmp_path):
    with pytest.raises(ValueError, match=rf"eval\.surrogate.*{field}"):
        threats.attacked_model(threat, RANDOM, key=jax.random.key(0))
    rows = {"r": {"threat": threat, "attack": {"name": "fgsm", "eps": 0.03}}}
    images = np.zeros((8, 2, 2, 1), np.uint8)
    with pytest.raises(ValueError, match=rf"Row 'r'.*{threat}.*eval\.surrogate"):
        run_suite(
            rows,
            defense=RANDOM,
            images=images,
            labels=np.zeros(8, np.int32),
            batch_size=8,
            workdir=str(tmp_path),
            seed=0,
        )
    assert not (tmp_path / "rows").exists()


def test_attacked_and_scored_models():
    key = jax.random.key(3)
    surrogate = Defense("s", lambda x: 2 * linear_logits(x), purify=lambda x, k: 0.5 * x)
    attacked = {
        t: threats.attacked_model(t, RANDOM, surrogate, key=key)[0] for t in threats.THREATS
    }
    assert attacked["clean"] is None
    assert attacked["whitebox"] is linear_logits and attacked["undefended"] is linear_logits
    np.testing.assert_allclose(attacked["transfer"](X), 2 * linear_logits(X))
    np.testing.assert_allclose(attacked["graybox"](X), 2 * linear_logits(0.5 * X), rtol=1e-6)
    defended = linear_logits(noisy_purify(X, key))
    for t in ("end_to_end", "bpda", "score_based"):
        np.testing.assert_allclose(attacked[t](X), defended, rtol=1e-6)
    # BPDA's gradient is the classifier's at the purified point (identity backward).
    w_grad = loss_grad(lambda x: linear_logits(x + jax.lax.stop_gradient(noisy_purify(X, key) - X)))
    np.testing.assert_allclose(loss_grad(attacked["bpda"]), w_grad, rtol=1e-5)
    with pytest.raises(ValueError, match="outputs only"):
        loss_grad(attacked["score_based"])
    # scoring: f for undefended, a fresh draw of the defended model otherwise
    np.testing.assert_array_equal(
        threats.scored_model("undefended", RANDOM, key)(X), linear_logits(X)
    )
    np.testing.assert_allclose(threats.scored_model("whitebox", RANDOM, key)(X), defended)


def test_bpda_eot_is_log_mean_softmax_over_draws():
    key = jax.random.key(5)
    fn, text = threats.attacked_model("bpda_eot", RANDOM, key=key, eot_samples=4)
    assert "4 draws" in text
    probs = [jax.nn.softmax(linear_logits(noisy_purify(X, k))) for k in jax.random.split(key, 4)]
    np.testing.assert_allclose(jax.jit(fn)(X), jnp.log(jnp.mean(jnp.stack(probs), 0)), rtol=1e-5)
    grad = jax.jit(lambda: loss_grad(fn))()
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_score_based_refuses_gradient_attacks():
    with pytest.raises(ValueError, match="no gradients.*'pgd' is iterative"):
        threats.check_threat(
            "score_based", {"name": "pgd", "eps": 0.1, "step_size": 0.1, "steps": 2}, RANDOM
        )
    threats.check_threat("score_based", {"name": "square", "eps": 0.1}, RANDOM)
    with pytest.raises(ValueError, match="Unknown threat 'white_box'"):
        threats.check_threat("white_box", None, RANDOM)
