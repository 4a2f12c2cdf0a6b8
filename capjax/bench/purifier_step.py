"""The setup `bench cafd` and `bench capgan` share: a purifier task's jitted train step on a
random CIFAR-shaped batch, with a randomly initialised target (throughput does not depend on
the weights)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from capjax.core import mesh as mesh_lib
from capjax.train import classifier as classifier_lib


def step_parser(name: str, description: str, full: str, attack_steps: str):
    """The options `bench cafd` and `bench capgan` share (`full`: what --size=full builds;
    `attack_steps`: the help of --attack-steps); each adds its own."""
    parser = argparse.ArgumentParser(
        prog=f"python -m capjax.bench {name}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--size",
        choices=["smoke", "full"],
        default="smoke",
        help=f"smoke: the :smoke networks; full: {full}",
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--attack-steps", type=int, default=None, help=attack_steps)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    return parser


@dataclasses.dataclass
class PurifierStep:
    """A purifier trainer, its state, one sharded batch, a key and the jitted train step."""

    mesh: Any
    trainer: Any
    state: Any
    batch: dict[str, jax.Array]
    key: jax.Array
    step: Any  # jitted (state, batch, key) -> (state, metrics)


def purifier_step(
    config, make_trainer: Callable, batch_size: int, target: tuple | None = None, batch=None
) -> PurifierStep:
    """Builds `make_trainer(config, target, target_variables, steps_per_epoch=100)`'s step
    over all devices for a random uint8 batch of `batch_size` 32x32x3 images.

    `target`: (model, variables) of a trained target instead of a random one; `batch`: a
    {"image": uint8, "label": int32} batch of real images instead of random ones."""
    mesh = mesh_lib.make_mesh()
    mesh_lib.check_global_batch(batch_size, mesh, "--batch")
    if target is None:
        model = classifier_lib.build_classifier(config.target.model, 10)
        x0 = np.zeros((1, 32, 32, 3), np.float32)
        target = model, jax.jit(model.init)(jax.random.key(0), x0)
    target, target_variables = target
    trainer = make_trainer(config, target, target_variables, steps_per_epoch=100)
    rep, data = mesh_lib.replicated(mesh), mesh_lib.data_sharding(mesh)
    state = jax.jit(lambda k: trainer.init_state(k, (32, 32, 3)), out_shardings=rep)(
        jax.random.key(1)
    )
    if batch is None:
        rng = np.random.default_rng(0)
        batch = {
            "image": rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8),
            "label": rng.integers(0, 10, (batch_size,), dtype=np.int32),
        }
    batch = mesh_lib.shard_batch(batch, mesh)
    step = jax.jit(trainer.train_step, in_shardings=(rep, data, rep), out_shardings=(rep, rep))
    return PurifierStep(mesh, trainer, state, batch, jax.random.key(2), step)
