"""One CPU device per core: the count chosen, the settings honoured, batches split evenly."""

import importlib.util
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from capjax import cpu_devices


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 2), (3, 2), (6, 4), (8, 8), (96, 8)])
def test_auto_count_is_a_power_of_two_per_core(cores, expected):
    assert cpu_devices.auto_device_count(cores) == expected


def test_auto_count_divides_every_batch_size():
    assert cpu_devices.auto_device_count(16, [128, 200, 300]) == 4
    assert cpu_devices.auto_device_count(16, [64, 128]) == 8
    assert cpu_devices.auto_device_count(4, [7]) == 1


def test_main_reads_every_batch_size_of_a_config():
    from capjax.main import config_batch_sizes

    path = os.path.join(os.path.dirname(__file__), "..", "configs", "cafd_cifar.py")
    spec = importlib.util.spec_from_file_location("cafd_cifar", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert sorted(set(config_batch_sizes(module.get_config()))) == [128, 200, 300]


def test_settings_and_explicit_xla_flag():
    assert cpu_devices.requested_device_count(environ={"CAPJAX_CPU_DEVICES": "1"}) == 1
    assert cpu_devices.requested_device_count(3, environ={}) == 3
    auto = cpu_devices.auto_device_count(cpu_devices.usable_cores())
    assert cpu_devices.requested_device_count(environ={}) == auto
    flag = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "CAPJAX_CPU_DEVICES": "2"}
    assert cpu_devices.requested_device_count(environ=flag) is None
    for bad in ("0", "many", "-2"):
        with pytest.raises(ValueError, match="CAPJAX_CPU_DEVICES"):
            cpu_devices.requested_device_count(environ={"CAPJAX_CPU_DEVICES": bad})


def test_too_late_is_a_quiet_no_op():
    jax.devices()  # backends running
    assert cpu_devices.configure_cpu_devices(2) is None


def test_configure_before_jax_starts_gives_the_devices():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", CAPJAX_CPU_DEVICES="3")
    code = (
        "from capjax.cpu_devices import configure_cpu_devices\n"
        "n = configure_cpu_devices()\n"
        "import jax, jax.numpy as jnp\n"
        "conv = lambda x, w: jax.lax.conv(x, w, (1, 1), 'SAME')\n"
        "hlo = jax.jit(conv).lower(jnp.ones((2, 8, 8, 8)), jnp.ones((8, 8, 3, 3))).compile()\n"
        "print(n, len(jax.devices()), 'ynn' in hlo.as_text())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    count, devices, ynn = out.stdout.split()
    assert (count, devices) == ("3", "3")
    if cpu_devices.jaxlib_knows(*cpu_devices._YNN_MARKERS):
        assert ynn == "False"  # the convolution stayed on XLA's multi-threaded kernels


def test_convolution_flag_only_where_jaxlib_knows_it_and_never_over_the_users():
    known = cpu_devices.jaxlib_knows(*cpu_devices._YNN_MARKERS)
    environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    assert cpu_devices.use_multithreaded_convolutions(environ) == known
    if known:
        assert environ["XLA_FLAGS"].startswith("--xla_dump_to=/tmp/x --xla_cpu_experimental_ynn")
    mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}
    assert not cpu_devices.use_multithreaded_convolutions(mine)
    assert mine == {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}
    assert not cpu_devices.jaxlib_knows(b"no jaxlib holds this \x00\x01 string")


def test_without_multithreaded_convolutions_removes_only_capjax_flag():
    environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    cpu_devices.use_multithreaded_convolutions(environ)
    stock = cpu_devices.without_multithreaded_convolutions(environ["XLA_FLAGS"])
    assert stock == "--xla_dump_to=/tmp/x"
    mine = "--xla_cpu_experimental_ynn_fusion_type=dot --xla_dump_to=/tmp/x"
    assert cpu_devices.without_multithreaded_convolutions(mine) == mine


def test_shard_over_devices_splits_the_batch():
    n = jax.device_count()
    x, y = cpu_devices.shard_over_devices(np.zeros((2 * n, 4), np.float32), np.arange(2 * n))
    assert len({str(s.index) for s in x.addressable_shards}) == n
    np.testing.assert_array_equal(np.asarray(y), np.arange(2 * n))
    single = cpu_devices.shard_over_devices(np.ones((n, 2)))
    assert single.shape == (n, 2)
    if n > 1:
        with pytest.raises(ValueError, match="does not split"):
            cpu_devices.shard_over_devices(np.zeros((n + 1, 2)))
