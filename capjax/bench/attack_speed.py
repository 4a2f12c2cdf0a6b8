"""`python -m capjax.bench attacks`: compile time, images/s and loop overhead of each attack.

Runs every attack named in `--attacks` on a randomly initialised classifier and random
images (throughput does not depend on the weights), labelled with the model's own clean
predictions so that every image starts correctly classified (attacks that stop early, such as
APGD-T's later targets once every image is broken, do their full work until then), jitted with
the model variables as arguments, as a user's evaluation would; with `--eager`, called outside
jit on `attacks.flax_logits_fn(model, variables)`, as a user's script and AutoAttack's
components call them (on XLA:CPU, APGD and FAB then drive their loops from the host,
`capjax.attacks._common.host_loop`). Per attack it prints:

- compile (s): `jax.jit(...).lower(...).compile()` wall time (with `--eager`: the first
  call's wall time minus a steady call's);
- images/s: batch / median wall time of `--repeats` steady-state calls (`block_until_ready`);
- grads: input-gradient evaluations per call (steps x restarts x binary-search rounds x
  target classes, as the call's options say);
- overhead: T_attack / (grads x T_grad), T_grad being one jitted forward + input gradient of
  the cross-entropy at the same batch; 1.0 means the attack costs exactly its gradients;
- GFLOP/s: XLA's FLOP count of that compiled gradient x grads / T_attack (the useful rate).

grads is read off the call's options, so it is exact for the gradient attacks here (FGSM,
PGD, MI-FGSM, TI-DIM, CW, DDN) but only an iteration count for score-based attacks (square,
SPSA: forward passes) and composites (AutoAttack); read their overhead with that in mind.

Attack names are functions of `capjax.attacks` submodules, optionally followed by a step
count: `pgd20` is `pgd(..., steps=20)`, `cw_l2100` is `cw_l2(..., steps=100)`. Options not
given take the bench table `SETTINGS` below, then eps = 8/255 (`--eps`), step_size = 2/255,
steps = 10. On random weights a small eps (`--eps 0.05`) leaves every image robust, so that
APGD-T and FAB-T run all their targets.

    python -m capjax.bench attacks --model tiny --batch 128
    python -m capjax.bench attacks --model resnet18 --dtype bfloat16 --attacks pgd10,apgd100
    python -m capjax.bench attacks --model maxpool_cnn --attacks apgd100 --tiled-max-pool
    python -m capjax.bench attacks --model maxpool_cnn --batch 100 --attacks apgd_t100 \
        --tiled-max-pool --eager --eps 0.05
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import pkgutil
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import capjax.attacks
from capjax.attacks._common import cross_entropy
from capjax.bench.measure import (
    bf16_peak_flops,
    compile_timed,
    describe_device,
    median_seconds,
    print_table,
    spread_over_devices,
    traced_flops,
)
from capjax.bench.user_models import TiledPoolModel, bench_classifier

DEFAULT_ATTACKS = "fgsm,pgd10,mifgsm10,cw_l2,ddn"
# Required options nobody set: the L-inf CIFAR threat model.
GENERIC = {"eps": 8 / 255, "step_size": 2 / 255, "steps": 10}
# Per-attack call settings of this bench. The minimum-norm attacks run shortened here so the
# default bench fits in a couple of CPU minutes; images/s of the full attack scale with grads.
SETTINGS: dict[str, dict[str, Any]] = {
    "cw_l2": {"steps": 20, "binary_search_steps": 2},
    "ddn": {"steps": 20},
    "stadv": {"steps": 20},
}
# Options whose product counts the gradient evaluations of one call.
COST_OPTIONS = ("steps", "restarts", "binary_search_steps", "num_target_classes")
MODEL_ARGS = ("logits_fn", "features_fn", "class_activation_fn")


def attack_functions() -> dict[str, Callable]:
    """Public functions of capjax.attacks submodules that take a model callable and x."""
    found = {}
    for info in pkgutil.iter_modules(capjax.attacks.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"capjax.attacks.{info.name}")
        for name, fn in vars(module).items():
            if name.startswith("_") or not inspect.isfunction(fn):
                continue
            if fn.__module__ != module.__name__:
                continue
            params = list(inspect.signature(fn).parameters)
            if len(params) >= 2 and params[0] in MODEL_ARGS and params[1] == "x":
                found[name] = fn
    return found


def parse_attack(spec: str, functions: dict[str, Callable]) -> tuple[str, dict[str, Any]]:
    """ "pgd20" -> ("pgd", {"steps": 20}); exact names win ("cw_l2" is not cw_l + 2 steps)."""
    if spec in functions:
        return spec, {}
    for cut in range(len(spec) - 1, 0, -1):
        base, digits = spec[:cut], spec[cut:]
        if digits.isdigit() and base in functions:
            return base, {"steps": int(digits)}
    raise SystemExit(f"unknown attack {spec!r}; known: {', '.join(sorted(functions))}")


def call_options(name: str, fn: Callable, overrides: dict[str, Any]) -> dict[str, Any]:
    """The keyword options the bench passes, and (separately) whether it needs a key."""
    signature = inspect.signature(fn)
    options = {**SETTINGS.get(name, {}), **overrides}
    for param in signature.parameters.values():
        if param.kind != param.KEYWORD_ONLY or param.name in options or param.name == "key":
            continue
        if param.default is param.empty:
            if param.name not in GENERIC:
                raise SystemExit(f"{name}: no bench value for its required option {param.name!r}")
            options[param.name] = GENERIC[param.name]
    return options


def grad_count(fn: Callable, options: dict[str, Any]) -> int:
    signature = inspect.signature(fn)
    count = 1
    for option in COST_OPTIONS:
        if option in options:
            count *= int(options[option])
        elif option in signature.parameters:
            default = signature.parameters[option].default
            if isinstance(default, int) and not isinstance(default, bool):
                count *= default
    return max(count, 1)


def model_callable(kind: str, model, variables) -> Callable:
    if kind == "logits_fn":
        return lambda x: model.apply(variables, x, train=False)
    if kind == "features_fn":
        return lambda x: model.apply(variables, x, train=False, return_features=True)[1]
    from capjax.attacks.feature import zoo_class_activation_fn

    return zoo_class_activation_fn(model, variables)


def timed(compiled: Callable, args: tuple, repeats: int) -> float:
    """Median steady-state seconds per call `compiled(*args)` (after one warm-up call)."""
    return median_seconds(lambda: compiled(*args), repeats)


@dataclasses.dataclass(frozen=True)
class GradientBaseline:
    """One jitted forward + input gradient of the cross-entropy: the unit of attack cost.

    Attributes:
      batch: images per call.
      seconds: T_grad, median steady-state wall time of one call.
      forward_flops, gradient_flops: XLA's FLOP counts of the compiled forward and forward +
        input gradient for the whole batch (None where the backend gives none).
      call: runs the compiled gradient once (to time it again beside something else).
    """

    batch: int
    seconds: float
    forward_flops: float | None
    gradient_flops: float | None
    call: Callable[[], Any] | None = dataclasses.field(default=None, repr=False, compare=False)

    def overhead(self, seconds: float, grads: int) -> float:
        """Loop overhead T_attack / (grads x T_grad); 1.0: the attack costs its gradients."""
        return seconds / (grads * self.seconds)

    def gflops(self, seconds: float, grads: int) -> str:
        """Useful GFLOP/s of a call doing `grads` gradients in `seconds`, formatted."""
        if not self.gradient_flops:
            return "n/a"
        return f"{self.gradient_flops * grads / seconds / 1e9:.1f}"

    def describe(self) -> str:
        """Lines giving FLOPs per image and T_grad, as the attack benchmarks print them."""
        lines = []
        if self.forward_flops and self.gradient_flops:
            lines.append(
                f"forward {self.forward_flops / self.batch / 1e6:.1f} MFLOP/image, forward+input "
                f"gradient {self.gradient_flops / self.batch / 1e6:.1f} MFLOP/image "
                f"({self.gradient_flops / self.forward_flops:.2f}x forward; the convolutions and "
                "matrix products of their jaxprs)"
            )
        lines.append(
            f"T_grad = {self.seconds * 1e3:.1f} ms ({self.batch / self.seconds:,.0f} images/s)"
        )
        return "\n".join(lines)


def gradient_baseline(
    model, variables, x: jax.Array, y: jax.Array, repeats: int
) -> GradientBaseline:
    """Compiles and times the bare forward + input gradient of `model` at batch x (eval mode)."""

    def forward(v, x):
        return model.apply(v, x, train=False)

    def loss_gradient(v, x, y):
        return jax.grad(lambda z: jnp.sum(cross_entropy(forward(v, z), y)))(x)

    grad, _ = compile_timed(loss_gradient, (variables, x, y))
    seconds = timed(grad, (variables, x, y), max(repeats, 5))
    call = lambda: grad(variables, x, y)
    return GradientBaseline(
        x.shape[0],
        seconds,
        traced_flops(forward, (variables, x)),
        traced_flops(loss_gradient, (variables, x, y)),
        call,
    )


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m capjax.bench attacks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="tiny", help="classifier registry name")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="model compute dtype (images stay float32)",
    )
    parser.add_argument(
        "--attacks",
        default=DEFAULT_ATTACKS,
        help=f"comma-separated attacks with optional step suffix (default: {DEFAULT_ATTACKS})",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--unroll",
        default=None,
        help="pass unroll=<int|true|false> to every attack (default: theirs)",
    )
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument(
        "--eps",
        type=float,
        default=None,
        help="every attack's eps in units of 1/255 (default: the bench's, 8/255)",
    )
    parser.add_argument(
        "--eager",
        action="store_true",
        help="call each attack outside jit, as a user's script and AutoAttack's components "
        "do, on `attacks.flax_logits_fn(model, variables)`; compile (s) is then the first "
        "call's wall time minus a steady call's (attacks on features or class activations "
        "stay jitted)",
    )
    parser.add_argument(
        "--tiled-max-pool",
        action="store_true",
        help="run the model through attacks.tiled_max_pool (its 2x2 max pools as reshape + "
        "max; the gradient baseline too)",
    )
    return parser.parse_args(argv)


def run(argv: list[str]) -> None:
    args = parse(argv)
    functions = attack_functions()
    specs = [parse_attack(s.strip(), functions) for s in args.attacks.split(",") if s.strip()]
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
    model = bench_classifier(args.model, num_classes=args.num_classes, dtype=dtype)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0, 1, (args.batch, 32, 32, 3)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, args.num_classes, args.batch).astype(np.int32))
    x, y = spread_over_devices(x, y)
    variables = jax.jit(model.init)(jax.random.key(0), x[:1])
    if args.tiled_max_pool:
        model = TiledPoolModel(model)
    # The model's own clean predictions: every image starts correctly classified.
    y = jnp.argmax(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x), -1)
    y = y.astype(jnp.int32)
    key = jax.random.key(1)
    unroll = None
    if args.unroll is not None:
        flags = {"true": True, "false": False}
        unroll = flags.get(args.unroll.lower(), None)
        unroll = int(args.unroll) if unroll is None else unroll

    baseline = gradient_baseline(model, variables, x, y, args.repeats)
    print(describe_device())
    if (peak := bf16_peak_flops()) is not None:
        print(f"dense bfloat16 peak of these devices: {peak / 1e12:,.0f} TFLOP/s (datasheet)")
    tiled = " (through attacks.tiled_max_pool)" if args.tiled_max_pool else ""
    mode = " called eagerly (--eager)" if args.eager else " jitted"
    eps = f" eps={args.eps:g}/255" if args.eps is not None else ""
    print(
        f"model={args.model}{tiled} dtype={args.dtype} batch={args.batch} image=32x32x3{eps}{mode}"
    )
    print(baseline.describe() + "\n")

    rows = []
    for name, overrides in specs:
        fn = functions[name]
        options = call_options(name, fn, overrides)
        params = inspect.signature(fn).parameters
        if unroll is not None and "unroll" in params:
            options["unroll"] = unroll
        if args.eps is not None and "eps" in params:
            options["eps"] = args.eps / 255
        k = grad_count(fn, options)
        start = time.perf_counter()
        rows.append(bench_attack(name, fn, options, variables, x, y, key, model, args, baseline, k))
        print(f"  {name}: measured in {time.perf_counter() - start:.0f} s", flush=True)
    print()
    print_table(rows)
    print(
        "overhead = T_attack / (grads x T_grad); GFLOP/s = forward+gradient FLOPs x grads "
        "/ T_attack."
    )


def bench_attack(name, fn, options, variables, x, y, key, model, args, baseline, k):
    params = list(inspect.signature(fn).parameters)
    kind = params[0]
    takes_y = len(params) > 2 and params[2] == "y"
    takes_key = "key" in params

    def attack(v, x, y, key):
        positional = (x, y) if takes_y else (x,)
        extra = {"key": key} if takes_key else {}
        out = fn(model_callable(kind, model, v), *positional, **options, **extra)
        return out[0] if isinstance(out, tuple) else out

    call_args = (variables, x, y, key)
    if args.eager and kind == "logits_fn":
        compile_s, t = eager_timings(fn, options, variables, x, y, key, model, args.repeats)
    else:
        compiled, compile_s = compile_timed(attack, call_args)
        t = timed(compiled, call_args, args.repeats)
    shown = {o: v for o, v in options.items() if o in COST_OPTIONS or o == "unroll"}
    return {
        "attack": name,
        "options": " ".join(f"{o}={v}" for o, v in shown.items()) or "-",
        "compile (s)": f"{compile_s:.1f}",
        "call (ms)": f"{t * 1e3:.0f}",
        "images/s": f"{args.batch / t:,.1f}",
        "grads": k,
        "overhead": f"{baseline.overhead(t, k):.2f}",
        "GFLOP/s": baseline.gflops(t, k),
        **peak_fraction(baseline, t, k, args.dtype),
    }


def eager_timings(fn, options, variables, x, y, key, model, repeats) -> tuple[float, float]:
    """(first call - steady call, steady call) seconds of `fn` called outside jit on the
    model as a `flax_logits_fn` Partial (through `tiled_max_pool` for a `TiledPoolModel` only),
    so that a later call reuses the programs the first one compiled."""
    from capjax.attacks import flax_logits_fn

    # The model as written (nn.max_pool's own gradient) unless --tiled-max-pool asks for the
    # rewrite that flax_logits_fn applies by default.
    tiled = isinstance(model, TiledPoolModel)
    logits_fn = flax_logits_fn(
        model.model if tiled else model, variables, train=False, fast_max_pool=tiled
    )
    params = inspect.signature(fn).parameters
    positional = (x, y) if "y" in params else (x,)
    extra = {"key": key} if "key" in params else {}

    def call():
        out = fn(logits_fn, *positional, **options, **extra)
        return jax.block_until_ready(out[0] if isinstance(out, tuple) else out)

    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    steady = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        call()
        steady.append(time.perf_counter() - start)
    t = float(np.median(steady))
    return first - t, t


def peak_fraction(baseline: GradientBaseline, seconds: float, grads: int, dtype: str) -> dict:
    """{"% bf16 peak": achieved / dense bf16 peak of the devices} for bfloat16 runs on a known
    accelerator (`measure.BF16_PEAK_TFLOPS`); {} otherwise. The FLOPs are `measure.traced_flops`
    of the forward + input gradient (about 2 forward passes) per gradient."""
    peak = bf16_peak_flops()
    if dtype != "bfloat16" or peak is None or not baseline.gradient_flops:
        return {}
    return {"% bf16 peak": f"{100 * baseline.gradient_flops * grads / seconds / peak:.1f}"}
