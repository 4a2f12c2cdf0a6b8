"""Sanity checks run with every evaluation: signs that the attacks, not the defense, failed.

They follow Athalye, Carlini & Wagner (2018), "Obfuscated gradients give a false sense of
security", and Carlini et al. (2019), "On evaluating adversarial robustness" (§ 5 checklist):
an iterative attack must beat a single step, a white-box attack must beat transfer and
score-based ones, accuracy must fall as the budget or the number of steps grows, unbounded
attacks must reach 100% success, randomised defenses need EOT, and gradients must not vanish.
Each check returns a `Flag` (or None); none of them changes a number.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from capjax import attack_specs
from capjax import data as data_lib
from capjax.core import mesh as mesh_lib
from capjax.eval.defense import Defense
from capjax.eval.suite import Row, RowResult, SuiteResult, parse_rows

ZERO_GRADIENT_THRESHOLD = 0.05
CHECKS = {
    "single_step_beats_iterative": "an iterative attack is at least as strong as FGSM",
    "weaker_access_beats_stronger": "transfer / gray-box / score-based attacks are no stronger "
    "than white-box / end-to-end ones",
    "accuracy_rises_with_budget": "accuracy does not rise with eps or with more steps",
    "unbounded_attack_fails": "unbounded attacks (CW, DDN) reach 100% success",
    "random_defense": "the defense is deterministic (or evaluated with EOT)",
    "zero_gradients": f"at most {ZERO_GRADIENT_THRESHOLD:.0%} of input gradients are zero or "
    "non-finite",
}
_GRADIENT_THREATS = ("whitebox", "end_to_end")
_WEAK_THREATS = ("transfer", "graybox", "score_based")


@dataclasses.dataclass(frozen=True)
class Flag:
    """A check that fired: its name (a key of `CHECKS`), why, and the rows involved."""

    name: str
    message: str
    rows: tuple[str, ...] = ()


@dataclasses.dataclass
class SanityReport:
    """The flags that fired, the checks that ran, and measured values (zero-gradient
    fraction, randomness)."""

    flags: list[Flag]
    checks: list[str]
    measured: dict[str, Any]

    def __iter__(self):
        return iter(self.flags)

    def __len__(self) -> int:
        return len(self.flags)

    def names(self) -> set[str]:
        return {f.name for f in self.flags}


def default_tolerance(a: float, b: float, n: int) -> float:
    """max(0.01, 2 standard errors of the difference of two accuracies on n examples)."""
    se = math.sqrt((a * (1 - a) + b * (1 - b)) / max(n, 1))
    return max(0.01, 2 * se)


def _tol(tolerance: float | None, a: float, b: float, n: int) -> float:
    return default_tolerance(a, b, n) if tolerance is None else tolerance


def _paired(a: RowResult, b: RowResult) -> tuple[float, float, int]:
    """Both rows' accuracies on the examples both ran on (rows may run on a prefix)."""
    n = min(a.num_examples, b.num_examples)
    return float(np.mean(a.correct[:n])), float(np.mean(b.correct[:n])), n


def _info(r: RowResult) -> tuple[str, str, str | None, float | None, dict[str, Any]]:
    spec = r.row.attack
    norm, eps = attack_specs.budget(spec)
    return r.row.threat, attack_specs.attack_name(spec), norm, eps, attack_specs.resolved(spec)


def _targeted(r: RowResult) -> bool:
    """Aimed at chosen classes: a weaker attack on accuracy, so not compared as if untargeted."""
    return attack_specs.target_mode(r.row.attack) is not None


def _eps255(eps: float | None) -> str:
    return "unbounded" if eps is None else f"{eps * 255:.3g}/255"


def check_single_step(result: SuiteResult, tolerance: float | None = None) -> Flag | None:
    """a. FGSM with lower accuracy than an iterative attack of the same threat, norm, eps."""
    hits = []
    rows = list(result.rows.values())
    for s, it in itertools.product(rows, rows):
        if attack_specs.kind(s.row.attack) != "single_step" or not s.row.is_attack:
            continue
        if attack_specs.kind(it.row.attack) != "iterative" or not it.row.is_attack:
            continue
        if _targeted(s) or _targeted(it):
            continue
        ts, _, ns, es, _ = _info(s)
        ti, _, ni, ei, _ = _info(it)
        if (ts, ns, es) != (ti, ni, ei) or es is None:
            continue
        acc_s, acc_it, n = _paired(s, it)
        if acc_s < acc_it - _tol(tolerance, acc_s, acc_it, n):
            hits.append((s, it))
    if not hits:
        return None
    details = "; ".join(
        f"{s.row.row_id} {s.accuracy:.1%} < {it.row.row_id} {it.accuracy:.1%} "
        f"({s.row.threat}, eps {_eps255(_info(s)[3])})"
        for s, it in hits
    )
    return Flag(
        "single_step_beats_iterative",
        f"A single-step attack beat an iterative one: {details}. Iterating can only help an "
        "attacker on a smooth loss, so this points to masked or obfuscated gradients, or a "
        "broken iterative attack (Athalye et al. 2018; Carlini et al. 2019).",
        tuple(dict.fromkeys(r.row.row_id for pair in hits for r in pair)),
    )


def check_weaker_access(result: SuiteResult, tolerance: float | None = None) -> Flag | None:
    """b. A transfer / graybox / score-based row below a whitebox or end-to-end row."""
    hits = []
    rows = list(result.rows.values())
    for weak, strong in itertools.product(rows, rows):
        if weak.row.threat not in _WEAK_THREATS or strong.row.threat not in _GRADIENT_THREATS:
            continue
        if strong.row.threat == "whitebox" and weak.row.threat != "transfer":
            continue  # attacking f alone may well be weaker than attacking a copy of the defense
        if not (weak.row.is_attack and strong.row.is_attack) or _targeted(strong):
            continue
        _, _, nw, ew, _ = _info(weak)
        _, _, ns, es, _ = _info(strong)
        if ew is None or (nw, ew) != (ns, es):
            continue
        acc_w, acc_s, n = _paired(weak, strong)
        if acc_w < acc_s - _tol(tolerance, acc_w, acc_s, n):
            hits.append((weak, strong))
    if not hits:
        return None
    details = "; ".join(
        f"{w.row.row_id} ({w.row.threat}) {w.accuracy:.1%} < {s.row.row_id} ({s.row.threat}) "
        f"{s.accuracy:.1%}"
        for w, s in hits
    )
    return Flag(
        "weaker_access_beats_stronger",
        f"An attacker with less access did better: {details}. A white-box or end-to-end "
        "attacker can run any transfer or score-based attack itself, so this means gradient "
        "masking or a weak white-box attack (Athalye et al. 2018; Carlini et al. 2019).",
        tuple(dict.fromkeys(r.row.row_id for pair in hits for r in pair)),
    )


def check_monotone(result: SuiteResult, tolerance: float | None = None) -> Flag | None:
    """c. Accuracy rising with eps (same threat, attack, steps) or with steps (same eps)."""
    hits, involved = [], []
    rows = [r for r in result.rows.values() if r.row.is_attack]
    for a, b in itertools.permutations(rows, 2):
        ta, na, norma, ea, oa = _info(a)
        tb, nb, normb, eb, ob = _info(b)
        if (ta, na, norma, oa.get("target")) != (tb, nb, normb, ob.get("target")):
            continue
        if ea is None or eb is None:
            continue
        acc_a, acc_b, n = _paired(a, b)
        if acc_b <= acc_a + _tol(tolerance, acc_a, acc_b, n):
            continue
        if oa.get("steps") == ob.get("steps") and eb > ea:
            what = f"eps {_eps255(eb)} vs {_eps255(ea)}"
        elif ea == eb and "steps" in oa and "steps" in ob and ob["steps"] > oa["steps"]:
            what = f"{ob['steps']} vs {oa['steps']} steps"
        else:
            continue
        hits.append(f"{b.row.row_id} {b.accuracy:.1%} > {a.row.row_id} {a.accuracy:.1%} ({what})")
        involved += [a.row.row_id, b.row.row_id]
    if not hits:
        return None
    return Flag(
        "accuracy_rises_with_budget",
        f"Accuracy rose with a larger budget: {'; '.join(hits)}. A larger ball contains the "
        "smaller one and more steps can keep the best iterate, so the attack is failing to "
        "optimise: a sign of gradient masking or a badly tuned attack (Carlini et al. 2019).",
        tuple(dict.fromkeys(involved)),
    )


def check_unbounded(result: SuiteResult) -> Flag | None:
    """d. CW / DDN under undefended or end_to_end below 100% success on clean-correct ones."""
    hits, involved = [], []
    for r in result.rows.values():
        name = attack_specs.attack_name(r.row.attack)
        if name not in ("cw", "ddn") or r.row.threat not in ("undefended", "end_to_end"):
            continue
        attacked = int(r.clean_correct.sum())
        survived = int(r.robust.sum())
        if attacked and survived:
            hits.append(
                f"{r.row.row_id}: {1 - survived / attacked:.1%} success "
                f"({survived} of {attacked} survived)"
            )
            involved.append(r.row.row_id)
    if not hits:
        return None
    return Flag(
        "unbounded_attack_fails",
        f"An unbounded attack did not reach 100% success: {'; '.join(hits)}. With no bound "
        "every input can be moved to another class, so the attack's optimisation failed, "
        "which hides the true robustness (Carlini et al. 2019, § 5.2).",
        tuple(involved),
    )


def _first_batch(images: np.ndarray, labels: np.ndarray, batch_size: int, mesh):
    batch = next(data_lib.eval_batches(images, labels, batch_size))
    return mesh_lib.shard_global_batch(batch, mesh)


def measure_randomness(
    defense: Defense, images: np.ndarray, labels: np.ndarray, key: jax.Array, *, batch_size, mesh
) -> dict[str, bool]:
    """Whether purify(x, k1) != purify(x, k2), or the defended logits differ, on one batch."""
    batch = _first_batch(images, labels, batch_size, mesh)
    k1, k2 = jax.random.split(key)

    @jax.jit
    def differ(batch):
        x = data_lib.to_float(batch["image"])
        m = batch["mask"][:, None]
        changed = defense.purified(x, k1) != defense.purified(x, k2)
        purify_differs = jnp.any(changed.reshape(len(x), -1) & m)
        logits_differ = jnp.any((defense.defended(k1)(x) != defense.defended(k2)(x)) & m)
        return purify_differs, logits_differ

    purify_differs, logits_differ = jax.device_get(differ(batch))
    return {"purify_differs": bool(purify_differs), "logits_differ": bool(logits_differ)}


def check_random(
    measured: Mapping[str, bool], rows: Mapping[str, Row] | None = None
) -> Flag | None:
    """e. A randomised defense: advise EOT, and say when no EOT row was run."""
    if not (measured.get("purify_differs") or measured.get("logits_differ")):
        return None
    rows = rows or {}
    eot_rows = [
        k
        for k, r in rows.items()
        if r.threat == "bpda_eot" or int(attack_specs.resolved(r.attack).get("eot_iter", 1)) > 1
    ]
    missing = (
        f" EOT rows here: {', '.join(eot_rows)}."
        if eot_rows
        else " No bpda_eot / EOT row exists in this evaluation: its attack numbers are "
        "optimistic for the defense."
    )
    return Flag(
        "random_defense",
        "random defense: evaluate with EOT (bpda_eot / eot). Two keys gave different "
        "purified images or logits; an attack against one fixed draw overfits it, and the "
        "expectation over the randomness must be attacked instead (Athalye et al. 2018)." + missing,
        tuple(eot_rows),
    )


def zero_gradient_fraction(
    defense: Defense,
    images: np.ndarray,
    labels: np.ndarray,
    key: jax.Array,
    *,
    batch_size: int,
    mesh,
    num_examples: int | None = None,
) -> float:
    """Fraction of examples whose input gradient of the cross-entropy of
    `defense.gradient_path(key)` is all zero or non-finite."""
    n = len(labels) if num_examples is None else min(num_examples, len(labels))

    @jax.jit
    def bad(batch):
        x = data_lib.to_float(batch["image"])
        y = batch["label"]

        def loss(z):
            logits = defense.gradient_path(key)(z).astype(jnp.float32)
            return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

        g = jax.grad(loss)(x).reshape(len(x), -1)
        zero = jnp.all(g == 0, axis=1) | ~jnp.all(jnp.isfinite(g), axis=1)
        return jnp.sum(zero & batch["mask"])

    count = 0
    for batch in data_lib.eval_batches(images[:n], labels[:n], batch_size):
        count += int(bad(mesh_lib.shard_global_batch(batch, mesh)))
    return count / n


def check_zero_gradients(fraction: float) -> Flag | None:
    """f. Too many zero (or non-finite) input gradients through the gradient path."""
    if fraction <= ZERO_GRADIENT_THRESHOLD:
        return None
    return Flag(
        "zero_gradients",
        f"{fraction:.1%} of examples have an all-zero or non-finite input gradient through "
        "the defense's gradient path. Gradient attacks learn nothing there (shattered "
        "gradients): their numbers are not evidence of robustness; use BPDA (threat bpda) or a "
        "differentiable approximation (Athalye et al. 2018).",
    )


def run_sanity_checks(
    suite_result: SuiteResult,
    rows: Mapping[str, Mapping[str, Any]] | None,
    defense: Defense,
    images: np.ndarray,
    labels: np.ndarray,
    key: jax.Array,
    *,
    tolerance: float | None = None,
    batch_size: int = 128,
    mesh=None,
    gradient_examples: int | None = 512,
) -> SanityReport:
    """Runs every check of `CHECKS`.

    Args:
      suite_result: the evaluation's per-example results.
      rows: the row dicts given to `run_suite` (None: those in suite_result).
      defense: the evaluated defense (randomness and gradient checks run it).
      images, labels: host uint8 (N, H, W, C) and (N,), as given to `run_suite`.
      key: for the two randomness draws and the gradient path.
      tolerance: accuracy margin before a comparison fires; None is
        max(0.01, 2 standard errors of the difference) per comparison.
      batch_size: global batch (multiple of the device count) for the measured checks.
      gradient_examples: examples whose gradients are measured (None: all).

    Returns:
      A `SanityReport`: flags (iterate it), checks run, and measured values.
    """
    mesh = mesh_lib.make_mesh() if mesh is None else mesh
    parsed = (
        parse_rows(rows) if rows is not None else {k: r.row for k, r in suite_result.rows.items()}
    )
    labels = np.asarray(labels, np.int32)
    random_key, gradient_key = jax.random.split(key)
    randomness = measure_randomness(
        defense, images, labels, random_key, batch_size=batch_size, mesh=mesh
    )
    fraction = zero_gradient_fraction(
        defense,
        images,
        labels,
        gradient_key,
        batch_size=batch_size,
        mesh=mesh,
        num_examples=gradient_examples,
    )
    flags = [
        check_single_step(suite_result, tolerance),
        check_weaker_access(suite_result, tolerance),
        check_monotone(suite_result, tolerance),
        check_unbounded(suite_result),
        check_random(randomness, parsed),
        check_zero_gradients(fraction),
    ]
    return SanityReport(
        flags=[f for f in flags if f is not None],
        checks=list(CHECKS),
        measured={"zero_gradient_fraction": fraction, **randomness},
    )
