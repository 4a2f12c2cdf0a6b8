"""Test-wide settings: 8 simulated CPU devices (for sharding tests), CPU only."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()

# As capjax's entry points do: XLA:CPU's multi-threaded convolutions (where jaxlib knows the flag).
from capjax.cpu_devices import use_multithreaded_convolutions  # noqa: E402

use_multithreaded_convolutions()
