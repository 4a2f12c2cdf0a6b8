"""Shared printing and measuring helpers for the benchmarks."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

from capjax.cpu_devices import shard_over_devices


def describe_device() -> str:
    """One line naming the backend, device kind and count, process count and JAX version."""
    devices = jax.devices()
    return (
        f"backend={jax.default_backend()} device={devices[0].device_kind} "
        f"x{len(devices)} processes={jax.process_count()} jax={jax.__version__}"
    )


# Dense bfloat16 peak per device of known accelerators, TFLOP/s (vendors' datasheets, without
# sparsity), to judge achieved FLOP/s; the first name found in the device kind wins.
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("A100", 312.0),
    ("TPU v4", 275.0),
    ("TPU v5 lite", 197.0),
    ("TPU v5p", 459.0),
    ("TPU v6 lite", 918.0),
)


def bf16_peak_flops() -> float | None:
    """Dense bfloat16 peak FLOP/s of all devices together, or None for an unknown device
    kind (CPUs included)."""
    devices = jax.devices()
    for name, tflops in BF16_PEAK_TFLOPS:
        if name in devices[0].device_kind:
            return tflops * 1e12 * len(devices)
    return None


def compiled_flops(compiled: Any, partitions: int = 1) -> float | None:
    """XLA's FLOP count for a compiled computation, or None where the backend gives none.

    XLA counts one device's share of a program partitioned over devices; `partitions` (the
    number of devices its batch is split over) scales that back to the whole batch's work.
    """
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(analysis, Sequence) and not isinstance(analysis, dict):
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return float(flops) * partitions if flops and flops > 0 else None


def batch_partitions(x: Any) -> int:
    """Into how many distinct pieces the array `x` is split (1 for host or unsharded arrays)."""
    shards = getattr(x, "addressable_shards", None)
    if not shards:
        return 1
    return len({str(shard.index) for shard in shards})


def spread_over_devices(x, y):
    """(x, y) split along their batch axis over all devices (see `capjax.cpu_devices`), as
    capjax's own training and evaluation run; unchanged, with a printed note, when the batch
    does not split evenly."""
    count = jax.device_count()
    if count > 1 and x.shape[0] % count:
        print(f"note: batch {x.shape[0]} does not split over {count} devices; one runs it")
        return x, y
    return shard_over_devices(x, y)


class Timing(NamedTuple):
    """Median seconds per call: wall time, and CPU time of this process (all its threads).

    On a machine shared with other jobs the wall time grows with their load, the CPU time
    much less (threads that spin while waiting for each other still count)."""

    wall: float
    cpu: float


def median_seconds(call: Callable[[], Any], repeats: int) -> float:
    """Median wall time of `repeats` steady-state calls of `call()`, after one warm-up call.

    Each call's result is waited for with `jax.block_until_ready`, so `call` may return JAX
    arrays (asynchronous dispatch) or anything else (synchronous libraries).
    """
    return interleaved_timings({"call": call}, repeats)["call"].wall


def interleaved_timings(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Timing]:
    """`median_seconds` (and CPU seconds) of several calls timed in turn: one warm-up each,
    then `repeats` rounds of one call each, so that a change in machine load hits them alike."""
    for call in calls.values():
        jax.block_until_ready(call())
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(max(repeats, 1)):
        for name, call in calls.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(call())
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {
        name: Timing(statistics.median(wall[name]), statistics.median(cpu[name])) for name in calls
    }


def compile_timed(fn: Callable, args: tuple) -> tuple[Any, float]:
    """(`jax.jit(fn)` lowered and compiled for `args`, compile wall time in seconds)."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


# Tables printed while `recording_tables` is active (the kit keeps them as JSON).
_RECORDED: list[list[dict[str, Any]]] | None = None


@contextlib.contextmanager
def recording_tables():
    """Within the block, every `print_table` call also appends its rows to the yielded list."""
    global _RECORDED
    previous, _RECORDED = _RECORDED, []
    try:
        yield _RECORDED
    finally:
        _RECORDED = previous


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """Prints dict rows as an aligned Markdown table (columns from the first row)."""
    if not rows:
        return
    if _RECORDED is not None:
        _RECORDED.append([{k: str(v) for k, v in row.items()} for row in rows])
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("| " + " | ".join(c.ljust(widths[c]) for c in columns) + " |")
    print("|" + "|".join("-" * (widths[c] + 2) for c in columns) + "|")
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")).rjust(widths[c]) for c in columns) + " |")
