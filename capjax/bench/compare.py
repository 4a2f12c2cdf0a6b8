"""`python -m capjax.bench compare`: capjax's PGD against other libraries' on the same model.

One attack, fixed: PGD-k, L-inf, eps 8/255, step 2/255, no random start, cross-entropy,
untargeted; float32, or with `--dtype bfloat16` bfloat16 compute (float32 parameters and
images: the zoo model's `dtype`, torch's `autocast`). It runs as

- capjax: `capjax.attacks.pgd(..., best_iterate=False)` on the capjax zoo model, jitted with
  the variables as arguments, on the batch split over all devices as capjax's own evaluation
  runs it (on CPU one device per core, `capjax.cpu_devices`). Like the peers it returns the
  last iterate. With several devices, "capjax (1 device)" times the same call on the whole
  batch on one device. "capjax (best iterate)" times `pgd`'s default, which returns per
  example the best iterate visited and so runs one forward pass more (scoring the last);
- torchattacks: `torchattacks.PGD(random_start=False)` on the model's PyTorch twin
  (`capjax.bench.torch_twins`: same layers, weights and batch statistics copied across,
  eval mode); the twin's logits are checked against the Flax model's before anything is
  timed, and the run stops if they differ by more than 1e-4 (relative to the logit scale).
  Where JAX runs on a GPU the twin runs on it too (this needs a CUDA build of torch), and
  each call waits for the GPU to finish;
- foolbox: foolbox 3's `LinfPGD(abs_stepsize, steps, random_start=False)` on the same JAX
  model through `foolbox.JAXModel` (bounds (0, 1)), the model jitted. XLA flags are
  process-wide, so in this process foolbox runs with capjax's CPU set-up
  (`capjax.cpu_devices`); on CPU a second row, "foolbox (stock XLA)", times it in a process
  of its own with JAX's defaults, as foolbox's users run it (one device, XLA_FLAGS without
  capjax's flag). That process runs after the others, not interleaved with them.

The model has random weights (`random_variables`), random BatchNorm statistics and CIFAR-10
input normalisation, so that every layer the twin mirrors is exercised, and a head bias that
centres its logits (see `build_model`); images are uniform noise and the labels are the
model's own clean predictions, so every image starts correctly classified. Throughput does
not depend on the weights.

Speed table: median wall time of `--repeats` calls per library after a warm-up call, the
libraries (and T_grad's bare gradient) timed in turn, one call each per round, so that load
from other jobs hits them alike; every output is waited for (foolbox's success flags are a
forward pass JAX may still be running when x_adv is ready). capjax/peer is the images/s
ratio (> 1: capjax faster); GFLOP/s is XLA's FLOP count of one forward + input gradient x
steps / wall time, the same useful work for every library. CPU s/call is the process's CPU
time per call (all threads) and its ratio the work each library burns: on a machine shared
with other jobs it moves much less with their load than wall time does, though threads that
spin while waiting for each other count as work (torch's OpenMP threads on a loaded machine:
compare `--torch-threads 1,2`).

Agreement table: success rate (misclassified by the Flax model), mean cross-entropy (the
attack's objective) and largest perturbation of each x_adv, and how close each x_adv is to
the "capjax" row's (the last iterate). The best iterate's success rate is never lower than
the last iterate's, by design; the peers' distances compare the step arithmetic. Sign steps
can differ where a gradient entry is near zero and the libraries round differently; such a
pixel moves by 2 * step_size, and later gradients then differ too, so the trajectories drift
apart a little.

The peers are optional (`pip install -e .[bench]`, PyTorch from its CPU index first); a
missing one is skipped with the line that installs it.

    python -m capjax.bench compare --model tiny --batch 128
    python -m capjax.bench compare --model tiny,resnet18 --batch 32 --steps 10 --repeats 3
    python -m capjax.bench compare --attack autoattack --model maxpool_cnn --batch 500

`--attack autoattack` times AutoAttack standard against torchattacks' instead
(`capjax.bench.compare_autoattack`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from capjax.attacks import pgd
from capjax.attacks._common import cross_entropy
from capjax.bench.attack_speed import gradient_baseline, peak_fraction
from capjax.bench.compare_autoattack import bench_autoattack
from capjax.bench.measure import (
    Timing,
    batch_partitions,
    compile_timed,
    describe_device,
    interleaved_timings,
    print_table,
    spread_over_devices,
)
from capjax.bench.user_models import bench_classifier
from capjax.core.errors import ConfigError
from capjax.cpu_devices import without_multithreaded_convolutions

EPS = 8 / 255
STEP_SIZE = 2 / 255
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
# Pixels closer than this count as the same step (float32 rounding is ~6e-8 at 1.0; a sign
# disagreement moves a pixel by 2 * step_size, about 1.6e-2).
SAME_PIXEL = 1e-6

PEERS = ("torchattacks", "foolbox")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Modules each peer needs, and how to install them.
PEER_MODULES = {"torchattacks": ("torch", "torchattacks"), "foolbox": ("foolbox", "eagerpy")}
INSTALL = {
    "torchattacks": (
        "pip install torch --index-url https://download.pytorch.org/whl/cpu && "
        "pip install torchattacks"
    ),
    "foolbox": "pip install foolbox",
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m capjax.bench compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default="tiny",
        help="comma-separated classifiers; torchattacks needs a twin: tiny, resnet18, "
        "resnet34, maxpool_cnn (a user-style CNN with nn.max_pool, capjax.bench.user_models)",
    )
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument(
        "--attack",
        default="pgd",
        choices=("pgd", "autoattack"),
        help="pgd: PGD-k at eps 8/255 (below); autoattack: AutoAttack standard at --eps "
        "(capjax.bench.compare_autoattack)",
    )
    parser.add_argument(
        "--eps",
        type=float,
        default=0.25,
        help="AutoAttack's L-inf radius in units of 1/255 (random models need a small one)",
    )
    parser.add_argument(
        "--skip-closure",
        action="store_true",
        help="autoattack: leave out the row of capjax called with a new closure per call "
        "(it compiles on every call)",
    )
    parser.add_argument(
        "--exact-max-pool",
        action="store_true",
        help="autoattack: add a row of capjax with flax_logits_fn(..., fast_max_pool=False), "
        "nn.max_pool's own select-and-scatter gradient (the default rewrites tiling pools "
        "as reshape + max)",
    )
    parser.add_argument(
        "--component",
        default=None,
        help="autoattack: time one component of AutoAttack standard alone in each library "
        "(apgd-ce, apgd-t, fab-t or square)",
    )
    parser.add_argument("--steps", type=int, default=10, help="PGD steps k")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per library")
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated peers to compare with, of {', '.join(PEERS)} ('' for none)",
    )
    parser.add_argument(
        "--torch-threads",
        default="",
        help="comma-separated torch.set_num_threads values, one torchattacks row each "
        "(default: torch's own, the core count); on a loaded machine OpenMP threads that wait "
        "for each other can make torch far slower than with 1 thread",
    )
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=tuple(DTYPES),
        help="compute dtype of every library (parameters and images stay float32)",
    )
    # Internal: time foolbox alone in this process, save its x_adv at PATH, print JSON.
    parser.add_argument("--foolbox-child", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.model.split(",") if m.strip()]
    args.peer_list = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(args.peer_list) - set(PEERS))
    if unknown:
        parser.error(f"unknown peers {unknown}; known: {', '.join(PEERS)}")
    try:
        args.torch_thread_list = [int(t) for t in args.torch_threads.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--torch-threads takes integers, got {args.torch_threads!r}")
    if args.batch < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--batch, --steps and --repeats must be >= 1")
    return args


def load_peer(peer: str) -> tuple[types.SimpleNamespace | None, str]:
    """(the peer's modules by name, "") or (None, a line saying why it is skipped and how to
    install it). Import errors of any kind count: a broken install is as good as none."""
    modules = {}
    for name in PEER_MODULES[peer]:
        try:
            modules[name] = importlib.import_module(name)
        except Exception as err:  # ImportError, or OSError from a broken binary wheel
            return None, (
                f"{peer}: skipped, cannot import {name} ({type(err).__name__}: {err}). "
                f"Install it with: {INSTALL[peer]}  (or pip install -e '.[bench]')"
            )
    return types.SimpleNamespace(**modules), ""


def random_variables(model, x: jax.Array, seed: int = 0) -> dict:
    """Flax variables for `model` at input x, drawn with numpy (no XLA compile, unlike init).

    Kernels are He-normal (fan-in); BatchNorm scales and running variances uniform in
    [0.5, 1.5], offsets, running means and biases normal with std 0.1. A fresh `init` has
    mean 0, var 1, scale 1, offset 0, under which a wrongly copied or transposed statistic
    would go unnoticed in the twin check; these values make every one of them matter.
    """
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = getattr(path[-1], "key", None)
        shape = leaf.shape
        if name == "kernel":
            value = rng.normal(0, np.sqrt(2 / np.prod(shape[:-1])), shape)
        elif name in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name in ("bias", "mean"):
            value = rng.normal(0, 0.1, shape)
        else:
            raise ConfigError(f"no bench initialisation for variable {jax.tree_util.keystr(path)}")
        return jnp.asarray(value, leaf.dtype)

    shapes = jax.eval_shape(model.init, jax.random.key(0), x[:1])
    return jax.tree_util.tree_map_with_path(draw, shapes)


def build_model(name: str, num_classes: int, batch: int, dtype: Any = jnp.float32):
    """(model, variables, x, y): random model computing in `dtype` (float32 variables), uniform
    images, the model's own predictions.

    A random network's logits are dominated by an offset common to all inputs (every image
    gets the same class, by a wide margin); the head bias is set to cancel the batch's mean
    logits so that the classes vary across images and PGD breaks some of them, which gives
    the success rates something to compare.
    """
    model = bench_classifier(
        name, num_classes=num_classes, mean=CIFAR10_MEAN, std=CIFAR10_STD, dtype=dtype
    )
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0, 1, (batch, 32, 32, 3)).astype(np.float32))
    variables = random_variables(model, x)
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    head = dict(variables["params"]["head"])
    head["bias"] = head["bias"] - jnp.mean(forward(variables, x), axis=0)
    variables = {**variables, "params": {**variables["params"], "head": head}}
    return model, variables, x, jnp.argmax(forward(variables, x), axis=-1).astype(jnp.int32)


def capjax_attack(model, steps: int, best_iterate: bool = False) -> Callable:
    """(variables, x, y) -> x_adv: the public `pgd`; by default its last iterate, which is
    what torchattacks and foolbox return."""

    def attack(v, x, y):
        logits_fn = lambda z: model.apply(v, z, train=False)
        return pgd(
            logits_fn,
            x,
            y,
            eps=EPS,
            step_size=STEP_SIZE,
            steps=steps,
            random_start=False,
            best_iterate=best_iterate,
        )

    return attack


def torchattacks_call(
    mods, model, variables, x, y, steps: int, dtype: str = "float32"
) -> tuple[Callable, str]:
    """(call() -> x_adv as an NCHW torch tensor, the twin check line).

    The twin is checked in float32 against the Flax model computing in float32, and raises
    SystemExit if their logits differ: timing a different function would be meaningless. With
    dtype "bfloat16" the attack then runs under `torch.autocast(bfloat16)`."""
    from capjax.bench.torch_twins import checked_twin

    torch = mods.torch
    twin, device, line = checked_twin(torch, model, variables, x, torch_device(torch))
    images = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()).to(device)
    labels = torch.from_numpy(np.asarray(y).astype(np.int64)).to(device)
    attack = mods.torchattacks.PGD(twin, eps=EPS, alpha=STEP_SIZE, steps=steps, random_start=False)
    attack.set_model_training_mode(model_training=False)

    def call():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            x_adv = attack(images, labels)
        if device == "cuda":
            torch.cuda.synchronize()  # CUDA runs asynchronously: time the work, not the launch
        return x_adv

    return call, f"{line}; torch runs on {device}"


def torch_device(torch) -> str:
    """The torch device: "cuda" where JAX runs on a GPU and this torch build sees one (the
    same GPU), else "cpu".

    A CPU-only torch beside a JAX GPU would time torchattacks on the CPU: that is said, since
    such a row does not compare the libraries."""
    if jax.default_backend() != "gpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    print("torchattacks: this torch build sees no GPU, so it runs on the CPU (not comparable)")
    return "cpu"


def with_torch_threads(torch, threads: int, call: Callable) -> Callable:
    """call, run with `torch.set_num_threads(threads)` (set inside, as rows alternate)."""

    def run():
        torch.set_num_threads(threads)
        return call()

    return run


def foolbox_call(mods, model, variables, x, y, steps: int) -> Callable:
    """call() -> x_adv (clipped) of foolbox's LinfPGD on the jitted JAX model."""
    forward = jax.jit(lambda v, z: model.apply(v, z, train=False))
    fmodel = mods.foolbox.JAXModel(lambda z: forward(variables, z), bounds=(0, 1))
    attack = mods.foolbox.attacks.LinfPGD(abs_stepsize=STEP_SIZE, steps=steps, random_start=False)
    # Wait for all three outputs: `success` is a forward pass that JAX may still be running
    # after `clipped` is ready, and it would otherwise be timed as part of the next call.
    return lambda: jax.block_until_ready(attack(fmodel, x, y, epsilons=EPS))[1]


STOCK_FOOLBOX = "foolbox (stock XLA)"
BEST = "capjax (best iterate)"


def stock_foolbox(name: str, args: argparse.Namespace) -> tuple[Timing, np.ndarray] | None:
    """(timing, x_adv) of foolbox on model `name` in a fresh process with JAX's default XLA
    set-up (`foolbox_child`), or None after printing why it could not run."""
    flags = without_multithreaded_convolutions(os.environ.get("XLA_FLAGS", ""))
    env = {**os.environ, "XLA_FLAGS": flags}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x_adv.npy")
        command = [sys.executable, "-m", "capjax.bench.compare", "--foolbox-child", path]
        command += ["--model", name, "--batch", str(args.batch), "--steps", str(args.steps)]
        command += ["--repeats", str(args.repeats), "--num-classes", str(args.num_classes)]
        command += ["--dtype", args.dtype]
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            why = (result.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"{STOCK_FOOLBOX}: skipped, its process failed ({why})")
            return None
        info = json.loads(result.stdout.strip().splitlines()[-1])
        print(
            f"{STOCK_FOOLBOX}: its own process, {info['devices']} {info['backend']} device(s), "
            f"XLA_FLAGS={flags!r}, timed after the rows above (not interleaved with them)"
        )
        return Timing(info["wall"], info["cpu"]), np.load(path)


def foolbox_child(args: argparse.Namespace) -> None:
    """`--foolbox-child PATH`: times foolbox on `args.model` with this process's XLA set-up
    (no `configure_cpu_devices`), saves its x_adv at PATH, prints one JSON line."""
    mods, why = load_peer("foolbox")
    if mods is None:
        raise SystemExit(why)
    model, variables, x, y = build_model(
        args.model, args.num_classes, args.batch, DTYPES[args.dtype]
    )
    call = foolbox_call(mods, model, variables, x, y, args.steps)
    timing = interleaved_timings({"foolbox": call}, args.repeats)["foolbox"]
    np.save(args.foolbox_child, to_nhwc(call()))
    info = {"wall": timing.wall, "cpu": timing.cpu, "devices": jax.device_count()}
    print(json.dumps({**info, "backend": jax.default_backend()}))


def to_nhwc(x_adv: Any) -> np.ndarray:
    """A peer's x_adv as a float32 NHWC numpy array (torch tensors are NCHW)."""
    if hasattr(x_adv, "detach"):
        return x_adv.detach().cpu().numpy().transpose(0, 2, 3, 1)
    return np.asarray(x_adv, np.float32)


def bench_model(name: str, args: argparse.Namespace, peers: dict[str, Any]) -> None:
    model, variables, x, y = build_model(name, args.num_classes, args.batch, DTYPES[args.dtype])
    k = args.steps
    print(f"\n## {name}: PGD-{k}, L-inf, eps 8/255, step 2/255, no random start")
    print(f"model={name} dtype={args.dtype} batch={args.batch} image=32x32x3 steps={k}")
    print(f"load average before: {_load()}")
    # capjax runs as its evaluation does: the batch split over all devices (on CPU, one per
    # core; see capjax.cpu_devices). The peers get the batch as a user hands it over; foolbox
    # cannot take a sharded one (its eager gradient fails on a mesh).
    xs, ys = spread_over_devices(x, y)
    parts = batch_partitions(xs)
    print(f"capjax: batch split over {parts} {jax.default_backend()} device(s)")
    baseline = gradient_baseline(model, variables, xs, ys, args.repeats)

    attack = capjax_attack(model, k)
    compiled, compile_s = compile_timed(attack, (variables, xs, ys))
    calls: dict[str, Callable[[], Any]] = {"capjax": lambda: compiled(variables, xs, ys)}
    versions = {"capjax": f"jax {jax.__version__}"}
    if parts > 1:
        single, _ = compile_timed(attack, (variables, x, y))
        calls["capjax (1 device)"] = lambda: single(variables, x, y)
    best, _ = compile_timed(capjax_attack(model, k, best_iterate=True), (variables, xs, ys))
    calls[BEST] = lambda: best(variables, xs, ys)
    for row in calls:
        versions[row] = versions["capjax"]
    for peer, mods in peers.items():
        try:
            if peer == "torchattacks":
                call, line = torchattacks_call(mods, model, variables, x, y, k, args.dtype)
                print(line)
                version = f"{mods.torchattacks.__version__}, torch {mods.torch.__version__}"
                threads = args.torch_thread_list or [mods.torch.get_num_threads()]
                for n in threads:
                    row = f"{peer} ({n} thread{'s' * (n > 1)})" if args.torch_thread_list else peer
                    calls[row], versions[row] = with_torch_threads(mods.torch, n, call), version
            else:
                call = foolbox_call(mods, model, variables, x, y, k)
                call()  # fails here, not mid-timing, if foolbox cannot run this jax
                calls[peer] = call
                versions[peer] = f"{mods.foolbox.__version__}, eagerpy {mods.eagerpy.__version__}"
        except SystemExit:
            raise
        except Exception as err:
            print(f"{peer}: skipped, it failed on this setup ({type(err).__name__}: {err})")
    timings = interleaved_timings({"T_grad": baseline.call, **calls}, args.repeats)
    x_adv = {peer: to_nhwc(call()) for peer, call in calls.items()}
    flags = os.environ.get("XLA_FLAGS", "")
    on_cpu = jax.default_backend() == "cpu"
    if on_cpu and "foolbox" in calls and without_multithreaded_convolutions(flags) != flags:
        stock = stock_foolbox(name, args)  # foolbox above ran with capjax's CPU flag
        if stock is not None:
            timings[STOCK_FOOLBOX], x_adv[STOCK_FOOLBOX] = stock
            versions[STOCK_FOOLBOX] = versions["foolbox"]
    t_grad = timings.pop("T_grad")
    baseline = dataclasses.replace(baseline, seconds=t_grad.wall)
    cpu_baseline = dataclasses.replace(baseline, seconds=t_grad.cpu)
    print(f"load average after: {_load()}")
    print(baseline.describe())

    x_last = x_adv["capjax"]
    forward = jax.jit(lambda v, z: model.apply(v, z, train=False))
    x_host, y_host = np.asarray(x), np.asarray(y)

    def scores(images: np.ndarray) -> dict[str, str]:
        logits = forward(variables, jnp.asarray(images))
        wrong = np.asarray(jnp.argmax(logits, axis=-1)) != y_host
        return {
            "success": f"{np.mean(wrong):.1%}",
            "mean CE": f"{float(jnp.mean(cross_entropy(logits, y))):.4f}",
            "max |x_adv - x| x 255": f"{np.max(np.abs(images - x_host)) * 255:.4f}",
        }

    speed, agreement = [], []
    mine = timings["capjax"]
    for peer, (t, cpu) in timings.items():
        speed.append(
            {
                "peer": peer,
                "version": versions[peer],
                "call (ms)": f"{t * 1e3:.0f}",
                "images/s": f"{args.batch / t:,.1f}",
                "capjax/peer": f"{t / mine.wall:.2f}",
                "GFLOP/s": baseline.gflops(t, k),
                **peak_fraction(baseline, t, k, args.dtype),
                "CPU s/call": f"{cpu:.2f}",
                "capjax/peer (CPU)": f"{cpu / mine.cpu:.2f}",
            }
        )
        diff = np.abs(x_adv[peer] - x_last)
        agreement.append(
            {
                "peer": peer,
                "returns": "best iterate" if peer == BEST else "last iterate",
                **scores(x_adv[peer]),
                "max |dx| vs capjax": f"{np.max(diff):.2e}",
                f"pixels within {SAME_PIXEL:g}": f"{np.mean(diff <= SAME_PIXEL):.4%}",
                "bitwise equal": f"{np.mean(diff == 0):.2%}",
            }
        )
    print(f"\ncapjax: compile {compile_s:.1f} s; loop overhead T_{k} / ({k} x T_grad):")
    for row in ("capjax", BEST):
        print(
            f"  {row}: {baseline.overhead(timings[row].wall, k):.2f} in wall time, "
            f"{cpu_baseline.overhead(timings[row].cpu, k):.2f} in CPU time"
        )
    print()
    print_table(speed)
    print()
    print_table(agreement)
    same = np.all(np.abs(x_adv[BEST] - x_last) == 0, axis=(1, 2, 3))
    print(f"capjax's best iterate was its last for {np.mean(same):.1%} of the images.")


def _load() -> str:
    try:
        return (
            " ".join(f"{v:.2f}" for v in os.getloadavg()) + f" (1/5/15 min, {os.cpu_count()} cpus)"
        )
    except OSError:
        return "n/a"


def run(argv: list[str]) -> None:
    args = parse(argv)
    if args.foolbox_child:
        foolbox_child(args)
        return
    peers = {}
    for peer in args.peer_list:
        mods, why = load_peer(peer)
        if mods is None:
            print(why)
        else:
            peers[peer] = mods
    print(describe_device())
    if "torchattacks" in peers:
        torch = peers["torchattacks"].torch
        if torch_device(torch) == "cuda":
            print(f"torch {torch.__version__}: {torch.cuda.get_device_name()}")
        else:
            print(f"torch {torch.__version__}: CPU, {torch.get_num_threads()} threads by default")
    for name in args.models:
        if args.attack == "autoattack":
            model, variables, x, y = build_model(
                name, args.num_classes, args.batch, DTYPES[args.dtype]
            )
            bench_autoattack(
                name,
                model,
                variables,
                x,
                y,
                args.eps,
                peers,
                torch_device,
                closure_row=not args.skip_closure,
                exact_row=args.exact_max_pool,
                component=args.component,
            )
        else:
            bench_model(name, args, peers)


if __name__ == "__main__":  # the --foolbox-child process: JAX's defaults, no capjax set-up
    run(sys.argv[1:])
