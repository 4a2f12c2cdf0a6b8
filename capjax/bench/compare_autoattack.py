"""The AutoAttack row of `python -m capjax.bench compare --attack autoattack`.

AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square; L-inf, eps `--eps`/255) run by
`capjax.attacks.autoattack` and by torchattacks on the model's PyTorch twin
(`capjax.bench.torch_twins`, checked against the Flax model before anything is timed, as
for PGD). Both get the same images and labels, as a user hands them over (capjax gathers the
still-robust examples between components, torchattacks' MultiAttack does the same).

torchattacks appears twice. `torchattacks.AutoAttack(version="standard")` (3.5.1) builds
APGD, APGD-T and FAB-T with their class defaults of 10 iterations, where fra31/auto-attack's
standard version, and capjax's, run 100: a tenth of the gradient steps, so it is a cheaper
and weaker attack. The like-for-like row, "torchattacks (100 steps)", is the same MultiAttack
built with 100 iterations (`torchattacks_standard`).

Each library is called twice on the same batch: the first call's wall time includes
capjax's tracing and compilation (torch has none, but its first call warms cuDNN), the second
is the steady state. capjax runs twice over: with `attacks.flax_logits_fn(model, variables)`,
which compiles once and differentiates tiling max pools as reshape + max
(`attacks.tiled_max_pool`), and with a new `lambda x: model.apply(variables, x)` per call,
which a user may write, which compiles again on every call and keeps `nn.max_pool`'s own
gradient. With `--exact-max-pool` a third capjax row runs
`flax_logits_fn(..., fast_max_pool=False)`. The robust accuracy of each x_adv is
read with the Flax model; its 95% interval, and the interval of the two libraries'
difference (from the images where they disagree, as the examples are shared), say whether
they agree within sampling error.

The model has random weights and the images are uniform noise (`compare.build_model`), so
the radius that leaves some images robust is far below 8/255: at `--eps 0.25` (0.25/255)
about half of the maxpool_cnn's images survive PGD-20. Use `--eps` to move it.

    python -m capjax.bench compare --attack autoattack --model maxpool_cnn --batch 500 --eps 0.25

`--component apgd-ce` (or `apgd-t`, `fab-t`, `square`) times that component of AutoAttack
standard alone instead, with the reference settings, in capjax
(`autoattack(..., version="custom", attacks_to_run=(component,))`) and in torchattacks (the
same attack of the 100-step MultiAttack); torchattacks' stock AutoAttack row is left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from capjax.attacks import autoattack, flax_logits_fn
from capjax.bench.measure import print_table
from capjax.bench.torch_twins import checked_twin

CLOSURE = "capjax (new closure per call)"
EXACT = "capjax (fast_max_pool=False)"


def robust_interval(robust: np.ndarray) -> str:
    """'p% ± h' with the normal-approximation 95% half-width."""
    p, n = float(np.mean(robust)), robust.size
    return f"{p:.1%} ± {1.96 * np.sqrt(p * (1 - p) / n):.1%}"


def difference_interval(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean(a) - mean(b), 95% half-width) for paired bool outcomes on the same examples."""
    n = a.size
    only_a, only_b = float(np.sum(a & ~b)), float(np.sum(b & ~a))
    diff = (only_a - only_b) / n
    var = max(only_a + only_b - (only_a - only_b) ** 2 / n, 0.0) / n**2
    return diff, 1.96 * float(np.sqrt(var))


def timed_twice(call: Callable[[], Any]) -> tuple[float, float, Any]:
    """(first call s, second call s, second call's output)."""
    times, out = [], None
    for _ in range(2):
        start = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - start)
    return times[0], times[1], out


# torchattacks 3.5.1's AutoAttack builds APGD, APGD-T and FAB-T with their class defaults,
# 10 iterations, where fra31/auto-attack's standard version (and capjax's) runs 100.
TORCHATTACKS_STOCK_STEPS = 10
REFERENCE_STEPS = 100
TORCH_100 = "torchattacks (100 steps)"
TORCH_STOCK = "torchattacks (its AutoAttack: 10 steps)"


COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")  # AutoAttack standard's, in order


def torchattacks_standard(
    mods, twin, eps: float, num_classes: int, steps: int | None, component: str | None = None
):
    """AutoAttack standard in torchattacks: `steps` None is `torchattacks.AutoAttack`
    itself; an int builds the same MultiAttack (APGD-CE, APGD-T, FAB-T, Square 5000
    queries, one run each, seed 0) with that many iterations, as fra31/auto-attack runs it.

    fra31's AutoAttack also builds its Square with `resc_schedule=False` (the window-size
    schedule of 10,000 queries, cut off at 5,000, so the square never gets below 3 pixels on
    CIFAR-10), as capjax's AutoAttack does; torchattacks' Square, and its AutoAttack, default
    to the schedule squeezed into 5,000 queries, whose last 2,000 queries try 2- and 1-pixel
    squares. Square alone on 100 images of the bench's max-pool CNN left 64% robust with the
    rescaled schedule and 73% with fra31's, in either library (docs/benchmarks.md), so the
    MultiAttack passes fra31's setting. `component` (one of `COMPONENTS`): that attack of the
    MultiAttack alone."""
    ta = mods.torchattacks
    if steps is None:
        return ta.AutoAttack(
            twin, norm="Linf", eps=eps, version="standard", n_classes=num_classes, seed=0
        )
    common = {"norm": "Linf", "eps": eps, "seed": 0, "n_restarts": 1}
    parts = [
        ta.APGD(twin, steps=steps, loss="ce", **common),
        ta.APGDT(twin, steps=steps, n_classes=num_classes, **common),
        ta.FAB(twin, steps=steps, multi_targeted=True, n_classes=num_classes, **common),
        ta.Square(twin, n_queries=5000, p_init=0.8, resc_schedule=False, **common),
    ]
    if component is not None:
        return parts[COMPONENTS.index(component)]
    return ta.MultiAttack(parts)


def torchattacks_autoattack(
    mods,
    model,
    variables,
    x,
    y,
    eps: float,
    device: str,
    steps: int | None = REFERENCE_STEPS,
    component: str | None = None,
) -> Callable:
    """call() -> x_adv (NHWC numpy) of torchattacks' AutoAttack standard (or its
    `component` alone) on the twin (`torchattacks_standard`)."""
    torch = mods.torch
    twin, device, line = checked_twin(torch, model, variables, x, device)
    print(f"{line}; torch runs on {device}")
    images = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()).to(device)
    labels = torch.from_numpy(np.asarray(y).astype(np.int64)).to(device)
    attack = torchattacks_standard(mods, twin, eps, model.num_classes, steps, component)

    def call():
        x_adv = attack(images, labels)
        if device == "cuda":
            torch.cuda.synchronize()
        return x_adv.detach().cpu().numpy().transpose(0, 2, 3, 1)

    return call


def bench_autoattack(
    name: str,
    model,
    variables,
    x,
    y,
    eps_255: float,
    peers: dict[str, Any],
    device: Callable[[Any], str],
    options: dict[str, dict[str, Any]] | None = None,
    closure_row: bool = True,
    exact_row: bool = False,
    component: str | None = None,
) -> None:
    """Times AutoAttack standard in capjax and in each available peer; prints two tables.

    `device(torch)` names the torch device; `options` shrinks capjax's components (tests
    only: the peers always run the standard version, so the rows then do not compare);
    `component` (one of `COMPONENTS`) runs that component alone in each library.
    """
    if component is not None and component not in COMPONENTS:
        raise SystemExit(f"--component: one of {', '.join(COMPONENTS)}, not {component!r}")
    eps = eps_255 / 255
    what = f"{component}, alone as in" if component else "AutoAttack"
    print(f"\n## {name}: {what} standard, L-inf, eps {eps_255:g}/255, {x.shape[0]} images")
    forward = jax.jit(lambda v, z: model.apply(v, z, train=False))
    key = jax.random.key(0)
    alone = {"options": options}
    if component is not None:
        alone.update(version="custom", attacks_to_run=(component,))

    def capjax_call(logits_fn_of: Callable[[], Any]) -> Callable[[], np.ndarray]:
        def call():
            x_adv = autoattack(logits_fn_of(), x, y, eps=eps, key=key, **alone)
            return np.asarray(jax.block_until_ready(x_adv))

        return call

    # As capjax's docs advise (compiled once), and as a closure made per call, which
    # compiles again on every call (see capjax.attacks.model_fn).
    calls = {"capjax": capjax_call(lambda: flax_logits_fn(model, variables, train=False))}
    if exact_row:
        calls[EXACT] = capjax_call(
            lambda: flax_logits_fn(model, variables, train=False, fast_max_pool=False)
        )
    if closure_row:
        calls[CLOSURE] = capjax_call(lambda: lambda z: model.apply(variables, z, train=False))
    versions = dict.fromkeys(calls, f"jax {jax.__version__}")
    if "torchattacks" in peers:
        mods = peers["torchattacks"]
        try:
            rows = ((TORCH_100, REFERENCE_STEPS),) + (
                ((TORCH_STOCK, None),) if not component else ()
            )
            for row, steps in rows:
                calls[row] = torchattacks_autoattack(
                    mods, model, variables, x, y, eps, device(mods.torch), steps, component
                )
                versions[row] = f"{mods.torchattacks.__version__}, torch {mods.torch.__version__}"
        except SystemExit:
            raise
        except Exception as err:
            print(f"torchattacks: skipped, it failed on this setup ({type(err).__name__}: {err})")
    if "foolbox" in peers:
        print("foolbox: skipped, it has no AutoAttack")

    y_host, x_host = np.asarray(y), np.asarray(x)
    results = {}
    for row, call in calls.items():
        print(f"[{row}] running AutoAttack twice ...", flush=True)
        first, second, x_adv = timed_twice(call)
        robust = np.asarray(jnp.argmax(forward(variables, jnp.asarray(x_adv)), -1)) == y_host
        results[row] = (first, second, x_adv, robust)

    mine = results["capjax"]
    speed, agreement = [], []
    for row, (first, second, x_adv, robust) in results.items():
        speed.append(
            {
                "peer": row,
                "version": versions[row],
                "first call (s, with compile)": f"{first:.1f}",
                "second call (s)": f"{second:.1f}",
                "peer/capjax (second)": f"{second / mine[1]:.2f}",
                "peer/capjax (first)": f"{first / mine[0]:.2f}",
            }
        )
        diff, half = difference_interval(robust, mine[3])
        agreement.append(
            {
                "peer": row,
                "robust accuracy (95%)": robust_interval(robust),
                "minus capjax (points, 95%)": f"{diff * 100:+.1f} ± {half * 100:.1f}",
                "same verdict": f"{np.mean(robust == mine[3]):.1%}",
                "max |x_adv - x| x 255": f"{np.max(np.abs(x_adv - x_host)) * 255:.4f}",
            }
        )
    clean = np.asarray(jnp.argmax(forward(variables, x), -1)) == y_host
    print(f"clean accuracy {np.mean(clean):.1%} (labels are the model's own predictions)")
    print()
    print_table(speed)
    print()
    print_table(agreement)
