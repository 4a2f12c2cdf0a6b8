"""`python -m capjax.bench feed`: what getting each training batch onto the devices costs.

The training loop's two feeds (`capjax.train.feeds`, config `data.feed`) over a CIFAR-10-sized
split (50,000 uint8 images, 32x32x3, random content): `host` gathers each shuffled batch on
the host and sends it; `device` keeps the split on the devices and gathers there. Each is
timed feeding a jitted step that only reduces the batch (so the input path is all there is to
time), over `--steps` consecutive steps through the loop's own calls, after a warm-up; the
images/s is the ceiling the feed puts on training.

    python -m capjax.bench feed --batch 128,1024
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from capjax.bench.measure import describe_device, print_table
from capjax.core import mesh as mesh_lib
from capjax.data import BatchIterator
from capjax.train.feeds import device_feed_bytes, make_feed


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m capjax.bench feed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--batch", default="128,1024", help="comma-separated global batch sizes")
    parser.add_argument("--examples", type=int, default=50_000, help="training split size")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per feed")
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batch.split(",") if b.strip()]
    if args.examples < 1 or args.steps < 1 or any(b < 1 for b in args.batches):
        parser.error("--batch, --examples and --steps must be >= 1")
    return args


def time_feed(feed, steps: int) -> float:
    """Seconds per step of `feed` driving a jitted step that reduces its batch."""

    def step(total, *inputs):
        batch = feed.batch_from(*inputs)
        return total + jnp.sum(batch["image"], dtype=jnp.float32) + jnp.sum(batch["label"])

    rep = mesh_lib.replicated(feed.mesh)
    compiled = jax.jit(step, in_shardings=(rep, *feed.input_shardings), out_shardings=rep)
    total = jax.block_until_ready(compiled(jnp.float32(0), *feed.next_inputs()))  # compile
    start = time.perf_counter()
    for _ in range(steps):
        total = compiled(total, *feed.next_inputs())
    jax.block_until_ready(total)
    return (time.perf_counter() - start) / steps


def run(argv: list[str]) -> None:
    args = parse(argv)
    mesh = mesh_lib.make_mesh()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.examples, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.examples, dtype=np.int32)
    print(describe_device())
    rows = []
    for batch in args.batches:
        mesh_lib.check_global_batch(batch, mesh, "--batch")
        row = {"batch": batch}
        for where in ("host", "device"):
            batches = BatchIterator(images, labels, batch, seed=0)
            seconds = time_feed(make_feed(batches, mesh, where), args.steps)
            row[f"{where} (ms/step)"] = f"{seconds * 1e3:.3f}"
            row[f"{where} (images/s)"] = f"{batch / seconds:,.0f}"
        rows.append(row)
    print(f"split: {args.examples} images, {device_feed_bytes(batches) / 2**20:.0f} MiB per device")
    print_table(rows)
