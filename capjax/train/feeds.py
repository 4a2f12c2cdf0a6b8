"""How the training loop gets each step's global batch onto the devices.

Two feeds wrap the same host `BatchSource` (a `capjax.data.BatchIterator`) and give the
same batches, row for row:

- `HostFeed` gathers each batch on the host and moves it to the devices every step
  (`mesh.shard_batch`): works for any source and any dataset size.
- `DeviceFeed` places the whole training split on the devices once (replicated over the
  mesh) and the epoch's permutation once per epoch; each step only sends an offset, and the
  jitted step gathers its global batch there. The data stays on the accelerators.

The loop calls `next_inputs()` on the host each step, passes the result to its jitted step
(with `input_shardings`), and calls `batch_from(*inputs)` inside it. `make_feed` picks one
from the config value `data.feed` ("auto" | "device" | "host").
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from capjax.core import mesh as mesh_lib
from capjax.core.errors import ConfigError

FEEDS = ("auto", "device", "host")

# What `DeviceFeed` needs of its source beyond the loop's `BatchSource` (BatchIterator has it).
_DEVICE_SOURCE_ATTRS = ("images", "labels", "global_batch_size", "permutation", "advance")

# "auto" puts the split on the devices when it takes at most this share of a device's memory.
_AUTO_MEMORY_FRACTION = 0.25


class Feed(Protocol):
    """What the training loop needs of a feed."""

    input_shardings: tuple[Any, ...]  # one per element of `next_inputs()`
    images_per_step: int  # global batch size, for the images/s metric

    def next_inputs(self) -> tuple[Any, ...]:
        """The next step's jit inputs (advances the source's position by one batch)."""
        ...

    def batch_from(self, *inputs: Any) -> dict[str, jax.Array]:
        """Inside jit: the global batch {"image", "label"} sharded over the mesh axis `data`."""
        ...


class HostFeed:
    """Each step's batch gathered on the host and moved to the devices (`shard_batch`)."""

    def __init__(self, batches, mesh: Mesh):
        self.batches = batches
        self.mesh = mesh
        self.input_shardings = (mesh_lib.data_sharding(mesh),)
        self.images_per_step = int(getattr(batches, "global_batch_size", 0))

    def next_inputs(self) -> tuple[dict[str, jax.Array]]:
        batch = mesh_lib.shard_batch(next(self.batches), self.mesh)
        self.images_per_step = next(iter(batch.values())).shape[0]
        return (batch,)

    def batch_from(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        return batch


def _replicate(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host array every process holds whole, as one copy on every device of the mesh."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _missing_attrs(batches) -> list[str]:
    return [name for name in _DEVICE_SOURCE_ATTRS if not hasattr(batches, name)]


def device_feed_bytes(batches) -> int:
    """Bytes one device holds for a `DeviceFeed`: images, int32 labels, int32 permutation."""
    n = len(batches.labels)
    return int(np.asarray(batches.images).nbytes) + 2 * 4 * n


class DeviceFeed:
    """The whole training split on every device; each step's batch gathered inside jit.

    The batches equal `HostFeed`'s: step s of epoch e takes global rows
    `permutation(e)[s * B : (s + 1) * B]` in that order, so row r lands on the same device
    as with `shard_batch` (process i's slice is rows [i * B/P, (i + 1) * B/P)). The position
    is read from the source at every call, so `load_state_dict` on the source (resume) is
    all it takes to continue elsewhere.
    """

    def __init__(self, batches, mesh: Mesh):
        missing = _missing_attrs(batches)
        if missing:
            raise TypeError(
                f"data.feed='device' needs a source like capjax.data.BatchIterator; "
                f"{type(batches).__name__} lacks {', '.join(missing)}. Use data.feed='host'."
            )
        self.batches = batches
        self.mesh = mesh
        self.global_batch_size = int(batches.global_batch_size)
        self.images_per_step = self.global_batch_size
        self._replicated = mesh_lib.replicated(mesh)
        self._data_sharding = mesh_lib.data_sharding(mesh)
        self.input_shardings = (self._replicated, self._replicated, self._replicated)
        labels = np.asarray(batches.labels, np.int32)
        if len(labels) >= np.iinfo(np.int32).max:
            raise ConfigError(f"{len(labels)} examples are too many for int32 indices.")
        self._arrays = {
            "image": _replicate(np.asarray(batches.images), self._replicated),
            "label": _replicate(labels, self._replicated),
        }
        self._permutation: jax.Array | None = None
        self._permutation_epoch: int | None = None

    def _permutation_for(self, epoch: int) -> jax.Array:
        if epoch != self._permutation_epoch:
            order = np.asarray(self.batches.permutation(epoch), np.int32)
            self._permutation = _replicate(order, self._replicated)
            self._permutation_epoch = epoch
        return self._permutation

    def next_inputs(self) -> tuple[dict[str, jax.Array], jax.Array, np.ndarray]:
        epoch, step = self.batches.advance()
        offset = np.asarray(step * self.global_batch_size, np.int32)
        return self._arrays, self._permutation_for(epoch), offset

    def batch_from(
        self, arrays: dict[str, jax.Array], permutation: jax.Array, offset: jax.Array
    ) -> dict[str, jax.Array]:
        indices = lax.dynamic_slice_in_dim(permutation, offset, self.global_batch_size)
        indices = lax.with_sharding_constraint(indices, self._data_sharding)
        # Indices are in range by construction; "clip" spares the out-of-range mask of "fill".
        return {
            name: lax.with_sharding_constraint(
                jnp.take(value, indices, axis=0, mode="clip"), self._data_sharding
            )
            for name, value in arrays.items()
        }


def _local_device(mesh: Mesh):
    index = jax.process_index()
    return next(d for d in mesh.devices.flat if d.process_index == index)


def _device_feed_fits(batches, mesh: Mesh) -> bool:
    """Whether "auto" should gather on the devices (the same answer on every process)."""
    if _missing_attrs(batches) or mesh.devices.flat[0].platform == "cpu":
        return False  # on CPU the data already is in (host) memory
    try:
        stats = _local_device(mesh).memory_stats()
    except (NotImplementedError, RuntimeError):  # a backend without memory statistics
        stats = None
    limit = (stats or {}).get("bytes_limit")
    fits = bool(limit) and device_feed_bytes(batches) <= _AUTO_MEMORY_FRACTION * limit
    if jax.process_count() > 1:  # every process must compile the same step
        fits = bool(np.all(multihost_utils.process_allgather(np.asarray(fits))))
    return fits


def check_feed(where: str) -> None:
    """Raises ValueError unless `where` is a value of `data.feed`."""
    if where not in FEEDS:
        raise ConfigError(
            f"data.feed={where!r} is not a feed: use one of {', '.join(map(repr, FEEDS))}."
        )


def make_feed(batches, mesh: Mesh, where: str = "auto") -> HostFeed | DeviceFeed:
    """The feed named by `data.feed`.

    Args:
      batches: the training `BatchSource`.
      mesh: the data-parallel mesh.
      where: "host"; "device"; or "auto": device on GPU/TPU when the split (images, labels,
        permutation) takes at most a quarter of one device's memory, else host.

    Raises:
      ValueError: an unknown `where`.
      TypeError: "device" with a source that does not hold its whole split.
    """
    check_feed(where)
    if where == "auto":
        where = "device" if _device_feed_fits(batches, mesh) else "host"
    if where == "host":
        return HostFeed(batches, mesh)
    feed = DeviceFeed(batches, mesh)
    logging.info(
        "Training split on the devices: %.1f MiB on each of %d devices.",
        device_feed_bytes(batches) / 2**20,
        mesh.devices.size,
    )
    return feed
