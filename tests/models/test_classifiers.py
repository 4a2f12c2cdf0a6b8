"""Properties of the classifier zoo (VGG, ResNet, PreAct-ResNet, WRN) at 32x32.

Full-size models are only traced (`jax.eval_shape`: shapes, dtypes and parameter counts,
compared with the usual PyTorch CIFAR models); numbers are computed with narrow versions so
the file runs in about a minute on 2 CPU cores.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capjax.models import classifier_names, get_classifier
from capjax.models.layers import pool2x2

ZOO = [
    "vgg11",
    "vgg16",
    "vgg19",
    "resnet18",
    "resnet34",
    "resnet50",
    "preact_resnet18",
    "wrn",
    "wrn28_10",
    "speedrun",
]

# Full size, 10 classes: (parameter count, features shape at batch 2). Counts equal the
# common PyTorch CIFAR models' minus conv biases (VGG convs here have none, BN follows) and
# plus the final BN of PreAct-ResNet-18 (2 * 512), which some reference code forgets.
FULL_SIZE = {
    "vgg11": (9_228_362, (2, 2, 2, 512)),
    "vgg16": (14_724_042, (2, 2, 2, 512)),
    "vgg19": (20_035_018, (2, 2, 2, 512)),
    "resnet18": (11_173_962, (2, 4, 4, 512)),
    "resnet34": (21_282_122, (2, 4, 4, 512)),
    "resnet50": (23_520_842, (2, 4, 4, 2048)),
    "preact_resnet18": (11_172_170, (2, 4, 4, 512)),
    "wrn": (36_479_194, (2, 8, 8, 640)),  # defaults: WRN-28-10
    "wrn28_10": (36_479_194, (2, 8, 8, 640)),
    "speedrun": (1_973_186, (2, 4, 4, 256)),  # airbench94's widths (64, 256, 256)
}

# Narrow versions for the numeric tests: (kwargs, features shape at batch 2).
SMALL = {
    "vgg11": ({"width_multiplier": 0.125}, (2, 2, 2, 64)),
    "vgg16": ({"width_multiplier": 0.125}, (2, 2, 2, 64)),
    "vgg19": ({"width_multiplier": 0.125}, (2, 2, 2, 64)),
    "resnet18": ({"base_width": 8}, (2, 4, 4, 64)),
    "resnet34": ({"base_width": 8}, (2, 4, 4, 64)),
    "resnet50": ({"base_width": 8}, (2, 4, 4, 256)),
    "preact_resnet18": ({"base_width": 8}, (2, 4, 4, 64)),
    "wrn": ({"depth": 10, "widen_factor": 2}, (2, 8, 8, 128)),
    "wrn28_10": ({"widen_factor": 1}, (2, 8, 8, 64)),
    "speedrun": ({"stem_width": 8, "widths": (8, 16, 16)}, (2, 4, 4, 16)),
}


def _images(n: int = 2, seed: int = 0) -> jnp.ndarray:
    return jax.random.uniform(jax.random.key(seed), (n, 32, 32, 3), jnp.float32)


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _synthetic_variables(model, seed: int = 0):
    """Random variables with the model's exact structure, without compiling its init.

    Compiling a ResNet's `init` costs ~10 s of CPU (threefry for every tensor), several times
    its forward pass; the forward properties tested here hold for any parameter values, so
    they are drawn in NumPy at He scale, with non-trivial BN affine terms and running stats.
    `test_real_init` covers `init` itself.
    """
    shapes = jax.eval_shape(model.init, jax.random.key(0), _images())
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        kind = path[-1].key
        if kind == "kernel":  # conv (kh, kw, in, out) or dense (in, out)
            fan_in = int(np.prod(leaf.shape[:-1]))
            values = rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape)
        elif kind in ("scale", "var"):
            values = rng.uniform(0.8, 1.2, leaf.shape)
        else:  # bias, running mean
            values = rng.normal(0.0, 0.1, leaf.shape)
        return jnp.asarray(values, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@functools.cache
def _small(name: str):
    """(model, variables) of the narrow model, built once per test session."""
    model = get_classifier(name, **SMALL[name][0])
    return model, _synthetic_variables(model)


@functools.cache
def _eval_apply(name: str):
    model, variables = _small(name)
    logits, features = jax.jit(functools.partial(model.apply, return_features=True))(
        variables, _images()
    )
    return logits, features


def test_zoo_is_registered():
    assert set(ZOO) <= set(classifier_names())


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("num_classes", [10, 7])
def test_full_size_shapes_and_param_counts(name, num_classes):
    model = get_classifier(name, num_classes=num_classes)
    x = _images()
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    logits, features = jax.eval_shape(
        functools.partial(model.apply, return_features=True), variables, x
    )
    count, feature_shape = FULL_SIZE[name]
    channels = feature_shape[-1]
    # Changing num_classes only changes the head: (C + 1) * classes parameters.
    assert _count(variables["params"]) == count + (channels + 1) * (num_classes - 10)
    assert features.shape == feature_shape
    assert logits.shape == (2, num_classes) and logits.dtype == jnp.float32
    assert variables["params"]["head"]["kernel"].shape == (channels, num_classes)
    # Params and BN statistics are float32, and every BN layer has its running statistics.
    leaves = jax.tree.leaves(variables)
    assert all(leaf.dtype == jnp.float32 for leaf in leaves)
    assert _count(variables["batch_stats"]) > 0


@pytest.mark.parametrize("name", ZOO)
def test_logits_are_head_of_pooled_features(name):
    _, variables = _small(name)
    logits, features = _eval_apply(name)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert features.shape == SMALL[name][1]
    assert np.all(np.isfinite(logits))
    head = variables["params"]["head"]
    recomputed = jnp.mean(features, axis=(1, 2)) @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(logits, recomputed, rtol=1e-5, atol=1e-5)
    # Not a degenerate map: the two images give different features and logits.
    assert float(jnp.max(jnp.abs(logits[0] - logits[1]))) > 1e-4


@pytest.mark.parametrize("name", ZOO)
def test_batch_stats_update_only_in_train_mode(name):
    model, variables = _small(name)
    x = _images()
    train_apply = jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]),
    )
    logits, updates = train_apply(variables, x)
    assert logits.shape == (2, 10)
    old = jax.tree.leaves(variables["batch_stats"])
    new = jax.tree.leaves(updates["batch_stats"])
    assert len(old) == len(new)
    # Every BN layer moved its running mean/var (momentum 0.9 towards the batch statistics).
    changed = [not np.allclose(a, b) for a, b in zip(old, new, strict=True)]
    assert np.mean(changed) > 0.9
    # Eval mode needs no mutable collection and uses the running statistics: each image's
    # logits do not depend on the rest of the batch.
    eval_logits, _ = _eval_apply(name)
    single = jax.jit(model.apply)(variables, x[:1])
    np.testing.assert_allclose(single, eval_logits[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["vgg11", "resnet18", "resnet50", "preact_resnet18", "wrn"])
def test_bfloat16_compute_float32_params(name):
    kwargs = SMALL[name][0]
    model = get_classifier(name, dtype=jnp.bfloat16, **kwargs)
    x = _images()
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(shapes))
    # Same float32 variables as the float32 model: only the compute dtype differs.
    _, variables = _small(name)
    logits, features = jax.jit(functools.partial(model.apply, return_features=True))(variables, x)
    assert logits.dtype == jnp.float32 and features.dtype == jnp.bfloat16
    reference, _ = _eval_apply(name)
    scale = float(jnp.max(jnp.abs(reference)))
    # bfloat16 has 8 mantissa bits (~0.4% per op); through ~20 layers a few % of the scale.
    assert float(jnp.max(jnp.abs(logits - reference))) < 0.1 * scale + 1e-2


def test_real_init():
    # An rbg key: Flax splits it like any key, and it compiles ~4x faster than threefry.
    model = get_classifier("vgg19", **SMALL["vgg19"][0])
    x = _images()
    variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)
    params, stats = variables["params"], variables["batch_stats"]
    kernel = params["Conv_10"]["kernel"]  # (3, 3, 64, 64)
    fan_out = 3 * 3 * kernel.shape[-1]
    assert abs(float(jnp.std(kernel)) / np.sqrt(2.0 / fan_out) - 1.0) < 0.1
    bn = stats["BatchNorm_10"]
    np.testing.assert_array_equal(bn["mean"], np.zeros(64))
    np.testing.assert_array_equal(bn["var"], np.ones(64))
    # He init keeps a 16-conv ReLU stack alive in eval mode straight after init: feature std
    # 0.025 here, where Flax's default LeCun init gives 0.0004.
    _, features = jax.jit(functools.partial(model.apply, return_features=True))(variables, x)
    assert 0.005 < float(jnp.std(features)) < 1.0


def test_unknown_name_lists_registered_names():
    with pytest.raises(ValueError, match="resnet18.*vgg11.*wrn28_10"):
        get_classifier("resnet19")


@pytest.mark.parametrize(
    "kwargs", [{"depth": 11}, {"depth": 27}, {"depth": 4}, {"widen_factor": 0}]
)
def test_wrn_rejects_bad_config(kwargs):
    with pytest.raises(ValueError, match="WideResNet"):
        get_classifier("wrn", **kwargs)


def test_vgg_rejects_bad_pooling():
    with pytest.raises(ValueError, match="pooling"):
        get_classifier("vgg11", pooling="median")


def test_wrn_dropout_only_in_train_mode():
    model = get_classifier("wrn", depth=10, widen_factor=2, dropout_rate=0.3)
    _, variables = _small("wrn")  # same parameter tree: dropout has no parameters
    x = _images()

    @jax.jit
    def train_logits(key):
        logits, _ = model.apply(
            variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": key}
        )
        return logits

    a, a_again, b = (train_logits(jax.random.key(k)) for k in (1, 1, 2))
    np.testing.assert_array_equal(a, a_again)
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3
    # Eval mode: deterministic, needs no dropout key and matches the dropout-free model.
    eval_logits = jax.jit(model.apply)(variables, x)
    reference, _ = _eval_apply("wrn")
    np.testing.assert_allclose(eval_logits, reference, rtol=1e-5, atol=1e-5)


def test_pool2x2_matches_flax_pools():
    x = jax.random.normal(jax.random.key(3), (2, 6, 6, 4))  # continuous: no ties
    np.testing.assert_array_equal(pool2x2(x, "max"), nn.max_pool(x, (2, 2), (2, 2)))
    np.testing.assert_allclose(pool2x2(x, "avg"), nn.avg_pool(x, (2, 2), (2, 2)), rtol=1e-6)
    grad = jax.grad(lambda x, f: jnp.sum(jnp.sin(f(x))), argnums=0)
    np.testing.assert_allclose(
        grad(x, lambda x: pool2x2(x, "max")),
        grad(x, lambda x: nn.max_pool(x, (2, 2), (2, 2))),
        rtol=1e-6,
    )
    # One gradient entry per 2x2 window for max; odd sizes drop the last row/column.
    assert int(jnp.sum(grad(x, lambda x: pool2x2(x, "max")) != 0)) == 2 * 3 * 3 * 4
    assert pool2x2(jnp.ones((1, 5, 7, 2)), "max").shape == (1, 2, 3, 2)


def test_vgg_pooling_and_normalisation_options():
    model, variables = _small("vgg11")
    x = _images()
    max_logits, _ = _eval_apply("vgg11")
    avg = get_classifier("vgg11", pooling="avg", **SMALL["vgg11"][0])
    avg_logits = jax.jit(avg.apply)(variables, x)  # same parameters, pooling has none
    assert float(jnp.max(jnp.abs(avg_logits - max_logits))) > 1e-4
    mean, std = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
    normalised = get_classifier("vgg11", mean=mean, std=std, **SMALL["vgg11"][0])
    np.testing.assert_allclose(
        jax.jit(normalised.apply)(variables, x),
        jax.jit(model.apply)(variables, (x - jnp.array(mean)) / jnp.array(std)),
        rtol=1e-5,
        atol=1e-5,
    )
