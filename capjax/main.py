"""capjax's command line: `python -m capjax.main --config=configs/<name>.py --workdir=<dir>`.

Any config field can be overridden (`--config.train.epochs=3`); unknown fields are an error.
Re-running the same command resumes from the workdir's latest checkpoint.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config file, e.g. configs/demo.py or configs/x.py:variant.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    # Imported here so that `--help` answers without starting JAX.
    from capjax.train.loop import TrainingDiverged, TrainingInterrupted
    from capjax.train.mesh import maybe_initialize_distributed
    from capjax.train.tasks import run_task

    if not os.environ.get("CAPJAX_DEBUG"):
        logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    maybe_initialize_distributed()
    config, workdir = _CONFIG.value, os.path.abspath(_WORKDIR.value)
    os.makedirs(workdir, exist_ok=True)
    try:
        run_task(config, workdir)
    except TrainingInterrupted as e:
        print(e, file=sys.stderr)
        sys.exit(128 + e.signum)
    except (TrainingDiverged, ValueError) as e:
        if os.environ.get("CAPJAX_DEBUG"):
            raise
        print(f"capjax: {e}\n(set CAPJAX_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
