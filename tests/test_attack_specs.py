"""Attack specs: names, options checked against signatures, descriptions, kinds, budgets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capjax import attack_specs, attacks

PGD = {"name": "pgd", "eps": 8 / 255, "step_size": 2 / 255, "steps": 40}


def linear_logits(x):
    """A 3-class linear model on (N, 2, 2, 1) images."""
    w = jnp.arange(12, dtype=jnp.float32).reshape(4, 3) / 10 - 0.5
    return x.reshape(len(x), -1) @ w


@pytest.fixture
def batch():
    x = jnp.asarray(np.random.default_rng(0).uniform(0.2, 0.8, (4, 2, 2, 1)), jnp.float32)
    return x, jnp.array([0, 1, 2, 0])


def test_unknown_option_names_attack_and_accepted_options():
    with pytest.raises(ValueError, match=r"'pgd'.*step_size") as e:
        attack_specs.make_attack({**PGD, "stepsize": 0.1})
    assert "stepsize" in str(e.value) and "restarts" in str(e.value)
    with pytest.raises(ValueError, match="key"):  # the suite owns the key
        attack_specs.make_attack({**PGD, "key": 0})
    with pytest.raises(ValueError, match=r"needs option\(s\) \['steps'\]"):
        attack_specs.make_attack({"name": "pgd", "eps": 0.1, "step_size": 0.1})
    with pytest.raises(ValueError, match="Unknown attack name 'pdg'"):
        attack_specs.make_attack({"name": "pdg"})
    with pytest.raises(ValueError, match="did you mean 8/255"):
        attack_specs.make_attack({**PGD, "eps": 8})
    with pytest.raises(ValueError, match="steps must be an int"):
        attack_specs.make_attack({**PGD, "steps": 4.0})
    with pytest.raises(ValueError, match="bpda_eot"):
        attack_specs.make_attack({"name": "autoattack", "eps": 0.03, "version": "rand"})


def test_none_returns_x_and_options_reach_the_attack(batch):
    x, y = batch
    key = jax.random.key(0)
    assert attack_specs.make_attack({"name": "none"})(linear_logits, x, y, key) is x
    spec = {"name": "pgd", "eps": 0.1, "step_size": 0.03, "steps": 2, "loss": "margin"}
    got = jax.jit(attack_specs.make_attack(spec), static_argnums=0)(linear_logits, x, y, key)
    want = jax.jit(
        lambda x, y: attacks.pgd(
            linear_logits, x, y, eps=0.1, step_size=0.03, steps=2, loss="margin", key=key
        )
    )(x, y)
    np.testing.assert_allclose(got, want, atol=1e-7)
    assert float(jnp.abs(got - x).max()) > 0.05
    # attacks without randomness ignore the key
    fgsm = jax.jit(attack_specs.make_attack({"name": "fgsm", "eps": 0.1}), static_argnums=0)
    got = fgsm(linear_logits, x, y, key)
    np.testing.assert_array_equal(got, fgsm(linear_logits, x, y, jax.random.key(1)))
    grad_sign = jnp.sign(jax.grad(lambda z: -jax.nn.log_softmax(linear_logits(z))[0, y[0]])(x))
    np.testing.assert_allclose(got[0], jnp.clip(x[0] + 0.1 * grad_sign[0], 0, 1), atol=1e-6)


@pytest.mark.parametrize(
    "spec, text, kind, budget",
    [
        ({"name": "none"}, "Clean", "none", (None, None)),
        ({"name": "fgsm", "eps": 8 / 255}, "FGSM", "single_step", ("linf", 8 / 255)),
        (PGD, "PGD-40", "iterative", ("linf", 8 / 255)),
        (
            {"name": "pgd", "eps": 0.5, "step_size": 0.1, "steps": 7, "norm": "l2"},
            "PGD-7 (L2)",
            "iterative",
            ("l2", 0.5),
        ),
        (
            {"name": "mifgsm", "eps": 8 / 255, "steps": 20},
            "MI-FGSM-20",
            "iterative",
            ("linf", 8 / 255),
        ),
        ({"name": "mifgsm", "eps": 8 / 255}, "MI-FGSM-10", "iterative", ("linf", 8 / 255)),
        ({"name": "cw_l2"}, "CW-L2", "unbounded", ("l2", None)),
        ({"name": "ddn", "steps": 50}, "DDN-50", "unbounded", ("l2", None)),
        (
            {"name": "square", "eps": 8 / 255},
            "Square (5000 q, 1 restart)",
            "score_based",
            ("linf", 8 / 255),
        ),
        (
            {"name": "spsa", "eps": 8 / 255, "steps": 20},
            "SPSA-20",
            "score_based",
            ("linf", 8 / 255),
        ),
        (
            {"name": "autoattack", "eps": 8 / 255},
            "AutoAttack (standard)",
            "ensemble",
            ("linf", 8 / 255),
        ),
        (
            {"name": "apgd", "eps": 8 / 255, "loss": "dlr"},
            "APGD-DLR-100",
            "iterative",
            ("linf", 8 / 255),
        ),
        ({"name": "fab", "eps": 8 / 255}, "FAB-T", "iterative", ("linf", 8 / 255)),
        ({"name": "stadv"}, "stAdv", "unbounded", ("flow", None)),
    ],
)
def test_describe_kind_budget(spec, text, kind, budget):
    assert attack_specs.describe(spec) == text
    assert attack_specs.kind(spec) == kind
    assert attack_specs.budget(spec) == budget


def test_target_option_draws_targets_and_makes_the_attack_targeted(batch):
    x, y = batch
    key = jax.random.key(2)
    ys = jnp.tile(y, 50)
    drawn = attack_specs.targets("random", linear_logits, jnp.tile(x, (50, 1, 1, 1)), ys, key)
    assert not np.any(drawn == ys) and set(np.asarray(drawn).tolist()) == {0, 1, 2}
    least = attack_specs.targets("least_likely", linear_logits, x, y, key)
    np.testing.assert_array_equal(least, jnp.argmin(linear_logits(x), -1))

    spec = {"name": "pgd", "eps": 0.1, "step_size": 0.03, "steps": 2, "target": "least_likely"}
    assert attack_specs.options(spec)["targeted"] is True
    assert attack_specs.describe(spec) == "PGD-2 (targeted)"
    got = jax.jit(attack_specs.make_attack(spec), static_argnums=0)(linear_logits, x, y, key)
    want = jax.jit(
        lambda x, t: attacks.pgd(
            linear_logits, x, t, eps=0.1, step_size=0.03, steps=2, targeted=True, key=key
        )
    )(x, least)
    np.testing.assert_allclose(got, want, atol=1e-7)
    with pytest.raises(ValueError, match="would aim at the true labels"):
        attack_specs.options({**spec, "target": None, "targeted": True})
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['target'\] for attack 'fab'"):
        attack_specs.options({"name": "fab", "eps": 0.1, "target": "random"})


def test_step_size_on_the_pixel_scale_is_checked():
    with pytest.raises(ValueError, match="did you mean 2/255"):
        attack_specs.make_attack({**PGD, "step_size": 2})
    with pytest.raises(ValueError, match="step_size must be a number >= 0"):
        attack_specs.make_attack({**PGD, "step_size": -0.1})
    attack_specs.make_attack({**PGD, "norm": "l2", "eps": 2.0, "step_size": 1.5})  # L2: fine


def test_training_attack_is_the_suite_attack(batch):
    """The trainers' builder runs the same attack as the suite's, inside the eps-ball."""
    x, y = batch
    key = jax.random.key(3)
    spec = {**PGD, "steps": 3}
    craft = attack_specs.training_attack(spec, "hgd.attack", names=("pgd", "fgsm"))
    expected = attack_specs.make_attack(spec)(linear_logits, x, y, key)
    np.testing.assert_allclose(craft(linear_logits, x, y, key), expected, atol=1e-6)
    assert float(jnp.max(jnp.abs(expected - x))) > 1 / 255  # it moved the images
    assert float(jnp.max(jnp.abs(expected - x))) <= 8 / 255 + 1e-6


def test_training_attack_errors_name_the_config_field():
    with pytest.raises(ValueError, match="Unknown training attack 'cw' in capgan.domain.attack"):
        attack_specs.training_attack(
            {"name": "cw"}, "capgan.domain.attack", names=("pgd", "fgsm", "mifgsm")
        )
    with pytest.raises(ValueError, match="Unknown training attack 'none'"):
        attack_specs.training_attack({"name": "none"}, "hgd.attack")
    with pytest.raises(ValueError, match=r"hgd.attack: .*did you mean 8/255"):
        attack_specs.training_attack({**PGD, "eps": 8}, "hgd.attack")
    with pytest.raises(ValueError, match=r"hgd.attack.eps must be above 0"):
        attack_specs.training_attack({**PGD, "eps": 0.0}, "hgd.attack")
    with pytest.raises(ValueError, match=r"apegan.attack: Unknown option\(s\) \['momentum'\]"):
        attack_specs.training_attack({**PGD, "momentum": 0.9}, "apegan.attack")


def test_feature_attack_is_cafa_with_the_training_checks(batch):
    """CAFD's CAFA is built by the same module, with the same budget checks."""
    x, _ = batch
    key = jax.random.key(4)

    def features(v):  # a stand-in for class activation features: (N, H, W)
        return jnp.tanh(3 * v).sum(-1)

    spec = {"eps": 8 / 255, "step_size": 0.01, "steps": 3}
    craft = attack_specs.feature_attack(spec, "cafd.attack")
    expected = attacks.cafa(features, x, key=key, **spec)
    np.testing.assert_allclose(craft(features, x, key), expected, atol=1e-6)
    assert float(jnp.max(jnp.abs(expected - x))) > 1 / 255
    named = attack_specs.feature_attack({"name": "cafa", **spec}, "cafd.attack")
    np.testing.assert_allclose(named(features, x, key), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"cafd.attack: .*did you mean 8/255"):
        attack_specs.feature_attack({**spec, "eps": 8}, "cafd.attack")
    with pytest.raises(ValueError, match=r"cafd.attack.eps must be above 0"):
        attack_specs.feature_attack({**spec, "eps": 0.0}, "cafd.attack")
    with pytest.raises(ValueError, match=r"cafd.attack: .*steps must be an int"):
        attack_specs.feature_attack({**spec, "steps": 2.5}, "cafd.attack")
    with pytest.raises(ValueError, match=r"cafd.attack: Unknown option\(s\) \['norm'\]"):
        attack_specs.feature_attack({**spec, "norm": "l2"}, "cafd.attack")
    with pytest.raises(ValueError, match="Unknown training attack 'pgd' in cafd.attack"):
        attack_specs.feature_attack({**spec, "name": "pgd"}, "cafd.attack")
