"""The classifier task: sharded step equivalence, exact resume, refusal of foreign workdirs."""

from __future__ import annotations

import os
import signal

import jax
import numpy as np
import pytest

from capjax.config_defaults import classifier_config, data_config, model_config, shrink_to_smoke
from capjax.core import mesh as mesh_lib
from capjax.train.classifier import make_trainer, restore_classifier, train_classifier
from capjax.train.loop import TrainingInterrupted


def smoke_config(**model_kwargs):
    config = shrink_to_smoke(
        classifier_config(data=data_config("synthetic"), model=model_config("tiny"))
    )
    config.data.num_train = 192  # 3 steps of 64
    config.train.epochs = 2
    config.train.checkpoint_every_steps = 2
    if model_kwargs:
        config.model.kwargs = model_kwargs
    return config


def test_sharded_step_equals_single_device_step():
    assert jax.device_count() == 8, "tests/conftest.py should simulate 8 CPU devices"
    config = smoke_config()
    trainer = make_trainer(config, steps_per_epoch=10, num_classes=10)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
        "label": rng.integers(0, 10, (64,), dtype=np.int32),
    }
    key = jax.random.key(3)
    outputs = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = mesh_lib.make_mesh(devices)
        rep = mesh_lib.replicated(mesh)
        state = jax.jit(lambda k: trainer.init_state(k, (32, 32, 3)), out_shardings=rep)(
            jax.random.key(0)
        )
        step = jax.jit(
            trainer.train_step,
            in_shardings=(rep, mesh_lib.data_sharding(mesh), rep),
            out_shardings=(rep, rep),
        )
        for _ in range(2):
            state, metrics = step(state, mesh_lib.shard_batch(batch, mesh), key)
        outputs.append(jax.device_get((state.params, state.batch_stats, metrics)))
    single, sharded = outputs
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_batch_not_divisible_by_devices_fails_before_compiling(tmp_path):
    config = smoke_config()
    config.train.batch_size = 60
    with pytest.raises(ValueError, match="multiple of the number of devices \\(8"):
        train_classifier(config, str(tmp_path))
    assert not os.path.exists(tmp_path / "checkpoints")


def test_unknown_model_name_lists_known_names(tmp_path):
    config = smoke_config()
    config.model.name = "resnet9000"
    with pytest.raises(ValueError, match="registered classifiers: .*tiny"):
        train_classifier(config, str(tmp_path))


def test_interrupted_run_resumes_bit_identical(tmp_path):
    config = smoke_config()
    _, straight, _ = train_classifier(config, str(tmp_path / "straight"))

    def deliver_sigterm(step):
        if step == 3:  # mid-epoch 2, after the step-2 checkpoint
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted):
        train_classifier(config, str(tmp_path / "resumed"), on_step_end=deliver_sigterm)
    _, resumed, _ = train_classifier(config, str(tmp_path / "resumed"))
    assert resumed.resumed_from == 3 and resumed.step == straight.step == 6
    for a, b in zip(
        jax.tree.leaves(jax.device_get(straight.state)),
        jax.tree.leaves(jax.device_get(resumed.state)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)

    model, variables = restore_classifier(config, str(tmp_path / "resumed"), 10, (32, 32, 3))
    np.testing.assert_array_equal(
        variables["params"]["head"]["kernel"],
        jax.device_get(straight.state.params)["head"]["kernel"],
    )


def test_workdir_of_another_model_is_refused_and_kept(tmp_path):
    train_classifier(smoke_config(), str(tmp_path))
    config_before = (tmp_path / "config.json").read_text()
    listing = sorted(os.listdir(tmp_path / "checkpoints"))
    with pytest.raises(ValueError, match="does not match this run"):
        train_classifier(smoke_config(widths=(8, 16, 48)), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == listing
    assert (tmp_path / "config.json").read_text() == config_before
