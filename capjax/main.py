"""capjax's command line: `python -m capjax.main --config=configs/<name>.py --workdir=<dir>`.

Any config field can be overridden (`--config.train.epochs=3`); unknown fields are an error.
Re-running the same command resumes from the workdir's latest checkpoint.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from capjax.core.errors import ConfigError


def define_flags(flag_values: flags.FlagValues = flags.FLAGS, argv: list[str] | None = None):
    """Defines --config and --workdir on `flag_values`; returns their holders.

    `argv`: the command line the config's `--config.x=value` overrides are read from
    (default: sys.argv). `parse_command_line` passes its own, on a fresh FlagValues, so that
    a test can parse any command line exactly as `main` would, without starting JAX.
    """
    config = config_flags.DEFINE_config_file(
        "config",
        None,
        "Experiment config file, e.g. configs/demo.py or configs/x.py:variant.",
        lock_config=True,
        flag_values=flag_values,
        sys_argv=argv,
    )
    workdir = flags.DEFINE_string(
        "workdir", None, "Directory for checkpoints, metrics, results.", flag_values=flag_values
    )
    flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)
    return config, workdir


_CONFIG, _WORKDIR = define_flags()


def parse_command_line(argv: list[str]):
    """(config, workdir) of `python -m capjax.main ARGV...`, as `main` would get them.

    Raises:
      absl.flags.Error: flags that `main` would refuse (an unknown field, a value of the
        wrong type, a missing --config or --workdir).
    """
    argv = ["capjax.main", *argv]
    flag_values = flags.FlagValues()
    config, workdir = define_flags(flag_values, argv)
    flag_values(argv)
    return config.value, workdir.value


def use_prng_from_env() -> None:
    """`CAPJAX_PRNG=rbg` switches JAX's default generator (threefry2x32 otherwise).

    XLA:CPU compiles threefry slowly, rbg much faster (figures in docs/benchmarks.md, "Figures
    moved out of docstrings"). rbg is opt-in because its draws
    change with sharding and under vmap, which breaks guarantees capjax tests (a sharded
    step equals the single-device step; an attack's per-example draws do not depend on the
    batch it runs in).
    """
    choice = os.environ.get("CAPJAX_PRNG")
    if choice:
        import jax

        jax.config.update("jax_default_prng_impl", choice)


def config_batch_sizes(config) -> list[int]:
    """Every positive integer `batch_size` field anywhere in the config."""
    found = []
    for key, value in config.items():
        if hasattr(value, "items"):
            found += config_batch_sizes(value)
        elif key == "batch_size" and isinstance(value, int) and value > 0:
            found.append(value)
    return found


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    # Imported here so that `--help` answers without starting JAX.
    from capjax.core.mesh import distributed_settings, maybe_initialize_distributed
    from capjax.cpu_devices import configure_cpu_devices
    from capjax.tasks.registry import run_task
    from capjax.train.loop import TrainingDiverged, TrainingInterrupted

    if not os.environ.get("CAPJAX_DEBUG"):
        logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    try:
        if "://" in _WORKDIR.value:
            raise ConfigError(
                f"--workdir={_WORKDIR.value}: capjax writes its workdir through the local "
                "filesystem. Mount the bucket (e.g. `gcsfuse --implicit-dirs BUCKET /gcs/BUCKET`, "
                "as launch/tpu_vm.sh does) and pass the mounted path, /gcs/BUCKET/<run>."
            )
        config, workdir = _CONFIG.value, os.path.abspath(_WORKDIR.value)
        if distributed_settings() is None:  # one CPU device per core; no effect on GPU/TPU
            configure_cpu_devices(batch_sizes=config_batch_sizes(config))
        maybe_initialize_distributed()
        use_prng_from_env()
        os.makedirs(workdir, exist_ok=True)
        run_task(config, workdir)
    except TrainingInterrupted as e:
        print(e, file=sys.stderr)
        sys.exit(128 + e.signum)
    except (TrainingDiverged, ConfigError) as e:  # anything else keeps its traceback
        if os.environ.get("CAPJAX_DEBUG"):
            raise
        print(f"capjax: {e}\n(set CAPJAX_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
