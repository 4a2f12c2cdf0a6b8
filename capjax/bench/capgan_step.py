"""`python -m capjax.bench capgan`: CAP-GAN train-step time, split by part.

Times the exact jitted step of the CAP-GAN task (domain A by PGD against the frozen target,
one update of both discriminators, one update of both generators) on random data with a
randomly initialised target (throughput does not depend on the weights), and each part
alone: the domain attack, the discriminator update (loss, gradient, optimizer) and the
generator update. It also times one upsampling stage of the generator (nearest resize +
3x3 conv, as capjax builds it) against a plain 3x3 convolution of the same output size, and
against a stride-2 transposed convolution, the layer capjax avoids.

    python -m capjax.bench capgan --size smoke --batch 32
    python -m capjax.bench capgan --size full --batch 128 --dtype bfloat16   # on a GPU

With `--term-gradients` it times nothing and prints instead the L2 norm of each weighted
generator term's gradient (`CAPGANTrainer.term_gradients`) at initialisation, under the
weights of `--weights` (the size's config, the CPU configs' or the paper's), to show which
term steers the generators:

    python -m capjax.bench capgan --size full --term-gradients --weights paper

`--target-workdir DIR` takes the target from a finished classifier run instead of a random
one, and the first `--batch` training images of the data that run's config names: a random
target's softmax is nearly uniform, which shrinks the semantic term.

    python -m capjax.bench capgan --size full --term-gradients --weights paper \
        --target-workdir runs/cifar_cpu/classifier
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from capjax import data as data_lib
from capjax.bench.measure import describe_device, median_seconds, print_table
from capjax.bench.purifier_step import purifier_step, step_parser
from capjax.config_defaults import capgan_config, cpu_sized_capgan_loss, shrink_capgan_to_smoke
from capjax.tasks import capgan_task as capgan_task
from capjax.tasks.load_defense import read_run_config
from capjax.train import classifier as classifier_lib


def parse(argv: list[str]) -> argparse.Namespace:
    parser = step_parser(
        "capgan",
        __doc__,
        full="ResNet-18 target, 64-wide U-GAT-IT networks",
        attack_steps="domain PGD steps",
    )
    parser.add_argument(
        "--term-gradients",
        action="store_true",
        help="print each weighted generator term's gradient norm instead of timings",
    )
    parser.add_argument(
        "--weights",
        choices=["config", "cpu", "paper"],
        default="config",
        help="the CAM and semantic weights: the size's config (smoke: cpu), capjax's CPU "
        "configs' (CAM 1, semantic 10) or the paper's (CAM 1000, semantic 1)",
    )
    parser.add_argument(
        "--target-workdir",
        default=None,
        help="a finished classifier run: its trained model as the target, and the first "
        "--batch training images of its data (default: a random target on random images)",
    )
    return parser.parse_args(argv)


def trained_target(workdir: str, batch_size: int):
    """(run config, (model, variables), batch) of the finished classifier run in `workdir`:
    its first `batch_size` training images, read as its config names them."""
    run = read_run_config(workdir)
    dataset = data_lib.load_from_config(run, workdir)
    target = classifier_lib.restore_classifier(
        run, workdir, dataset.num_classes, dataset.image_shape
    )
    batch = {
        "image": np.asarray(dataset.train_images[:batch_size]),
        "label": np.asarray(dataset.train_labels[:batch_size], np.int32),
    }
    return run, target, batch


def term_gradient_rows(trainer, state, x, x_adv) -> list[dict]:
    """One row per generator term: its factor in L_T and its gradient's L2 norm."""
    norms = jax.jit(
        lambda s, x, x_adv: {
            k: optax.global_norm(g) for k, g in trainer.term_gradients(s, x, x_adv).items()
        }
    )(state, x, x_adv)
    coefficients = trainer.term_coefficients()
    return [
        {"term": name, "factor in L_T": f"{c:g}", "gradient L2 norm": f"{float(norms[name]):.4g}"}
        for name, c in coefficients.items()
    ]


def upsampling_rows(batch: int, width: int, size: int, dtype, repeats: int) -> list[dict]:
    """Forward + backward of resize+conv, a plain conv, and a transposed conv, same output."""
    x_low = jax.random.normal(jax.random.key(0), (batch, size, size, 2 * width), dtype)
    x_high = jax.random.normal(jax.random.key(1), (batch, 2 * size, 2 * size, 2 * width), dtype)
    conv = nn.Conv(width, (3, 3), padding="SAME", dtype=dtype)
    transposed = nn.ConvTranspose(width, (4, 4), strides=(2, 2), padding="SAME", dtype=dtype)

    def resize_conv(params, x):
        n, h, w, c = x.shape
        return conv.apply(params, jax.image.resize(x, (n, 2 * h, 2 * w, c), "nearest"))

    layers = {
        "resize x2 + conv3x3": (conv, resize_conv, x_low),
        "conv3x3 at the output size": (conv, conv.apply, x_high),
        "transposed conv4x4 stride 2": (transposed, transposed.apply, x_low),
    }
    rows = []
    for name, (module, apply, x) in layers.items():
        params = module.init(jax.random.key(2), x if module is not conv else x_high)
        grad = jax.jit(jax.grad(lambda p, x, f=apply: jnp.sum(f(p, x).astype(jnp.float32) ** 2)))
        seconds = median_seconds(lambda g=grad, p=params, x=x: g(p, x), repeats)
        rows.append(
            {
                "part": f"upsampling: {name}",
                "ms": f"{seconds * 1e3:.2f}",
                "images/s": f"{batch / seconds:,.0f}",
                "compile (s)": "",
            }
        )
    return rows


def run(argv: list[str]) -> None:
    args = parse(argv)
    config = capgan_config(data_name="cifar10")
    if args.size == "smoke":
        shrink_capgan_to_smoke(config)
        config.capgan.domain.attack.steps = 5
    if args.attack_steps is not None:
        config.capgan.domain.attack.steps = args.attack_steps
    config.capgan.dtype = args.dtype
    config.target.model.dtype = args.dtype
    if args.weights == "cpu":
        cpu_sized_capgan_loss(config.capgan.loss)
    elif args.weights == "paper":
        config.capgan.loss.update({"cam": 1000.0, "semantic": 1.0})

    target = batch = None
    if args.target_workdir:
        run, target, batch = trained_target(args.target_workdir, args.batch)
        config.target.model = run.model
    bench = purifier_step(config, capgan_task.make_trainer, args.batch, target, batch)
    trainer, state, batch = bench.trainer, bench.state, bench.batch
    key, step = bench.key, bench.step
    if args.term_gradients:
        x = batch["image"].astype(jnp.float32) / 255
        x_adv = jax.jit(trainer.craft)(state.target_variables, x, batch["label"], key)
        w = trainer.weights
        print(describe_device())
        target_of = (
            f"target {config.target.model.name} from {args.target_workdir} on its first "
            f"{args.batch} training images"
            if args.target_workdir
            else "random target on random images"
        )
        print(
            f"CAP-GAN generator terms at initialisation, size={args.size}, batch={args.batch}, "
            f"{target_of}: CAM {w.cam:g}, semantic {w.semantic:g}, alpha {w.alpha:g} "
            f"({w.combine})"
        )
        print_table(term_gradient_rows(trainer, state, x, x_adv))
        return
    start = time.perf_counter()
    step.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - start
    step_s = median_seconds(lambda: step(state, batch, key), args.repeats)

    def x_of(b):
        return b["image"].astype(jnp.float32) / 255

    attack = jax.jit(lambda s, b, k: trainer.craft(s.target_variables, x_of(b), b["label"], k))
    x_adv = attack(state, batch, key)

    def d_update(s, x, x_adv):
        grads = jax.grad(trainer.discriminator_losses, has_aux=True)(
            s.discriminator_params, s.discriminator_stats, s.generator_params, x, x_adv
        )[0]
        updates, _ = trainer.discriminator_tx.update(
            grads, s.discriminator_opt_state, s.discriminator_params
        )
        return optax.apply_updates(s.discriminator_params, updates)

    def g_update(s, x, x_adv):
        grads = jax.grad(trainer.generator_losses, has_aux=True)(
            s.generator_params,
            s.discriminator_params,
            s.discriminator_stats,
            s.target_variables,
            x,
            x_adv,
        )[0]
        updates, _ = trainer.generator_tx.update(grads, s.generator_opt_state, s.generator_params)
        return optax.apply_updates(s.generator_params, updates)

    parts = {
        "domain A: PGD against f": (attack, (state, batch, key)),
        "discriminators: loss + grad + update": (jax.jit(d_update), (state, x_of(batch), x_adv)),
        "generators: loss + grad + update": (jax.jit(g_update), (state, x_of(batch), x_adv)),
    }
    rows = [
        {
            "part": "whole step",
            "ms": f"{step_s * 1e3:.1f}",
            "images/s": f"{args.batch / step_s:,.1f}",
            "compile (s)": f"{compile_s:.1f}",
        }
    ]
    for name, (fn, fn_args) in parts.items():
        seconds = median_seconds(lambda f=fn, a=fn_args: f(*a), args.repeats)
        rows.append(
            {
                "part": name,
                "ms": f"{seconds * 1e3:.1f}",
                "images/s": f"{args.batch / seconds:,.1f}",
                "compile (s)": "",
            }
        )
    g = config.capgan.generator
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    rows += upsampling_rows(args.batch, g.base_width, 8, dtype, args.repeats)
    print(describe_device())
    print(
        f"CAP-GAN step, size={args.size}, target={config.target.model.name}, generator width "
        f"{g.base_width} x{g.num_blocks} blocks (stem {g.stem_kernel}x{g.stem_kernel}), "
        f"discriminator scales {list(config.capgan.discriminator.scales)}, "
        f"domain PGD-{config.capgan.domain.attack.steps}, dtype={args.dtype}, batch={args.batch}"
    )
    print_table(rows)
