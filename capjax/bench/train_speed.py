"""`python -m capjax.bench train`: classifier train-step throughput and compile time.

Times the exact step the classifier task runs (augmentation, forward, backward, SGD update,
donated state, sharded over all devices) on random data, so the figure is the training
loop's ceiling without input-pipeline effects.

    python -m capjax.bench train --model resnet18 --batch 256 --dtype bfloat16
    python -m capjax.bench train --model speedrun --batch 512 --kwargs '{"widths": [32, 64, 128]}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np

from capjax.bench.measure import describe_device, print_table, traced_flops
from capjax.config_defaults import classifier_config, data_config, model_config
from capjax.core import mesh as mesh_lib
from capjax.train.classifier import build_classifier, make_trainer


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m capjax.bench train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default="tiny,resnet18",
        help="comma-separated classifier names (default: tiny,resnet18)",
    )
    parser.add_argument("--batch", type=int, default=128, help="global batch size")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--kwargs",
        type=json.loads,
        default={},
        help="constructor options for every model, as JSON, e.g. '{\"widths\": [32, 64, 128]}'",
    )
    return parser.parse_args(argv)


def bench_model(
    name: str, batch: int, dtype: str, steps: int, repeats: int, kwargs: dict | None = None
) -> dict:
    config = _config(name, batch, dtype, kwargs or {})
    mesh = mesh_lib.make_mesh()
    mesh_lib.check_global_batch(batch, mesh, "--batch")
    trainer = make_trainer(config, steps_per_epoch=100, num_classes=10)
    rng = np.random.default_rng(0)
    host_batch = {
        "image": rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8),
        "label": rng.integers(0, 10, (batch,), dtype=np.int32),
    }
    batch_arrays = mesh_lib.shard_batch(host_batch, mesh)
    rep = mesh_lib.replicated(mesh)
    state = jax.jit(lambda k: trainer.init_state(k, (32, 32, 3)), out_shardings=rep)(
        jax.random.key(0)
    )
    key = jax.random.key(1)
    step_fn = jax.jit(
        trainer.train_step,
        in_shardings=(rep, mesh_lib.data_sharding(mesh), rep),
        out_shardings=(rep, rep),
        donate_argnums=0,
    )
    start = time.perf_counter()
    compiled = step_fn.lower(state, batch_arrays, key).compile()
    compile_s = time.perf_counter() - start
    state, metrics = compiled(state, batch_arrays, key)  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = compiled(state, batch_arrays, key)
        jax.block_until_ready((state, metrics))
        times.append((time.perf_counter() - start) / steps)
    step_s = statistics.median(times)
    flops = traced_flops(trainer.train_step, (state, batch_arrays, key))
    params = sum(x.size for x in jax.tree.leaves(state.params))
    return {
        "model": name,
        "params (M)": f"{params / 1e6:.2f}",
        "batch": batch,
        "dtype": dtype,
        "compile (s)": f"{compile_s:.1f}",
        "step (ms)": f"{step_s * 1e3:.1f}",
        "images/s": f"{batch / step_s:,.0f}",
        "GFLOP/image": f"{flops / batch / 1e9:.3f}" if flops else "n/a",
        "TFLOP/s": f"{flops / step_s / 1e12:.3f}" if flops else "n/a",
    }


def _config(name: str, batch: int, dtype: str, kwargs: dict):
    config = classifier_config(
        data=data_config("synthetic"), model=model_config(name, **kwargs), batch_size=batch
    )
    config.model.dtype = dtype
    build_classifier(config.model, 10)  # validates the name before anything compiles
    return config


def run(argv: list[str]) -> None:
    args = parse(argv)
    print(describe_device())
    rows = [
        bench_model(name.strip(), args.batch, args.dtype, args.steps, args.repeats, args.kwargs)
        for name in args.model.split(",")
        if name.strip()
    ]
    print_table(rows)
    print("FLOPs: the convolutions and matrix products of the whole step (forward, backward).")
