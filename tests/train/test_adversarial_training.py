"""PGD adversarial training of a classifier: the step trains on PGD examples within eps of its
batch, logs clean and adversarial accuracy, and an AT run never resumes a standard one."""

from __future__ import annotations

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from capjax.models import get_classifier
from capjax.train import classifier as classifier_lib
from capjax.train.adversarial import AdversarialTraining, adversarial_fingerprint
from capjax.train.classifier import ClassifierTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 16
EPS = 8 / 255
# "rbg" keys: XLA:CPU compiles threefry's bit generator slowly (see tests/defenses/test_hgd.py).
rbg_key = functools.partial(jax.random.key, impl="rbg")


def load_config(variant: str) -> ml_collections.ConfigDict:
    path = os.path.join(ROOT, "configs", "classifier_cifar.py")
    spec = importlib.util.spec_from_file_location("classifier_cifar", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def make_trainer(adversarial: AdversarialTraining | None) -> ClassifierTrainer:
    return ClassifierTrainer(
        model=get_classifier("tiny", num_classes=10, widths=(8, 16)),
        tx=optax.sgd(0.1, momentum=0.9),
        schedule=optax.constant_schedule(0.1),
        crop_padding=0,  # augmentation off: the step's clean batch is the batch itself
        flip=False,
        adversarial=adversarial,
    )


def test_at_step_trains_on_pgd_examples_within_eps_of_the_batch():
    adversarial = AdversarialTraining(steps=2, eps=EPS, step_size=4 / 255)
    trainer = make_trainer(adversarial)
    state = jax.jit(trainer.init_state, static_argnums=1)(rbg_key(0), (SIZE, SIZE, 3))
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.integers(0, 256, (16, SIZE, SIZE, 3), dtype=np.uint8)),
        "label": jnp.asarray(rng.integers(0, 10, 16).astype(np.int32)),
    }
    key = rbg_key(5)

    @jax.jit
    def both(state, batch):
        """The AT step, and the same step rebuilt by hand from `perturb`'s examples."""
        new_state, metrics = trainer.train_step(state, batch, key)
        x = batch["image"].astype(jnp.float32) / 255
        x_adv, clean_logits = adversarial.perturb(
            trainer.model, state.variables, x, batch["label"], jax.random.fold_in(key, 1)
        )
        _, dropout_key = jax.random.split(key)
        grad_fn = jax.value_and_grad(trainer.loss, has_aux=True)
        (_, (adv_logits, _)), grads = grad_fn(
            state.params, state.batch_stats, x_adv, batch["label"], dropout_key
        )
        updates, _ = trainer.tx.update(grads, state.opt_state, state.params)
        by_hand = optax.apply_updates(state.params, updates)
        clean_loss, clean_grads = jax.value_and_grad(
            lambda p: trainer.loss(p, state.batch_stats, x, batch["label"], dropout_key)[0]
        )(state.params)
        hand_metrics = {
            "clean_loss": clean_loss,
            "accuracy": jnp.mean(jnp.argmax(clean_logits, -1) == batch["label"]),
            "adversarial_accuracy": jnp.mean(jnp.argmax(adv_logits, -1) == batch["label"]),
        }
        return new_state, metrics, x, x_adv, by_hand, grads, clean_grads, hand_metrics

    new_state, metrics, x, x_adv, by_hand, grads, clean_grads, hand_metrics = both(state, batch)
    # The examples: inside the eps-ball and the [0, 1] box, and not the batch itself.
    assert float(jnp.abs(x_adv - x).max()) <= EPS + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert float(jnp.abs(x_adv - x).max()) > EPS / 2
    # The step took exactly the gradient step on them, which is not the clean one.
    same = jax.tree.map(
        lambda a, b: np.allclose(a, b, rtol=1e-5, atol=1e-7), new_state.params, by_hand
    )
    assert all(jax.tree.leaves(same))
    differ = jax.tree.map(
        lambda a, b: not np.allclose(a, b, rtol=1e-3, atol=1e-6), grads, clean_grads
    )
    assert any(jax.tree.leaves(differ))
    # Metrics: `accuracy` is the clean batch's, `adversarial_accuracy` the trained batch's.
    assert set(metrics) == {"loss", "accuracy", "adversarial_accuracy", "learning_rate"}
    for name in ("accuracy", "adversarial_accuracy"):
        assert float(metrics[name]) == pytest.approx(float(hand_metrics[name])), name
    # PGD did its job: the trained-on loss is above the clean batch's.
    assert float(metrics["loss"]) > float(hand_metrics["clean_loss"])
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_config_variant_fingerprint_and_validation():
    standard, adv = load_config("smoke"), load_config("smoke,adv")
    assert adv.train.adversarial.to_dict() == {
        "steps": 7,
        "eps": 8 / 255,
        "step_size": 2 / 255,
        "random_start": True,
    }
    assert standard.train.adversarial.steps == 0
    assert AdversarialTraining.from_config(standard.train) is None
    assert AdversarialTraining.from_config(adv.train) == AdversarialTraining(steps=7)
    assert classifier_lib.fingerprint(standard)["adversarial"] == "none"
    assert classifier_lib.fingerprint(adv)["adversarial"] == (
        "pgd-7 linf eps 8/255 step 2/255 random start"
    )
    adv.train.adversarial.steps = 10
    assert adversarial_fingerprint(adv.train) == "pgd-10 linf eps 8/255 step 2/255 random start"
    # A config without the section (written before it existed) trains normally.
    assert AdversarialTraining.from_config(ml_collections.ConfigDict({"epochs": 1})) is None
    for field, value, message in (
        ("steps", -1, "int >= 0"),
        ("eps", 8.0, "8/255"),
        ("step_size", 2.0, "2/255"),
    ):
        bad = load_config("smoke,adv")
        bad.train.adversarial[field] = value
        with pytest.raises(ValueError, match=message):
            classifier_lib.validate_config(bad, classifier_lib.mesh_lib.make_mesh())
