"""`python -m capjax.bench cafd`: CAFD train-step time, split into CAFA and the two updates.

Times the exact jitted step of the CAFD task (CAFA against the frozen target, one
discriminator update, one denoiser update) on random data with a randomly initialised target
(throughput does not depend on the weights), and the CAFA attack alone; the updates' share is
the difference.

    python -m capjax.bench cafd --size smoke --batch 32
    python -m capjax.bench cafd --size full --batch 300 --dtype bfloat16   # on a GPU
"""

from __future__ import annotations

import argparse
import time

import jax

from capjax.bench.measure import describe_device, median_seconds, print_table, traced_flops
from capjax.bench.purifier_step import purifier_step, step_parser
from capjax.config_defaults import cafd_config, shrink_cafd_to_smoke
from capjax.core import mesh as mesh_lib
from capjax.tasks import cafd_task as cafd_task

CIFAR10_TRAIN = 50_000


def parse(argv: list[str]) -> argparse.Namespace:
    return step_parser(
        "cafd",
        __doc__,
        full="VGG-19 target and full DUNET",
        attack_steps="CAFA iterations (default: 5 for smoke, 100 for full)",
    ).parse_args(argv)


def run(argv: list[str]) -> None:
    args = parse(argv)
    config = cafd_config(data_name="cifar10", lambda_caf=1e3)
    if args.size == "smoke":
        shrink_cafd_to_smoke(config)
        config.cafd.attack.steps = 5
    if args.attack_steps is not None:
        config.cafd.attack.steps = args.attack_steps
    config.cafd.dtype = args.dtype
    config.target.model.dtype = args.dtype

    bench = purifier_step(config, cafd_task.make_trainer, args.batch)
    mesh, trainer, state, batch = bench.mesh, bench.trainer, bench.state, bench.batch
    key, step = bench.key, bench.step
    rep, data = mesh_lib.replicated(mesh), mesh_lib.data_sharding(mesh)
    attack = jax.jit(
        lambda variables, images, k: trainer.craft(variables, images.astype("float32") / 255, k),
        in_shardings=(rep, data, rep),
        out_shardings=data,
    )
    start = time.perf_counter()
    flops = traced_flops(step, (state, batch, key))
    step.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - start
    step_s = median_seconds(lambda: step(state, batch, key), args.repeats)
    attack_s = median_seconds(
        lambda: attack(state.target_variables, batch["image"], key), args.repeats
    )
    print(describe_device())
    print(
        f"CAFD step, size={args.size}, target={config.target.model.name}, "
        f"CAFA-{config.cafd.attack.steps}, dtype={args.dtype}, batch={args.batch}"
    )
    print_table(
        [
            {
                "part": "whole step",
                "ms": f"{step_s * 1e3:.1f}",
                "images/s": f"{args.batch / step_s:,.1f}",
                "compile (s)": f"{compile_s:.1f}",
            },
            {
                "part": "CAFA attack",
                "ms": f"{attack_s * 1e3:.1f}",
                "images/s": f"{args.batch / attack_s:,.1f}",
                "compile (s)": "",
            },
            {
                "part": "D + C updates (difference)",
                "ms": f"{(step_s - attack_s) * 1e3:.1f}",
                "images/s": "",
                "compile (s)": "",
            },
        ]
    )
    if flops:
        print(
            f"whole step: {flops / args.batch / 1e9:.2f} GFLOP/image (convolutions and matrix "
            "products), "
            f"{flops / step_s / 1e12:.3f} TFLOP/s achieved"
        )
    print(
        f"one CIFAR-10 epoch ({CIFAR10_TRAIN:,} images) at this rate: "
        f"{CIFAR10_TRAIN / args.batch * step_s:.1f} s"
    )
