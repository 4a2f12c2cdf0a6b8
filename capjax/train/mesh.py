"""One data-parallel mesh over every device, and moving host batches onto it.

DESIGN.md principle 5: batches are sharded along the mesh axis `data`, states are replicated,
and the same program runs on 1 device, 8 devices or several hosts.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

# Environment variables whose presence means "this process is one of several".
_MULTIPROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")


def maybe_initialize_distributed() -> bool:
    """Calls `jax.distributed.initialize()` when launched as one of several processes.

    Several processes are recognised by `JAX_COORDINATOR_ADDRESS` (with `JAX_NUM_PROCESSES`
    and `JAX_PROCESS_ID`, as the launch scripts set them) or by a TPU pod slice, where JAX
    finds the coordinator itself. Returns True when it initialised.
    """
    if jax.distributed.is_initialized():
        return True
    coordinator = next((os.environ[k] for k in _MULTIPROCESS_ENV if os.environ.get(k)), None)
    if coordinator:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
        return True
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if "," in hosts:  # a multi-worker TPU slice: JAX discovers everything itself
        jax.distributed.initialize()
        return True
    return False


def make_mesh(devices: list[Any] | None = None) -> Mesh:
    """A 1-D mesh named `data` over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else devices
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
        raise ValueError(
            f"{field}={global_batch_size} must be a positive multiple of the number of devices "
            f"({devices}: {jax.devices()[0].platform}); e.g. {field}="
            f"{max(devices, global_batch_size // devices * devices)}."
        )
    if global_batch_size % jax.process_count():
        raise ValueError(
            f"{field}={global_batch_size} must be divisible by the process count "
            f"({jax.process_count()})."
        )


def shard_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each process's slice of the global batch into one globally sharded array."""
    sharding = data_sharding(mesh)
    return {
        name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
        for name, value in local_batch.items()
    }


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a pytree of host or device arrays fully replicated on the mesh."""
    return jax.device_put(tree, replicated(mesh))
