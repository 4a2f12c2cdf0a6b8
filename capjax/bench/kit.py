"""Every GPU figure in one command, for the few minutes a GPU is lent:

    python -m capjax.bench kit --out bench_kit            # on the GPU
    python -m capjax.bench kit --quick --out /tmp/kit     # the same steps at CPU-test sizes

Runs capjax's benchmarks one after another at the sizes issue #17 asks for, and after each
step (re)writes `<out>/kit.md` (each step's command, wall time and printed tables) and
`<out>/kit.json` ({step: {"command", "what", "seconds", "tables", "output", "error"}}: the
tables as lists of rows, exactly as printed), so a kit stopped at a time limit keeps the
steps it finished. A step that fails is recorded with its error, and the kit goes
on to the next step. The first step's tables on a GPU also name the device and its bf16
peak. `--only` picks steps by name.

Steps (full size; `--quick` shrinks each to seconds on a CPU):

- `pgd_throughput`: ResNet-18 PGD-20 in bfloat16 at batch 1024, in images/s and as a
  fraction of the device's peak.
- `pgd_vs_torchattacks`: the same PGD-20 against torchattacks' on the same device. The
  `bench` extra must be installed; without torch the step says it skipped the peer.
- `autoattack`: AutoAttack standard on 1,000 images of ResNet-18 at eps 0.25/255 (random
  weights: at that radius about a third of the images survive, so every component runs),
  first and second call, against torchattacks' AutoAttack on the same GPU (quick: capjax's
  APGD-T-2 on 8 images).
- `cafd_epoch`: the CAFD train step at full size with CAFA-10 inside, and the time of one
  CIFAR-10 epoch at that rate.
- `classifier_train`: the classifier's train-step throughput (ResNet-18, bf16, batch 1024).
- `feed`: host-gathered batches against data kept on the device.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import time
import traceback
from typing import Any

from capjax.bench import measure, run_benchmark


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    what: str
    full: list[str]  # `python -m capjax.bench` arguments at the size
    quick: list[str]  # the same benchmark at CPU-test size


STEPS = (
    Step(
        "pgd_throughput",
        "ResNet-18 PGD-20, bfloat16, batch 1024: images/s and fraction of the device's peak",
        ["attacks", "--model", "resnet18", "--batch", "1024", "--dtype", "bfloat16"]
        + ["--attacks", "pgd20"],
        ["attacks", "--model", "tiny", "--batch", "8", "--attacks", "pgd2", "--repeats", "1"],
    ),
    Step(
        "pgd_vs_torchattacks",
        "the same PGD-20 against torchattacks on the same device (needs the bench extra)",
        ["compare", "--model", "resnet18", "--batch", "1024", "--steps", "20"],
        ["compare", "--model", "tiny", "--batch", "8", "--steps", "2", "--repeats", "1"],
    ),
    Step(
        "autoattack",
        "AutoAttack standard on 1,000 images of ResNet-18, against torchattacks' AutoAttack",
        ["compare", "--attack", "autoattack", "--model", "resnet18", "--batch", "1000"]
        + ["--eps", "0.25", "--peers", "torchattacks", "--skip-closure"],
        ["attacks", "--model", "tiny", "--batch", "8", "--attacks", "apgd_t2", "--repeats", "1"],
    ),
    Step(
        "cafd_epoch",
        "the full-size CAFD train step with CAFA-10 inside, and one CIFAR-10 epoch at its rate",
        ["cafd", "--size", "full", "--batch", "300", "--attack-steps", "10"]
        + ["--dtype", "bfloat16", "--repeats", "3"],
        ["cafd", "--size", "smoke", "--batch", "8", "--attack-steps", "2", "--repeats", "1"],
    ),
    Step(
        "classifier_train",
        "classifier train-step throughput (ResNet-18, bfloat16, batch 1024)",
        ["train", "--model", "resnet18", "--batch", "1024", "--dtype", "bfloat16"],
        ["train", "--model", "tiny", "--batch", "8", "--steps", "2", "--repeats", "1"],
    ),
    Step(
        "feed",
        "input cost per step: host-gathered batches against data kept on the device",
        ["feed", "--batch", "128,1024"],
        ["feed", "--batch", "8", "--examples", "64", "--steps", "2"],
    ),
)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m capjax.bench kit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="bench_kit", help="folder for kit.md and kit.json")
    parser.add_argument("--quick", action="store_true", help="CPU-test sizes (seconds each)")
    parser.add_argument(
        "--only", default="", help="comma-separated step names (default: all steps)"
    )
    args = parser.parse_args(argv)
    names = [s.name for s in STEPS]
    args.steps = [s for s in args.only.split(",") if s.strip()] or names
    unknown = sorted(set(args.steps) - set(names))
    if unknown:
        parser.error(f"unknown step(s) {unknown}; choose from {names}")
    return args


def run_step(step: Step, quick: bool) -> dict[str, Any]:
    """Runs one benchmark in this process, capturing what it prints and its tables."""
    argv = step.quick if quick else step.full
    out = io.StringIO()
    start = time.perf_counter()
    error = None
    with measure.recording_tables() as tables, contextlib.redirect_stdout(out):
        try:
            run_benchmark(argv)
        except (Exception, SystemExit) as err:  # record it, go on with the next step
            error = "".join(traceback.format_exception_only(type(err), err)).strip()
    return {
        "what": step.what,
        "command": "python -m capjax.bench " + " ".join(argv),
        "seconds": round(time.perf_counter() - start, 1),
        "tables": tables,
        "output": out.getvalue(),
        "error": error,
    }


def markdown(results: dict[str, dict[str, Any]], device: str, quick: bool) -> str:
    lines = [
        "# capjax benchmark kit" + (" (--quick: CPU-test sizes)" if quick else ""),
        "",
        f"Device: {device}",
        "",
    ]
    for name, r in results.items():
        lines += [f"## {name}: {r['what']}", "", f"    {r['command']}", ""]
        lines += [
            f"Wall time {r['seconds']:.1f} s."
            + (f" **Failed**: {r['error']}" if r["error"] else ""),
            "",
        ]
        lines += ["```", r["output"].rstrip(), "```", ""]
    return "\n".join(lines)


def write(out: str, results: dict[str, dict[str, Any]], device: str, quick: bool) -> None:
    """Writes kit.json and kit.md for the steps done so far."""
    os.makedirs(out, exist_ok=True)
    payload = {"device": device, "quick": quick, "steps": results}
    with open(os.path.join(out, "kit.json"), "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    with open(os.path.join(out, "kit.md"), "w", encoding="utf-8") as f:
        f.write(markdown(results, device, quick))


def run(argv: list[str]) -> None:
    args = parse(argv)
    by_name = {s.name: s for s in STEPS}
    device = measure.describe_device()
    results = {}
    for name in args.steps:
        print(f"[kit] {name} ...", flush=True)
        results[name] = run_step(by_name[name], args.quick)
        status = "failed" if results[name]["error"] else "done"
        print(f"[kit] {name} {status} in {results[name]['seconds']:.1f} s", flush=True)
        # After every step, so that a kit stopped at a lease's time limit keeps what it did.
        write(args.out, results, device, args.quick)
    print(f"[kit] wrote {args.out}/kit.md and kit.json")
