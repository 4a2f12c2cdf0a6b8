"""Attack loops driven from the host on XLA:CPU (`host_loop`): same answers as one
compiled program, chunked as documented, and only where it applies."""

from __future__ import annotations

import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capjax import attacks
from capjax.attacks._common import HOST_LOOP_CHUNK, HostLoop, host_loop, take_rows
from capjax.cpu_devices import shard_over_devices

apgd_module = importlib.import_module("capjax.attacks.apgd")
fab_module = importlib.import_module("capjax.attacks.fab")
gradient_module = importlib.import_module("capjax.attacks.gradient")


class _Conv(nn.Module):
    pool: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        if self.pool:
            x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def _setup(pool=False, fast_max_pool=True):
    model = _Conv(pool=pool)
    x = jax.random.uniform(jax.random.key(1), (12, 8, 8, 3))
    variables = model.init(jax.random.key(0), x)
    fn = attacks.flax_logits_fn(model, variables, fast_max_pool=fast_max_pool)
    return fn, x, jnp.argmax(fn(x), -1)


def test_the_plan_chunks_the_steps_or_keeps_a_windowed_max_rolled():
    fn, x, _ = _setup()
    assert host_loop(23, fn, x) == HostLoop(((0, HOST_LOOP_CHUNK), (10, 10), (20, 3)), 10)
    assert host_loop(HOST_LOOP_CHUNK, fn, x).chunks == ((0, HOST_LOOP_CHUNK),)
    assert host_loop(0, fn, x) is None
    # nn.max_pool's own gradient: one rolled program per run (its unrolled iterations would
    # keep buffers); through tiled_max_pool (flax_logits_fn's default) the select-and-scatter
    # is gone and the loop is chunked.
    pooled, x, _ = _setup(pool=True, fast_max_pool=False)
    assert host_loop(20, pooled, x) == HostLoop(((0, 20),), 1)
    assert host_loop(20, attacks.tiled_max_pool(pooled), x).unroll == HOST_LOOP_CHUNK
    fast, x, _ = _setup(pool=True)
    assert host_loop(20, fast, x).unroll == HOST_LOOP_CHUNK


def test_no_host_loop_under_jit():
    fn, x, _ = _setup()
    seen = []
    jax.jit(lambda z: seen.append(host_loop(20, fn, z)) or z)(x)
    # x concrete, eps traced (a jitted sweep over eps): still under jit.
    jax.jit(lambda eps: seen.append(host_loop(20, fn, x, inputs=(eps,))) or eps)(0.1)
    assert seen == [None, None]


ATTACKS = {
    "apgd-ce": (attacks.apgd, {"steps": 23, "key": jax.random.key(0)}),
    "apgd-t, 2 restarts": (
        attacks.apgd_t,
        {"steps": 12, "num_target_classes": 3, "restarts": 2, "key": jax.random.key(0)},
    ),
    "apgd-ce, randomized with EOT, 2 restarts": (
        attacks.apgd,
        {"steps": 12, "randomized": True, "eot_iter": 2, "restarts": 2, "key": jax.random.key(2)},
    ),
    "apgd-t through nn.max_pool (one rolled program per run)": (
        attacks.apgd_t,
        {"steps": 12, "num_target_classes": 3, "key": jax.random.key(0), "pool": True},
    ),
    "fab-t": (attacks.fab, {"steps": 13, "num_target_classes": 3}),
    "fab, 2 restarts, project": (
        attacks.fab,
        {
            "steps": 13,
            "targeted": False,
            "restarts": 2,
            "key": jax.random.key(3),
            "eps_rule": "project",
        },
    ),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_host_driven_equals_one_program(name):
    attack, options = ATTACKS[name]
    options = dict(options)
    fn, x, y = _setup(pool=options.pop("pool", False))
    if options.get("randomized"):
        plain = fn
        fn = jax.tree_util.Partial(
            lambda z, key, plain=plain: plain(z + 0.01 * jax.random.normal(key, z.shape))
        )
    eps = 4 / 255
    eager = attack(fn, x, y, eps=eps, **options)  # concrete inputs on CPU: host-driven
    jitted = jax.jit(lambda fn, x, y: attack(fn, x, y, eps=eps, validate=False, **options))
    np.testing.assert_allclose(eager, jitted(fn, x, y), atol=1e-6)


def _recorded_rows(x, attack_call):
    """The rows of `x` each run of an APGD call attacked (read off its start program's part)."""
    original, seen = apgd_module._start_program, []
    images = np.asarray(x)

    def recording(logits_fn, part, *args, **kwargs):
        attacked = np.asarray(part[0])
        seen.append([int(np.flatnonzero((images == a).all(axis=(1, 2, 3)))[0]) for a in attacked])
        return original(logits_fn, part, *args, **kwargs)

    apgd_module._start_program = recording
    try:
        attack_call()
    finally:
        apgd_module._start_program = original
    return seen


def test_each_run_attacks_only_the_survivors_and_runs_stop_when_none_is_left():
    fn, x, y = _setup()
    # Labels wrong for all but 3 examples: run 0 "breaks" the others at once, and a radius
    # of 1e-6 breaks none of the 3, so the later targets attack them alone (padded to 4).
    labels = jnp.where(jnp.arange(12) < 3, y, (y + 1) % 10)
    seen = _recorded_rows(
        x,
        lambda: attacks.apgd_t(
            fn, x, labels, eps=1e-6, steps=3, num_target_classes=3, key=jax.random.key(0)
        ),
    )
    assert seen == [list(range(12)), [0, 1, 2, 0], [0, 1, 2, 0]]
    # All labels wrong: the first run breaks every example, and no other run starts.
    seen = _recorded_rows(
        x,
        lambda: attacks.apgd_t(
            fn, x, (y + 1) % 10, eps=1e-6, steps=3, num_target_classes=3, key=jax.random.key(0)
        ),
    )
    assert len(seen) == 1


def test_take_rows_keeps_a_batch_split_over_devices_when_the_count_divides():
    devices = jax.devices()[:2]
    x, y = shard_over_devices(jnp.arange(8.0).reshape(8, 1), jnp.arange(8), devices=devices)
    part = take_rows((x, y), np.array([1, 5, 6, 6], np.int32))
    np.testing.assert_array_equal(part[0][:, 0], [1, 5, 6, 6])
    assert all(a.sharding == x.sharding for a in part)
    odd = take_rows((x, y), np.array([3], np.int32))  # one row cannot split over two
    np.testing.assert_array_equal(odd[1], [3])


def test_a_batch_split_over_devices_gives_the_same_attack():
    fn, x, y = _setup()
    xs, ys = shard_over_devices(x, y, devices=jax.devices()[:2])
    options = {"steps": 12, "num_target_classes": 3, "key": jax.random.key(0)}
    np.testing.assert_allclose(
        attacks.apgd_t(fn, xs, ys, eps=4 / 255, **options),
        attacks.apgd_t(fn, x, y, eps=4 / 255, **options),
        atol=1e-6,
    )


@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize("restarts", [1, 2])
def test_pgd_early_stop_keeps_the_verdict_and_the_unbroken_points(pool, restarts):
    fn, x, y = _setup(pool)
    kwargs = dict(eps=10 / 255, step_size=2 / 255, steps=25, restarts=restarts)
    key = jax.random.key(3)
    full = attacks.pgd(fn, x, y, key=key, **kwargs)
    calls = []
    program = gradient_module._pgd_chunk_program
    spy = lambda *a, **k: calls.append(a[1].shape[0]) or program(*a, **k)  # noqa: E731
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gradient_module, "_pgd_chunk_program", spy)
        early = attacks.pgd(fn, x, y, key=key, early_stop=True, **kwargs)
    broken_full = np.asarray(jnp.argmax(fn(full), -1) != y)
    broken_early = np.asarray(jnp.argmax(fn(early), -1) != y)
    # The eps makes some examples fall and keeps others standing, so both parts are checked.
    assert 0 < broken_full.sum() < len(y)
    np.testing.assert_array_equal(broken_early, broken_full)
    np.testing.assert_allclose(early[~broken_full], full[~broken_full], atol=1e-6)
    assert float(jnp.max(jnp.abs(early - x))) <= 10 / 255 + 1e-6
    # 3 chunks of at most 10 steps per run, and later chunks only on the unbroken rows
    # (padded to a power of two).
    assert len(calls) <= 3 * restarts and calls[0] == len(y)
    assert min(calls) < len(y)


def test_pgd_early_stop_changes_nothing_under_jit():
    fn, x, y = _setup()
    kwargs = dict(eps=3 / 255, step_size=0.5 / 255, steps=12, key=jax.random.key(3))
    jitted = jax.jit(lambda z: attacks.pgd(fn, z, y, early_stop=True, **kwargs))(x)
    np.testing.assert_allclose(jitted, attacks.pgd(fn, x, y, **kwargs), atol=1e-6)
    with pytest.raises(ValueError, match="best_iterate"):
        attacks.pgd(fn, x, y, early_stop=True, best_iterate=False, **kwargs)
