"""Test-wide settings, the same on every machine: CPU only, 8 simulated CPU devices.

Settings a user's shell may carry change what the tests compute (the device count, XLA's
flags, a JAX default such as x64 or the matmul precision, a multi-process coordinator), so
they are cleared here, before JAX starts, and the tests set what they need themselves.
Subprocesses inherit this environment.
"""

import os

_USER_SETTINGS = ("JAX_", "XLA_", "TPU_", "CAPJAX_")
_BARE_DISTRIBUTED = ("COORDINATOR_ADDRESS", "NUM_PROCESSES", "PROCESS_ID")
for name in list(os.environ):
    if name.startswith(_USER_SETTINGS) or name in _BARE_DISTRIBUTED:
        del os.environ[name]
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

# As capjax's entry points do: XLA:CPU's multi-threaded convolutions (where jaxlib knows the flag).
from capjax.cpu_devices import use_multithreaded_convolutions  # noqa: E402

use_multithreaded_convolutions()
