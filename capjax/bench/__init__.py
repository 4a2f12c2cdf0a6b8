"""Benchmarks: `python -m capjax.bench <name> [options]` (see `python -m capjax.bench --help`)."""

from __future__ import annotations

import importlib

# Benchmarks whose module is not named after them (a file name says what the file holds).
MODULES = {
    "attacks": "attack_speed",
    "train": "train_speed",
    "cafd": "cafd_step",
    "capgan": "capgan_step",
}


def run_benchmark(argv: list[str]) -> None:
    """Runs `python -m capjax.bench argv[0] argv[1:]` in this process."""
    module = MODULES.get(argv[0], argv[0])
    importlib.import_module(f"capjax.bench.{module}").run(argv[1:])
