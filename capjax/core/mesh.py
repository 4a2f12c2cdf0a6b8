"""One data-parallel mesh over every device, and moving host batches onto it.

docs/design.md principle 5: batches are sharded along the mesh axis `data`, states are replicated,
and the same program runs on 1 device, 8 devices or several hosts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from capjax.core.errors import ConfigError

DATA_AXIS = "data"

# Environment variables for several processes, each under JAX's name and a bare one (the
# launch scripts set the JAX_ names; `launch/gpu_multihost.sh` takes the bare ones).
_COORDINATOR_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")
_NUM_PROCESSES_ENV = ("JAX_NUM_PROCESSES", "NUM_PROCESSES")
_PROCESS_ID_ENV = ("JAX_PROCESS_ID", "PROCESS_ID")
# "auto": let `jax.distributed.initialize()` find its peers itself (Cloud TPU VM slices,
# Slurm, Open MPI); `launch/tpu_vm.sh` sets it on every TPU VM worker.
_AUTO_ENV = "CAPJAX_DISTRIBUTED"


def _first_env(environ: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    return next(((k, environ[k]) for k in names if environ.get(k, "").strip()), None)


def distributed_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """How this process should join a multi-process run, read from the environment.

    Returns:
      None for a single process; {} to let JAX detect everything (`CAPJAX_DISTRIBUTED=auto`,
      or a GKE TPU slice's `TPU_WORKER_HOSTNAMES` listing several hosts); else the keyword
      arguments of `jax.distributed.initialize`: coordinator_address ("host:port"),
      num_processes and process_id, from `JAX_COORDINATOR_ADDRESS` (or
      `COORDINATOR_ADDRESS`), `JAX_NUM_PROCESSES` (or `NUM_PROCESSES`) and `JAX_PROCESS_ID`
      (or `PROCESS_ID`).

    Raises:
      ValueError: a coordinator is set but the process count or id is missing or invalid,
        the address has no port, or `CAPJAX_DISTRIBUTED` has an unknown value.
    """
    environ = os.environ if environ is None else environ
    coordinator = _first_env(environ, _COORDINATOR_ENV)
    if coordinator is None:
        auto = environ.get(_AUTO_ENV, "").strip()
        if auto not in ("", "auto"):
            raise ConfigError(
                f"{_AUTO_ENV}={auto!r}: the only value is 'auto' (let JAX find its peers on a "
                "TPU VM slice, Slurm or Open MPI); leave it unset for a single process."
            )
        if auto or "," in environ.get("TPU_WORKER_HOSTNAMES", ""):
            return {}
        return None
    name, address = coordinator
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"{name}={address!r} must be host:port of process 0's coordinator, e.g. "
            "10.0.0.1:1234 (the same on every process)."
        )
    numbers = {}
    for field, names in (("num_processes", _NUM_PROCESSES_ENV), ("process_id", _PROCESS_ID_ENV)):
        found = _first_env(environ, names)
        if found is None:
            raise ConfigError(
                f"{name} is set, so this is one of several processes, but {names[0]} (or "
                f"{names[1]}) is not: set {_NUM_PROCESSES_ENV[0]} to the number of processes "
                f"and {_PROCESS_ID_ENV[0]} to this process's index (0 on the coordinator)."
            )
        try:
            numbers[field] = int(found[1])
        except ValueError:
            raise ConfigError(f"{found[0]}={found[1]!r} must be an integer.") from None
    count, index = numbers["num_processes"], numbers["process_id"]
    if count < 1 or not 0 <= index < count:
        raise ConfigError(
            f"Process id {index} with {count} processes: need num_processes >= 1 and "
            f"0 <= process_id < num_processes ({_PROCESS_ID_ENV[0]} is 0 on the coordinator)."
        )
    return {"coordinator_address": address.strip(), "num_processes": count, "process_id": index}


def maybe_initialize_distributed() -> bool:
    """Calls `jax.distributed.initialize()` when launched as one of several processes.

    Must run before anything touches a device. See `distributed_settings` for the
    environment it reads. Returns True when JAX is (now) initialised for several processes.
    """
    if jax.distributed.is_initialized():
        return True
    settings = distributed_settings()
    if settings is None:
        return False
    jax.distributed.initialize(**settings)
    return True


def is_multiprocess() -> bool:
    """True when this program is one of several JAX processes."""
    return jax.process_count() > 1


def make_mesh(devices: list[Any] | None = None) -> Mesh:
    """A 1-D mesh named `data` over `devices` (default: every device of every process).

    Devices are grouped by process (stably, so one process keeps JAX's order), so that each
    process's devices hold one contiguous block of the batch axis: process i's share of a
    global batch (`BatchIterator`) lands at rows [i * B/P, (i + 1) * B/P) of the global array.
    """
    devices = jax.devices() if devices is None else devices
    devices = sorted(devices, key=lambda d: d.process_index)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh; other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def check_global_batch(global_batch_size: int, mesh: Mesh, field: str = "train.batch_size"):
    """Raises ValueError unless the global batch splits evenly over devices and processes."""
    devices = mesh.devices.size
    if global_batch_size <= 0 or global_batch_size % devices:
        raise ConfigError(
            f"{field}={global_batch_size} must be a positive multiple of the number of devices "
            f"({devices}: {jax.devices()[0].platform}); e.g. {field}="
            f"{max(devices, global_batch_size // devices * devices)}."
        )
    if global_batch_size % jax.process_count():
        raise ConfigError(
            f"{field}={global_batch_size} must be divisible by the process count "
            f"({jax.process_count()})."
        )


def shard_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each process's slice of the global batch into one globally sharded array.

    Args:
      local_batch: this process's rows only (B_global / process_count of them), as
        `BatchIterator` gives them. For a batch that every process holds whole, use
        `shard_global_batch`.
    """
    sharding = data_sharding(mesh)
    return {
        name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
        for name, value in local_batch.items()
    }


def shard_global_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Shards a batch that every process holds whole (the same rows everywhere), such as an
    evaluation batch from `eval_batches`: each device gets its rows of it.

    With one process this is `shard_batch`; with several, `shard_batch` would take each
    process's copy for its own slice and repeat the batch process_count times.
    """
    sharding = data_sharding(mesh)

    def place(value: np.ndarray) -> jax.Array:
        value = np.asarray(value)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return {name: place(value) for name, value in batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a pytree of host or device arrays fully replicated on the mesh."""
    return jax.device_put(tree, replicated(mesh))
