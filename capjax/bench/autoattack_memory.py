"""Peak memory of one AutoAttack call: `python -m capjax.bench autoattack_memory`.

Issue #17's goal is AutoAttack standard on 1,000 CIFAR-10 images of a user's max-pool CNN in
under 2 GB. This runs one `capjax.attacks.autoattack` call in this process (a fresh one, so
that nothing else has raised its peak), on the bench's stand-in for such a model
(`compare.build_model("maxpool_cnn")`: random weights, uniform images, the model's own
predictions as labels), with the batch split over the CPU devices as capjax's evaluation
runs it. It prints the wall time (compile included), the robust accuracy after each
component, and the process's peak resident memory before and after the call
(`resource.getrusage`), and with `--json PATH` writes them there.

    python -m capjax.bench autoattack_memory --images 1000 --batch-size 500

`--short` runs every component with a tenth of its steps (APGD 10, FAB 10, Square 500): on
XLA:CPU the gradient attacks run as programs of at most 10 steps driven from the host, so
their memory does not depend on the step count and the short call shows the same peak in a
fraction of the time (its robust accuracy is a weaker attack's). `--tiled-max-pool` runs
the model through `attacks.tiled_max_pool` (flax_logits_fn's default); without it the model's
own `nn.max_pool` gradient is measured.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import jax
import numpy as np

from capjax.attacks import autoattack, flax_logits_fn
from capjax.bench.compare import build_model
from capjax.bench.measure import spread_over_devices

SHORT = {
    "apgd-ce": {"steps": 10},
    "apgd-t": {"steps": 10},
    "fab-t": {"steps": 10},
    "square": {"steps": 500},
}


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9


def measure(
    images: int,
    batch_size: int | None,
    eps: float,
    short: bool,
    tiled: bool,
    model_name: str = "maxpool_cnn",
) -> dict:
    """One AutoAttack standard call; its wall time, per-component robust accuracy and the
    peak memory of the process before and after."""
    model, variables, x, y = build_model(model_name, 10, images)
    x, y = spread_over_devices(x, y)
    logits_fn = flax_logits_fn(model, variables, fast_max_pool=tiled)
    before = peak_rss_gb()
    start = time.perf_counter()
    _, details = autoattack(
        logits_fn,
        x,
        y,
        eps=eps / 255,
        key=jax.random.key(0),
        options=SHORT if short else None,
        batch_size=batch_size,
        return_details=True,
    )
    robust = {name: float(np.mean(np.asarray(mask))) for name, mask in details.items()}
    return {
        "model": model_name + (" (tiled_max_pool)" if tiled else ""),
        "images": images,
        "batch_size": batch_size,
        "eps_255": eps,
        "steps": "a tenth (--short)" if short else "standard",
        "devices": jax.device_count(),
        "wall_s": round(time.perf_counter() - start, 1),
        "robust_accuracy": robust,
        "peak_rss_gb_before": round(before, 3),
        "peak_rss_gb": round(peak_rss_gb(), 3),
    }


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m capjax.bench autoattack_memory", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="autoattack's batch_size (default: all)"
    )
    parser.add_argument("--eps", type=float, default=0.25, help="L-inf radius in 1/255")
    parser.add_argument("--short", action="store_true", help="a tenth of every step count")
    parser.add_argument("--tiled-max-pool", action="store_true")
    parser.add_argument("--model", default="maxpool_cnn")
    parser.add_argument("--json", default=None, help="also write the figures to this path")
    args = parser.parse_args(argv)
    result = measure(
        args.images, args.batch_size, args.eps, args.short, args.tiled_max_pool, args.model
    )
    for name, value in result.items():
        print(f"{name}: {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
