"""Keeping every CPU core busy: multi-threaded convolutions, and one JAX device per core.

XLA:CPU hands single convolutions to YNNPACK, which ran them on one thread, leaving cores
idle. Two remedies, both on by default through `configure_cpu_devices`:

- `use_multithreaded_convolutions` keeps convolutions on XLA's multi-threaded kernels
  (an XLA flag, set only where the installed jaxlib knows it);
- one CPU device per core, with the batch sharded over them, so that each core runs its own
  share of every op, whatever XLA threads.

Each made ResNet-18's input gradient about a quarter faster on 2 cores (figures in
docs/benchmarks.md).

`python -m capjax.bench compare` measures them beside the peers.

capjax's entry points (`capjax.main`, `capjax.bench`) call `configure_cpu_devices()` before
JAX starts; its training loop and evaluation already shard every batch over all devices.
Code of your own: call it right after `import jax`, then put batches on the devices with
`shard_over_devices`:

    import jax
    import capjax.cpu_devices as cpu_devices
    cpu_devices.configure_cpu_devices()
    x, y = cpu_devices.shard_over_devices(x, y)
    x_adv = jax.jit(lambda x, y: pgd(logits_fn, x, y, eps=8 / 255))(x, y)

`CAPJAX_CPU_DEVICES` overrides the count (`1` turns the split off), and an explicit
`--xla_force_host_platform_device_count` in `XLA_FLAGS` always wins. GPU and TPU programs are
untouched: the setting only shapes JAX's CPU backend.
"""

from __future__ import annotations

import glob
import mmap
import os
from collections.abc import Mapping, MutableMapping, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from capjax.core.errors import ConfigError

ENV = "CAPJAX_CPU_DEVICES"
_XLA_FLAG = "xla_force_host_platform_device_count"
# Beyond this many devices, per-device batches get too small to run efficiently.
MAX_AUTO_DEVICES = 8
# See `use_multithreaded_convolutions`.
_YNN_FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"
_YNN_FLAG = f"--{_YNN_FLAG_NAME}=-individual_convolution,-individual_dot"
_YNN_MARKERS = (
    _YNN_FLAG_NAME.encode(),
    b"LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION",
    b"LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def auto_device_count(cores: int, batch_sizes: Sequence[int] = ()) -> int:
    """The largest power of two <= `cores`, at most `MAX_AUTO_DEVICES`, dividing every batch
    size in `batch_sizes` (so that no batch of the run is refused for not splitting evenly)."""
    if cores < 1:
        raise ConfigError(f"cores must be >= 1, got {cores}.")
    count = min(MAX_AUTO_DEVICES, 1 << (cores.bit_length() - 1))
    while count > 1 and any(b % count for b in batch_sizes):
        count //= 2
    return count


def requested_device_count(
    setting: str | int | None = None,
    environ: Mapping[str, str] | None = None,
    batch_sizes: Sequence[int] = (),
) -> int | None:
    """How many CPU devices to ask for: None to leave JAX's default alone.

    Args:
      setting: "auto" (one per core, see `auto_device_count`), a positive count, or None to
        read `CAPJAX_CPU_DEVICES` (default "auto").
      environ: the environment (default os.environ).
      batch_sizes: batch sizes the "auto" count must divide.

    Raises:
      ValueError: a setting that is neither "auto" nor a positive integer.
    """
    environ = os.environ if environ is None else environ
    if _XLA_FLAG in environ.get("XLA_FLAGS", ""):
        return None  # the user's explicit XLA flag decides
    if setting is None:
        setting = environ.get(ENV, "").strip() or "auto"
    if setting == "auto":
        return auto_device_count(usable_cores(), batch_sizes)
    try:
        count = int(setting)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise ConfigError(
            f"{ENV}={setting!r}: use 'auto' (one device per core) or a positive device count "
            "(1 turns the split off)."
        )
    return count


def configure_cpu_devices(
    setting: str | int | None = None, batch_sizes: Sequence[int] = ()
) -> int | None:
    """Asks JAX for one CPU device per core (or `setting` devices); call before any JAX op.

    Args:
      setting: see `requested_device_count` (None: `CAPJAX_CPU_DEVICES`, default "auto").
      batch_sizes: the batch sizes the run will use; "auto" picks a count dividing them all.

    It also keeps XLA:CPU's convolutions multi-threaded (`use_multithreaded_convolutions`).

    Returns:
      The CPU device count asked for, or None when it was left alone: XLA_FLAGS already sets
      it, or JAX's backends were already running (then nothing changes: both settings are
      speed-ups, never requirements).

    Raises:
      ValueError: an invalid setting (see `requested_device_count`).
    """
    count = requested_device_count(setting, batch_sizes=batch_sizes)
    if _backends_running():
        return None  # too late, and harmless
    use_multithreaded_convolutions()
    if count is None:
        return None
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # backends started after all
        return None
    return count


def _backends_running() -> bool:
    try:
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:  # another JAX: configure_cpu_devices' update tells instead
        return False
    return backends_are_initialized()


def jaxlib_knows(*markers: bytes) -> bool:
    """Whether one of jaxlib's native libraries contains every byte string in `markers`
    (XLA aborts the process on an XLA_FLAGS entry it does not know, so a flag is only set
    after its name and values are found in the installed build)."""
    try:
        import jaxlib
    except ImportError:
        return False
    for path in glob.glob(os.path.join(os.path.dirname(jaxlib.__file__), "*.so")):
        try:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if all(m.find(marker) >= 0 for marker in markers):
                    return True
        except (OSError, ValueError):  # unreadable, or empty
            continue
    return False


def use_multithreaded_convolutions(environ: MutableMapping[str, str] | None = None) -> bool:
    """Keeps XLA:CPU's convolutions on its multi-threaded kernels; before any JAX op.

    Recent XLA:CPU hands single convolutions and dots to YNNPACK, which ran them on one
    thread (docs/benchmarks.md). This adds `--xla_cpu_experimental_ynn_fusion_type=
    -individual_convolution,-individual_dot` to XLA_FLAGS, unless XLA_FLAGS already sets that
    flag or the installed jaxlib does not know it.

    YNNPACK's other fusions stay: also turning off its "reduce" fusions (which grow from a
    global average pool back over several convolutions) sped up the tiny CNN's PGD but
    slowed CAFD's train step more (docs/benchmarks.md).

    Returns:
      Whether the flag was added.
    """
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if _YNN_FLAG_NAME in flags or not jaxlib_knows(*_YNN_MARKERS):
        return False
    environ["XLA_FLAGS"] = f"{flags} {_YNN_FLAG}".strip()
    return True


def without_multithreaded_convolutions(flags: str) -> str:
    """XLA_FLAGS `flags` less the flag `use_multithreaded_convolutions` adds: the XLA set-up
    another JAX program gets by default (`python -m capjax.bench compare` times foolbox that
    way too, in a process of its own)."""
    return " ".join(flag for flag in flags.split() if flag != _YNN_FLAG)


def shard_over_devices(*arrays, devices=None):
    """The arrays, each split along its first (batch) axis over `devices` (default: all).

    Returns one array for one argument, else a tuple. A batch that does not split evenly is
    an error naming the sizes, since silently leaving it on one device would hide the cost.
    """
    devices = jax.devices() if devices is None else devices
    mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    out = []
    for a in arrays:
        if np.shape(a)[0] % len(devices):
            raise ConfigError(
                f"A batch of {np.shape(a)[0]} does not split over {len(devices)} devices; use a "
                f"multiple of {len(devices)}, or {ENV}=1 to run on one device."
            )
        out.append(jax.device_put(a, sharding))
    return out[0] if len(out) == 1 else tuple(out)
