"""Shared printing and measuring helpers for the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax


def describe_device() -> str:
    """One line naming the backend, device kind and count, process count and JAX version."""
    devices = jax.devices()
    return (
        f"backend={jax.default_backend()} device={devices[0].device_kind} "
        f"x{len(devices)} processes={jax.process_count()} jax={jax.__version__}"
    )


def compiled_flops(compiled: Any) -> float | None:
    """XLA's FLOP count for a compiled computation, or None where the backend gives none."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(analysis, Sequence) and not isinstance(analysis, dict):
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """Prints dict rows as an aligned Markdown table (columns from the first row)."""
    if not rows:
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("| " + " | ".join(c.ljust(widths[c]) for c in columns) + " |")
    print("|" + "|".join("-" * (widths[c] + 2) for c in columns) + "|")
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")).rjust(widths[c]) for c in columns) + " |")
