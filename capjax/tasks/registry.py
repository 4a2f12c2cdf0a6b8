"""`config.task` -> the module whose `run(config, workdir)` performs it (imported lazily)."""

from __future__ import annotations

import importlib
from typing import Any

import ml_collections

from capjax.core.errors import ConfigError

TASKS = {
    "classifier": "capjax.tasks.classifier_task",
    "cafd": "capjax.tasks.cafd_task",
    "capgan": "capjax.tasks.capgan_task",
    "hgd": "capjax.tasks.hgd_task",
    "apegan": "capjax.tasks.apegan_task",
    "demo": "capjax.tasks.demo_task",
    "eval": "capjax.tasks.eval_task",
}


def run_task(config: ml_collections.ConfigDict, workdir: str) -> Any:
    """Runs the task a config names.

    Raises:
      ValueError: `config.task` is missing or unknown (the message lists the known tasks).
    """
    task = config.get("task")
    if task not in TASKS:
        raise ConfigError(f"Unknown config.task {task!r}; known tasks: {', '.join(sorted(TASKS))}.")
    return importlib.import_module(TASKS[task]).run(config, workdir)
