"""`dtype="auto"`: bfloat16 compute on GPU/TPU, float32 on CPU; checkpoints never change."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capjax.config_defaults import (
    cafd_config,
    classifier_config,
    data_config,
    model_config,
    shrink_cafd_to_smoke,
    shrink_to_smoke,
)
from capjax.core.dtypes import auto_dtype, parse_dtype
from capjax.tasks import cafd_task as cafd_task
from capjax.train import classifier as classifier_lib
from capjax.train import targets
from capjax.train.checkpoint import state_fingerprint


def test_auto_is_the_default_compute_dtype_and_storage_stays_float32():
    model = model_config("resnet18")
    assert model.dtype == "auto" and model.param_dtype == "float32"
    config = cafd_config(data_name="cifar10", lambda_caf=1e3)
    assert config.cafd.dtype == "auto" and config.target.model.dtype == "auto"
    assert config.target.model.param_dtype == "float32"


@pytest.mark.parametrize(
    "platform, expected",
    [("cpu", jnp.float32), ("gpu", jnp.bfloat16), ("cuda", jnp.bfloat16), ("tpu", jnp.bfloat16)],
)
def test_auto_resolves_by_platform(platform, expected):
    assert auto_dtype(platform) == expected


def test_parse_dtype_resolves_auto_on_the_running_backend(monkeypatch):
    assert jax.default_backend() == "cpu"
    assert parse_dtype("auto", "model.dtype") == jnp.float32
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    assert parse_dtype("auto", "model.dtype") == jnp.bfloat16
    assert parse_dtype("float32", "model.dtype") == jnp.float32


def test_auto_is_refused_for_the_parameter_dtype():
    with pytest.raises(ValueError, match="model.param_dtype='auto' is not allowed.*float32"):
        parse_dtype("auto", "model.param_dtype", allow_auto=False)
    with pytest.raises(ValueError, match="Unknown model.dtype 'fp8'.*'auto'"):
        parse_dtype("fp8", "model.dtype")
    config = shrink_to_smoke(
        classifier_config(data=data_config("synthetic"), model=model_config("tiny"))
    )
    config.model.param_dtype = "auto"
    with pytest.raises(ValueError, match="param_dtype='auto' is not allowed"):
        classifier_lib.validate_config(config, classifier_lib.mesh_lib.make_mesh())


def _classifier_state_shapes(name: str, dtype: str):
    config = classifier_config(data=data_config("synthetic"), model=model_config(name))
    config.model.dtype = dtype
    trainer = classifier_lib.make_trainer(config, steps_per_epoch=10, num_classes=10)
    abstract = jax.eval_shape(lambda k: trainer.init_state(k, (32, 32, 3)), jax.random.key(0))
    return trainer, abstract


@pytest.mark.parametrize("name", ["tiny", "vgg11", "resnet18"])
def test_compute_dtype_leaves_the_classifier_checkpoint_layout_alone(name):
    _, f32 = _classifier_state_shapes(name, "float32")
    bf16_trainer, bf16 = _classifier_state_shapes(name, "bfloat16")
    _, auto = _classifier_state_shapes(name, "auto")
    assert state_fingerprint(bf16) == state_fingerprint(f32) == state_fingerprint(auto)
    assert {leaf.dtype for leaf in jax.tree.leaves(bf16) if leaf.ndim} == {np.dtype("float32")}
    if name == "tiny":  # bfloat16 compute really happens, and logits still come out float32
        x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
        variables = jax.eval_shape(bf16_trainer.model.init, jax.random.key(0), x)
        apply = bf16_trainer.model.apply
        assert jax.eval_shape(apply, variables, x).dtype == jnp.float32
        assert "bf16[2,32,32" in str(jax.make_jaxpr(apply)(variables, x))


def test_compute_dtype_leaves_the_cafd_checkpoint_layout_alone():
    config = shrink_cafd_to_smoke(cafd_config(data_name="cifar10", lambda_caf=1e3))
    target_config = targets.target_config(config)
    target = classifier_lib.build_classifier(target_config.model, 10)
    shapes = jax.eval_shape(target.init, jax.random.key(1), jnp.zeros((1, 32, 32, 3)))
    target_variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    fingerprints = []
    for dtype in ("float32", "bfloat16", "auto"):
        config.cafd.dtype = dtype
        trainer = cafd_task.make_trainer(config, target, target_variables, steps_per_epoch=4)
        abstract = jax.eval_shape(
            lambda k, t=trainer: t.init_state(k, (32, 32, 3)), jax.random.key(0)
        )
        fingerprints.append(state_fingerprint(abstract))
    assert fingerprints[0] == fingerprints[1] == fingerprints[2]


def test_float32_checkpoint_restores_under_bfloat16_compute(tmp_path):
    config = shrink_to_smoke(
        classifier_config(data=data_config("synthetic"), model=model_config("tiny"))
    )
    config.data.num_train = 128  # 2 steps
    config.model.dtype = "float32"
    _, result, _ = classifier_lib.train_classifier(config, str(tmp_path))
    config.model.dtype = "bfloat16"  # e.g. the same run evaluated on a GPU with dtype=auto
    model, variables = classifier_lib.restore_classifier(config, str(tmp_path), 10, (32, 32, 3))
    assert model.dtype == jnp.bfloat16
    for a, b in zip(
        jax.tree.leaves(jax.device_get(result.state.variables)),
        jax.tree.leaves(jax.device_get(variables)),
        strict=True,
    ):
        assert b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
