"""Shared printing and measuring helpers for the benchmarks."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

from capjax.attacks._common import sub_jaxprs
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


def _jaxpr_flops(jaxpr: Any) -> float:
    """2 x multiply-adds of the convolutions and matrix products in `jaxpr`, sub-programs
    included (a scan's body times its length; the costlier branch of a cond; a while loop's
    body once, as its trip count is unknown)."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        out = eqn.outvars[0].aval
        if name == "conv_general_dilated":
            rhs = eqn.invars[1].aval
            spec = eqn.params["dimension_numbers"].rhs_spec  # (out feat, in feat, spatial...)
            per_output = math.prod(rhs.shape[d] for d in spec[1:])
            # A transposed convolution (an input gradient through a strided one) dilates its
            # input with zeros: only 1 / prod(lhs_dilation) of the taps multiply a value.
            per_output /= math.prod(eqn.params.get("lhs_dilation") or (1,))
            total += 2.0 * math.prod(out.shape) * per_output
        elif name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval
            per_output = math.prod(lhs.shape[d] for d in lhs_contract)
            total += 2.0 * math.prod(out.shape) * per_output
        subs = [_jaxpr_flops(inner) for inner in sub_jaxprs(eqn)]
        if not subs:
            continue
        if name == "cond":
            total += max(subs)
        elif name == "scan":
            total += sum(subs) * eqn.params["length"]
        else:
            total += sum(subs)
    return total


def traced_flops(fn: Callable, args: tuple) -> float | None:
    """FLOPs of `fn(*args)` counted on its jaxpr: 2 x the multiply-adds of its convolutions
    (every kernel tap, padding included, as published FLOP counts take them) and matrix
    products, nearly all of a network's work. ResNet-18 on CIFAR-10: 1.11 GFLOP per image
    forward, the textbook figure; XLA's CPU count, which leaves out the taps that fall on
    padding, is 0.97. The same count on every backend: XLA's own
    count of a compiled GPU program leaves out the convolutions it hands to cuDNN (ResNet-18
    came out at 2.7 MFLOP per image on an H200, against 0.97 GFLOP), and it gave none for
    lowered programs there."""
    flops = _jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)
    return flops or None


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
