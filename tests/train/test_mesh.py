"""The environment that makes a process join a multi-process run, and batch placement."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from capjax.core import mesh as mesh_lib


def test_single_process_without_settings():
    assert mesh_lib.distributed_settings({}) is None
    assert mesh_lib.distributed_settings({"TPU_WORKER_HOSTNAMES": "localhost"}) is None


@pytest.mark.parametrize("prefix", ["JAX_", ""])
def test_explicit_coordinator_process_count_and_id(prefix):
    environ = {
        f"{prefix}COORDINATOR_ADDRESS": "10.0.0.1:1234",
        f"{prefix}NUM_PROCESSES": "4",
        f"{prefix}PROCESS_ID": "3",
    }
    assert mesh_lib.distributed_settings(environ) == {
        "coordinator_address": "10.0.0.1:1234",
        "num_processes": 4,
        "process_id": 3,
    }


def test_jax_names_win_over_bare_ones():
    environ = {
        "JAX_COORDINATOR_ADDRESS": "a:1",
        "COORDINATOR_ADDRESS": "b:2",
        "JAX_NUM_PROCESSES": "2",
        "NUM_PROCESSES": "9",
        "PROCESS_ID": "1",
    }
    assert mesh_lib.distributed_settings(environ) == {
        "coordinator_address": "a:1",
        "num_processes": 2,
        "process_id": 1,
    }


def test_auto_detection_on_request_and_on_gke_tpu_slices():
    assert mesh_lib.distributed_settings({"CAPJAX_DISTRIBUTED": "auto"}) == {}
    assert mesh_lib.distributed_settings({"TPU_WORKER_HOSTNAMES": "h0,h1"}) == {}
    with pytest.raises(ValueError, match="CAPJAX_DISTRIBUTED='yes'.*'auto'"):
        mesh_lib.distributed_settings({"CAPJAX_DISTRIBUTED": "yes"})


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_PROCESS_ID": "0"}, "JAX_NUM_PROCESSES"),
        ({"COORDINATOR_ADDRESS": "h:1", "NUM_PROCESSES": "2"}, "JAX_PROCESS_ID \\(or PROCESS_ID"),
        ({"COORDINATOR_ADDRESS": "10.0.0.1", "NUM_PROCESSES": "2", "PROCESS_ID": "0"}, "host:port"),
        ({"COORDINATOR_ADDRESS": "h:1", "NUM_PROCESSES": "two", "PROCESS_ID": "0"}, "integer"),
        ({"COORDINATOR_ADDRESS": "h:1", "NUM_PROCESSES": "2", "PROCESS_ID": "2"}, "process_id <"),
    ],
)
def test_incomplete_or_invalid_settings_say_what_to_set(environ, message):
    with pytest.raises(ValueError, match=message):
        mesh_lib.distributed_settings(environ)


def test_global_batch_held_by_every_process_is_sharded_not_repeated():
    mesh = mesh_lib.make_mesh()
    assert mesh.devices.size == 8
    batch = {"image": np.arange(16 * 3).reshape(16, 3), "mask": np.arange(16) < 11}
    placed = mesh_lib.shard_global_batch(batch, mesh)
    for name, value in batch.items():
        assert placed[name].shape == value.shape
        assert placed[name].sharding == mesh_lib.data_sharding(mesh)
        np.testing.assert_array_equal(np.asarray(placed[name]), value)
        assert [s.data.shape[0] for s in placed[name].addressable_shards] == [2] * 8


def test_mesh_groups_devices_by_process():
    mesh = mesh_lib.make_mesh()
    order = [d.process_index for d in mesh.devices.flat]
    assert order == sorted(order) and list(mesh.devices.flat) == jax.devices()
