"""Feeds: the device-resident feed gives the host feed's batches, runs and resumes alike."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capjax.core import mesh as mesh_lib
from capjax.data import BatchIterator
from capjax.train import feeds
from capjax.train.checkpoint import Checkpointer
from capjax.train.loop import LoopConfig, fit

NUM_EXAMPLES, BATCH, CLASSES = 40, 16, 10  # 2 steps per epoch (8 examples dropped)
STEPS = 5  # spans epochs 0, 1 and 2


def split(seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (NUM_EXAMPLES, 4, 4, 3), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, NUM_EXAMPLES)  # int64: the feeds hand out int32
    return images, labels


def batches(seed: int = 3) -> BatchIterator:
    return BatchIterator(*split(), global_batch_size=BATCH, seed=seed)


def init_state(key):
    return {
        "w": 0.01 * jax.random.normal(key, (4 * 4 * 3, CLASSES)),
        "b": jnp.zeros((CLASSES,)),
    }


def train_step(state, batch, key):
    """One SGD step of a linear softmax classifier on the uint8 images, plus key noise."""
    assert batch["image"].dtype == jnp.uint8 and batch["label"].dtype == jnp.int32
    x = batch["image"].astype(jnp.float32).reshape(batch["image"].shape[0], -1) / 255.0

    def loss_fn(params):
        logits = x @ params["w"] + params["b"]
        log_p = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(log_p, batch["label"][:, None], axis=1))

    loss, grads = jax.value_and_grad(loss_fn)(state)
    noise = 1e-3 * jax.random.normal(key, state["b"].shape)
    new = jax.tree.map(lambda p, g: p - 0.5 * g, state, grads)
    new["b"] = new["b"] + noise
    return new, {"loss": loss}


def run(workdir, feed: str, steps: int = STEPS):
    return fit(
        init_state=init_state,
        train_step=train_step,
        batches=batches(),
        workdir=str(workdir),
        config=LoopConfig(num_steps=steps, log_every=2, checkpoint_every=3),
        fingerprint={"task": "feeds"},
        feed=feed,
    )


def stored_position(workdir):
    checkpointer = Checkpointer(str(workdir / "checkpoints"))
    try:
        return checkpointer.latest_step(), checkpointer.read_meta()["data"]
    finally:
        checkpointer.close()


def assert_same_state(a, b):
    for name in ("w", "b"):
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Uninterrupted runs of STEPS steps with each feed: {feed: (FitResult, workdir)}."""
    out = {}
    for feed in ("host", "device"):
        workdir = tmp_path_factory.mktemp(f"straight_{feed}")
        out[feed] = (run(workdir, feed), workdir)
    return out


def test_device_feed_gives_the_host_batches_across_epochs():
    mesh = mesh_lib.make_mesh()
    assert mesh.devices.size == 8
    feed = feeds.DeviceFeed(batches(), mesh)
    reference = batches()
    gather = jax.jit(feed.batch_from, in_shardings=feed.input_shardings)
    data_sharding = mesh_lib.data_sharding(mesh)
    for _ in range(2 * reference.steps_per_epoch + 1):
        expected = mesh_lib.shard_batch(next(reference), mesh)
        got = gather(*feed.next_inputs())
        assert feed.batches.state_dict() == reference.state_dict()
        assert set(got) == {"image", "label"}
        for name in got:
            assert got[name].dtype == expected[name].dtype
            assert got[name].sharding.is_equivalent_to(data_sharding, got[name].ndim)
            np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(expected[name]))
            # The same rows on the same devices.
            got_shards = {s.device: np.asarray(s.data) for s in got[name].addressable_shards}
            for shard in expected[name].addressable_shards:
                np.testing.assert_array_equal(got_shards[shard.device], np.asarray(shard.data))
    assert reference.epoch == 2 and feed.images_per_step == BATCH


def test_device_feed_follows_a_loaded_position():
    mesh = mesh_lib.make_mesh()
    feed = feeds.DeviceFeed(batches(), mesh)
    gather = jax.jit(feed.batch_from, in_shardings=feed.input_shardings)
    gather(*feed.next_inputs())  # caches epoch 0's permutation
    position = {"epoch": 3, "step": 1}
    feed.batches.load_state_dict(position)
    reference = batches()
    reference.load_state_dict(position)
    np.testing.assert_array_equal(
        np.asarray(gather(*feed.next_inputs())["label"]), next(reference)["label"]
    )


def test_fit_with_device_feed_equals_host_feed(straight):
    (host, host_dir), (device, device_dir) = straight["host"], straight["device"]
    assert host.step == device.step == STEPS
    assert_same_state(device.state, host.state)
    expected_position = (STEPS, {"epoch": 2, "step": 1})
    assert stored_position(device_dir) == stored_position(host_dir) == expected_position
    assert device.metrics["loss"] == pytest.approx(host.metrics["loss"], rel=1e-6)


@pytest.mark.parametrize("first", ["device", "host"])
def test_resume_with_device_feed_equals_straight_run(tmp_path, straight, first):
    run(tmp_path, first, steps=3)  # checkpoint at step 3 = epoch 1, step 1
    assert stored_position(tmp_path) == (3, {"epoch": 1, "step": 1})
    resumed = run(tmp_path, "device")
    assert resumed.resumed_from == 3 and resumed.step == STEPS
    assert_same_state(resumed.state, straight["device"][0].state)
    assert stored_position(tmp_path) == stored_position(straight["device"][1])


def test_make_feed_auto_is_host_on_cpu_and_unknown_values_fail(tmp_path):
    mesh = mesh_lib.make_mesh()
    assert isinstance(feeds.make_feed(batches(), mesh, "auto"), feeds.HostFeed)
    assert isinstance(feeds.make_feed(batches(), mesh, "host"), feeds.HostFeed)
    assert isinstance(feeds.make_feed(batches(), mesh, "device"), feeds.DeviceFeed)
    with pytest.raises(ValueError, match="data.feed='bogus'.*'auto', 'device', 'host'"):
        feeds.make_feed(batches(), mesh, "bogus")
    with pytest.raises(ValueError, match="data.feed"):
        run(tmp_path, "bogus")
    with pytest.raises(TypeError, match="data.feed='host'"):
        feeds.make_feed(types.SimpleNamespace(steps_per_epoch=1), mesh, "device")


class _FakeDevice:
    platform, process_index = "gpu", 0

    def __init__(self, stats):
        self._stats = stats

    def memory_stats(self):
        return self._stats


@pytest.mark.parametrize(
    ("stats", "fits"),
    [
        ({"bytes_limit": 4 * (NUM_EXAMPLES * 48 + 8 * NUM_EXAMPLES)}, True),
        ({"bytes_limit": 4 * (NUM_EXAMPLES * 48 + 8 * NUM_EXAMPLES) - 1}, False),
        ({"bytes_in_use": 0}, False),
        (None, False),
    ],
)
def test_auto_puts_the_split_on_an_accelerator_when_it_fits_a_quarter(stats, fits):
    source = batches()
    assert feeds.device_feed_bytes(source) == NUM_EXAMPLES * 48 + 8 * NUM_EXAMPLES
    fake_mesh = types.SimpleNamespace(devices=np.asarray([_FakeDevice(stats)] * 2))
    assert feeds._device_feed_fits(source, fake_mesh) is fits
