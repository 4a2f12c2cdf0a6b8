"""The robustness evaluation suite: every (threat model, attack) row, per example, resumable.

    rows = {
        "clean": {"threat": "clean", "group": "Table 2"},
        "pgd40": {"threat": "whitebox", "group": "Table 2", "paper": 0.87,
                  "attack": {"name": "pgd", "eps": 8/255, "step_size": 2/255, "steps": 40}},
        "pgd40 bpda": {"threat": "bpda", "attack": {...}},
        "aa after pgd40": {"threat": "whitebox", "attack": {"name": "autoattack", ...},
                           "after": "pgd40"},
    }
    result = run_suite(rows, defense=defense, images=x_uint8, labels=y, batch_size=256,
                       workdir=workdir, seed=0)
    result.accuracy["pgd40"]; result.ensemble(["pgd40", "pgd40 bpda"])

Each row runs over the images in padded, data-sharded batches (one compilation per row) and
keeps per example whether the scored model classifies x_adv correctly (`correct`) and x itself
(`clean_correct`). Keys are `fold_in(fold_in(key(seed), crc32(attack spec)), batch index)`
(see `row_key`), so a row's numbers depend only on its own settings and a resumed run
reproduces them exactly.
A row with `"after": <earlier row id>` attacks only the examples that row left robust and
keeps that row's outcome for the rest: its accuracy is the per-example worst case of both
attacks, at the cost of attacking the survivors only (AutoAttack after PGD, as AutoAttack's
own components run one after another).
Finished rows are stored in `workdir/rows/<row id>.npz` + `.json` and loaded on the next run
when their settings match.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import time
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from capjax import attack_specs
from capjax import data as data_lib
from capjax.core import mesh as mesh_lib
from capjax.core.errors import ConfigError
from capjax.core.jsonio import to_jsonable, write_json
from capjax.eval import threats
from capjax.eval.defense import Defense

ROW_FIELDS = ("threat", "attack", "group", "paper", "label", "num_examples", "after")
DEFAULT_EOT_SAMPLES = 8
_NONE = {"name": "none"}


@dataclasses.dataclass(frozen=True)
class Row:
    """One validated row: a threat model and an attack spec, and how to report it."""

    row_id: str
    threat: str
    attack: dict[str, Any]
    group: str | None = None
    paper: float | None = None
    label: str | None = None
    num_examples: int | None = None
    after: str | None = None

    @property
    def description(self) -> str:
        return self.label or attack_specs.describe(self.attack)

    @property
    def is_attack(self) -> bool:
        return self.threat != "clean" and attack_specs.kind(self.attack) != "none"


def parse_rows(
    rows: Mapping[str, Mapping[str, Any]],
    defense: Defense | None = None,
    surrogate: Defense | None = None,
) -> dict[str, Row]:
    """Validates config rows (all of them, before anything runs) into `Row`s.

    Each row is {"threat": one of `threats.THREATS`, "attack": attack spec (omit for
    "clean"), "group": table name, "paper": the paper's accuracy in [0, 1] (or -1 / None for
    none), "label": column header (default `describe(attack)`), "num_examples": run this
    row on the first n examples only (an expensive attack on a subset; default: all)}.

    Raises:
      ValueError: unknown field, threat, attack or option; missing surrogate; a gradient
        attack under "score_based"; row ids whose file names would collide; an "after" that
        is not an earlier attack row of the same threat model.
    """
    parsed, files = {}, {}
    for row_id, row in rows.items():
        row = attack_specs.plain(row)
        if not isinstance(row, dict):
            raise ConfigError(f"Row {row_id!r} must be a dict, got {row!r}.")
        unknown = sorted(set(row) - set(ROW_FIELDS))
        if unknown:
            raise ConfigError(f"Row {row_id!r}: unknown field(s) {unknown}; use {ROW_FIELDS}.")
        if "threat" not in row:
            raise ConfigError(f"Row {row_id!r} needs a 'threat', one of {threats.THREATS}.")
        threat = row["threat"]
        attack = dict(row.get("attack") or _NONE)
        if threat == "clean":
            attack = dict(_NONE)
        try:
            attack_specs.options(attack)
            if defense is not None:
                threats.check_threat(threat, attack, defense, surrogate)
            elif threat not in threats.THREATS:
                raise ConfigError(f"Unknown threat {threat!r}; choose one of {threats.THREATS}.")
        except ValueError as e:
            raise ConfigError(f"Row {row_id!r}: {e}") from None
        paper = row.get("paper")
        paper = None if paper is None or float(paper) < 0 else float(paper)
        count = row.get("num_examples")
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 1
        ):
            raise ConfigError(
                f"Row {row_id!r}: num_examples must be a positive int, got {count!r}."
            )
        after = row.get("after")
        if after is not None:
            base = parsed.get(after) if isinstance(after, str) else None
            attacks = threat != "clean" and attack_specs.kind(attack) != "none"
            if base is None or not base.is_attack or base.threat != threat or not attacks:
                raise ConfigError(
                    f"Row {row_id!r}: 'after' must name an earlier attack row of threat "
                    f"{threat!r} (this row attacking too), got {after!r}."
                )
        file = row_file_stem(row_id)
        if file in files:
            raise ConfigError(f"Rows {files[file]!r} and {row_id!r} map to the same file {file}.")
        files[file] = row_id
        parsed[row_id] = Row(
            str(row_id), threat, attack, row.get("group"), paper, row.get("label"), count, after
        )
    return parsed


def row_file_stem(row_id: str) -> str:
    """The file name (without extension) of a row's results: unsafe characters become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(row_id)).strip("._") or "row"


@dataclasses.dataclass
class RowResult:
    """Per-example outcome of one row.

    Attributes:
      correct: (N,) bool, the scored model classifies x_adv correctly.
      clean_correct: (N,) bool, the scored model classifies the clean x correctly.
      seconds: wall time of the computation (of the original run for loaded rows).
      loaded: True when read back from the workdir instead of computed.
    """

    row: Row
    correct: np.ndarray
    clean_correct: np.ndarray
    seconds: float
    loaded: bool = False

    @property
    def accuracy(self) -> float:
        """Accuracy on x_adv, as the papers report it."""
        return float(np.mean(self.correct))

    @property
    def robust(self) -> np.ndarray:
        """(N,) bool: clean-correct and still correct under attack."""
        return self.correct & self.clean_correct

    @property
    def robust_accuracy(self) -> float:
        return float(np.mean(self.robust))

    @property
    def clean_accuracy(self) -> float:
        return float(np.mean(self.clean_correct))

    @property
    def num_examples(self) -> int:
        """How many examples this row ran on (a row's `num_examples` may cut the suite's)."""
        return len(self.correct)


@dataclasses.dataclass
class SuiteResult:
    """All rows of one evaluation, in the order they were given.

    `num_examples` is the suite's count; a row with its own smaller `num_examples` ran on
    the first examples only (`RowResult.num_examples`).
    """

    rows: dict[str, RowResult]
    num_examples: int

    @property
    def accuracy(self) -> dict[str, float]:
        return {k: r.accuracy for k, r in self.rows.items()}

    @property
    def seconds(self) -> dict[str, float]:
        return {k: r.seconds for k, r in self.rows.items()}

    def ensemble(self, row_ids: Iterable[str]) -> float:
        """Per-example worst case: the fraction of examples that every listed row leaves
        correctly classified, counting clean-misclassified examples as not robust.

        Over the examples that every listed row ran on (the first `min(num_examples)`)."""
        row_ids = list(row_ids)
        if not row_ids:
            raise ConfigError("ensemble needs at least one row id.")
        missing = [r for r in row_ids if r not in self.rows]
        if missing:
            raise ConfigError(f"Unknown row id(s) {missing}; rows are {list(self.rows)}.")
        n = min(self.rows[r].num_examples for r in row_ids)
        robust = np.logical_and.reduce([self.rows[r].robust[:n] for r in row_ids])
        return float(np.mean(robust))

    def attack_rows_by_threat(self) -> dict[str, list[str]]:
        """{threat: ids of its attack rows (not "clean", not attack "none")}."""
        out: dict[str, list[str]] = {}
        for row_id, r in self.rows.items():
            if r.row.is_attack:
                out.setdefault(r.row.threat, []).append(row_id)
        return out

    def worst_case_by_threat(self) -> dict[str, float]:
        """{threat: `ensemble` of all its attack rows}."""
        return {t: self.ensemble(ids) for t, ids in self.attack_rows_by_threat().items()}


def data_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """A short hash of the evaluated examples, stored with every row."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.asarray(labels, np.int64).tobytes())
    return h.hexdigest()[:16]


def row_settings(
    row: Row,
    *,
    defense: Defense,
    surrogate: Defense | None,
    num_examples: int,
    seed: int,
    eot_samples: int,
    data: str,
    after_robust: np.ndarray | None = None,
) -> dict[str, Any]:
    """What a stored row must match to be reused (JSON-normalised); `after_robust`: the
    robust mask of the row's "after" row, which decides the examples it attacks."""
    settings = {
        "row": row.row_id,
        "threat": row.threat,
        "attack": row.attack,
        "num_examples": num_examples,
        "seed": seed,
        "defense": defense.name,
        "weights": defense.fingerprint,
        "surrogate": surrogate.name if row.threat in ("transfer", "graybox") else None,
        "surrogate_weights": (
            surrogate.fingerprint if row.threat in ("transfer", "graybox") else None
        ),
        "eot_samples": eot_samples if row.threat == "bpda_eot" else None,
        "data": data,
    }
    if row.after is not None:
        mask = np.packbits(np.asarray(after_robust, bool)).tobytes()
        settings["after"] = {"row": row.after, "robust": hashlib.sha1(mask).hexdigest()[:16]}
    return json.loads(json.dumps(to_jsonable(settings)))


def row_key(seed: int, row: Row) -> jax.Array:
    """The row's base key, from the seed and the attack spec only.

    Not from the row id or position (renaming or reordering rows changes no number), nor from
    the threat model: rows that run the same attack under different threat models draw the
    same random starts, so their difference is the threat model's alone (common random
    numbers; an identity purifier gives bpda == end_to_end exactly).
    """
    spec = json.dumps(to_jsonable(row.attack), sort_keys=True)
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(spec.encode()) & 0x7FFFFFFF)


def _row_paths(workdir: str, row_id: str) -> tuple[str, str]:
    stem = os.path.join(workdir, "rows", row_file_stem(row_id))
    return stem + ".npz", stem + ".json"


def load_row(workdir: str, row: Row, settings: Mapping[str, Any]) -> RowResult | str:
    """The stored result of `row`, or a reason it cannot be reused."""
    npz_path, json_path = _row_paths(workdir, row.row_id)
    if not (os.path.exists(npz_path) and os.path.exists(json_path)):
        return "not computed yet"
    with open(json_path, encoding="utf-8") as f:
        stored = json.load(f)
    if stored.get("settings") != settings:
        old = stored.get("settings") or {}
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        return f"stored settings differ ({', '.join(changed)})"
    with np.load(npz_path) as arrays:
        correct, clean = arrays["correct"], arrays["clean_correct"]
    if correct.shape != (settings["num_examples"],) or clean.shape != correct.shape:
        return "stored arrays have the wrong length"
    return RowResult(row, correct.astype(bool), clean.astype(bool), stored["seconds"], True)


def save_row(workdir: str, result: RowResult, settings: Mapping[str, Any]) -> None:
    """Writes the row's arrays, then its JSON sidecar (the sidecar marks it complete)."""
    if jax.process_index() != 0:
        return
    npz_path, json_path = _row_paths(workdir, result.row.row_id)
    os.makedirs(os.path.dirname(npz_path), exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, correct=result.correct, clean_correct=result.clean_correct)
    with open(npz_path + ".tmp", "wb") as f:
        f.write(buffer.getvalue())
    os.replace(npz_path + ".tmp", npz_path)
    write_json(
        json_path,
        {
            "settings": settings,
            "description": result.row.description,
            "seconds": result.seconds,
            "accuracy": result.accuracy,
            "robust_accuracy": result.robust_accuracy,
            "clean_accuracy": result.clean_accuracy,
        },
    )


def _row_step(row: Row, defense, surrogate, key, eot_samples, mesh):
    """jit((batch, batch index) -> (correct, clean_correct)), replicated outputs."""
    attack = attack_specs.make_attack(row.attack)

    def step(batch, index):
        attack_key, threat_key, score_key = jax.random.split(jax.random.fold_in(key, index), 3)
        x = data_lib.to_float(batch["image"])
        y = batch["label"]
        scored = threats.scored_model(row.threat, defense, score_key)
        clean_correct = jnp.argmax(scored(x), -1) == y
        attacked, _ = threats.attacked_model(
            row.threat, defense, surrogate, key=threat_key, eot_samples=eot_samples
        )
        if attacked is None:
            return clean_correct, clean_correct
        x_adv = jax.lax.stop_gradient(attack(attacked, x, y, attack_key))
        return jnp.argmax(scored(x_adv), -1) == y, clean_correct

    replicated = mesh_lib.replicated(mesh)
    return jax.jit(step, out_shardings=(replicated, replicated))


# Threats whose attacker sees the classifier f alone: x_adv does not depend on the purifier.
CLASSIFIER_ONLY_THREATS = ("whitebox", "undefended")


def _split_steps(row: Row, defense, surrogate, key, eot_samples, *, eager: bool):
    """(attack_step, score_step): (batch, index) -> x_adv and (batch, x_adv, index) ->
    (correct, clean_correct), keys as in `_row_step`.

    `eager`: the attack runs outside jit, so AutoAttack gathers the still-robust examples
    between its components (`capjax.attacks.autoattack`) instead of attacking every example
    with every component, and `pgd` with `early_stop` between its steps; the attacked model
    is then built once per row, its randomness fixed by the row's first batch key (both are
    for deterministic defenses).
    """
    attack = attack_specs.make_attack(row.attack)

    def keys(index):
        return jax.random.split(jax.random.fold_in(key, index), 3)

    def attacked_model(threat_key):
        model, _ = threats.attacked_model(
            row.threat, defense, surrogate, key=threat_key, eot_samples=eot_samples
        )
        return model

    def attack_of(model, batch, attack_key):
        x = data_lib.to_float(batch["image"])
        return jax.lax.stop_gradient(attack(model, x, batch["label"], attack_key))

    if eager:
        model = attacked_model(keys(0)[1])

        def attack_step(batch, index):
            return attack_of(model, batch, keys(index)[0])

    else:

        @jax.jit
        def attack_step(batch, index):
            attack_key, threat_key, _ = keys(index)
            return attack_of(attacked_model(threat_key), batch, attack_key)

    def score_step(batch, x_adv, index):
        _, _, score_key = keys(index)
        scored = threats.scored_model(row.threat, defense, score_key)
        y = batch["label"]
        clean_correct = jnp.argmax(scored(data_lib.to_float(batch["image"])), -1) == y
        return jnp.argmax(scored(x_adv), -1) == y, clean_correct

    return attack_step, jax.jit(score_step)


def runs_eagerly(row: Row) -> bool:
    """AutoAttack rows, and rows whose attack stops early (`pgd`'s `early_stop`), run their
    attack outside jit, to attack only still-robust examples."""
    if not row.is_attack:
        return False
    return (
        attack_specs.stops_early_from_host(row.attack)
        or attack_specs.kind(row.attack) == "ensemble"
    )


def adversarial_key(row: Row, defense: Defense, seed: int, data: str, batch_size: int):
    """What x_adv of a classifier-only row depends on, or None when it cannot be shared
    (another threat, or a defense without `classifier_fingerprint`)."""
    if row.threat not in CLASSIFIER_ONLY_THREATS or not row.is_attack:
        return None
    if not defense.classifier_fingerprint:
        return None
    spec = json.dumps(to_jsonable(row.attack), sort_keys=True)
    return (defense.classifier_fingerprint, spec, seed, data, batch_size)


def compute_row(
    row: Row,
    *,
    defense: Defense,
    surrogate: Defense | None,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    mesh,
    eot_samples: int,
    progress: bool,
    adversarial_store: dict | None = None,
    store_key: tuple | None = None,
) -> RowResult:
    """Runs one row over every example (see module docstring).

    Rows whose attacker sees f alone (`CLASSIFIER_ONLY_THREATS`) run as two programs,
    attack then score; AutoAttack rows as well, with the attack outside jit (`runs_eagerly`).
    With an `adversarial_store` and a `store_key` (`adversarial_key`),
    their x_adv are taken from the store when another defense with the same classifier made
    them, and put there otherwise: a white-box attack on f runs once for every defense on f.
    """
    start = time.perf_counter()
    # Classifier-only rows always run as attack-then-score (two programs), whether or not
    # their x_adv are shared, so a row's numbers never depend on the store; AutoAttack rows
    # too, their attack outside jit.
    eager = runs_eagerly(row)
    split = (row.threat in CLASSIFIER_ONLY_THREATS and row.is_attack) or eager
    if split:
        attack_step, score_step = _split_steps(
            row, defense, surrogate, row_key(seed, row), eot_samples, eager=eager
        )
        shared = adversarial_store is not None and store_key is not None
        cached = adversarial_store.get(store_key) if shared else None
        made = []
    else:
        step = _row_step(row, defense, surrogate, row_key(seed, row), eot_samples, mesh)
    correct, clean = [], []
    num_batches = -(-len(labels) // batch_size)
    batches = data_lib.eval_batches(images, labels, batch_size)
    show = progress and jax.process_index() == 0
    for index, batch in enumerate(
        tqdm(batches, total=num_batches, desc=row.row_id, disable=not show, leave=False)
    ):
        sharded = mesh_lib.shard_global_batch(batch, mesh)
        if split:
            if cached is not None:
                x_adv = cached[index]
            else:
                x_adv = attack_step(sharded, np.int32(index))
                made.append(x_adv)
            hits, clean_hits = score_step(sharded, x_adv, np.int32(index))
        else:
            hits, clean_hits = step(sharded, np.int32(index))
        mask = batch["mask"]
        correct.append(np.asarray(hits)[mask])
        clean.append(np.asarray(clean_hits)[mask])
    if split and shared and cached is None:
        adversarial_store[store_key] = made
    seconds = time.perf_counter() - start
    return RowResult(row, np.concatenate(correct), np.concatenate(clean), seconds)


def compute_after_row(
    row: Row, base: RowResult, *, images: np.ndarray, labels: np.ndarray, **compute_kwargs
) -> RowResult:
    """Runs `row` on the examples `base` (its "after" row) left robust, and keeps `base`'s
    outcome on the others (`compute_kwargs`: those of `compute_row`, without a store)."""
    n = len(labels)
    survivors = np.flatnonzero(base.robust[:n])
    correct = base.correct[:n].copy()
    clean = base.clean_correct[:n].copy()
    seconds = 0.0
    if survivors.size:
        part = compute_row(
            row, images=images[survivors], labels=labels[survivors], **compute_kwargs
        )
        correct[survivors] = part.correct
        clean[survivors] = part.clean_correct
        seconds = part.seconds
    return RowResult(row, correct, clean, seconds)


def check_examples(images: np.ndarray, labels: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ConfigError(
            "images must be a host uint8 array (N, H, W, C), as datasets store them; got "
            f"{type(images).__name__} {getattr(images, 'dtype', '?')} "
            f"{getattr(images, 'shape', '?')}."
        )
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"labels must be (N,) = ({len(images)},) integers, got {labels.shape}.")
    if len(images) == 0:
        raise ConfigError("The suite needs at least one example.")


def run_suite(
    rows: Mapping[str, Mapping[str, Any]],
    *,
    defense: Defense,
    surrogate: Defense | None = None,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    workdir: str,
    seed: int,
    mesh=None,
    eot_samples: int = DEFAULT_EOT_SAMPLES,
    progress: bool = True,
    adversarial_store: dict | None = None,
) -> SuiteResult:
    """Evaluates every row, reusing rows already finished in `workdir`.

    Args:
      rows: {row id: row dict}, see `parse_rows`; evaluated and reported in this order.
      defense: the defense under evaluation.
      surrogate: the attacker's copy of it (another seed), needed by transfer/graybox rows.
      images: (N, H, W, C) uint8 host array, the same on every process.
      labels: (N,) integer labels.
      batch_size: global batch; a multiple of the device count (the last one is padded).
      workdir: rows are stored under `workdir/rows/` (written by process 0 only; a shared
        filesystem on multi-host runs, as for checkpoints).
      seed: base of every row's keys.
      mesh: the data mesh (default: all devices).
      eot_samples: draws per gradient of "bpda_eot" rows.
      progress: a tqdm bar per row.
      adversarial_store: a dict kept across calls: white-box rows of defenses that share a
        classifier (same `Defense.classifier_fingerprint`) attack f once and reuse its x_adv
        (the demo evaluates no defense, CAFD and CAP-GAN on one f).

    Returns:
      The `SuiteResult`, rows in the given order.
    """
    parsed = parse_rows(rows, defense, surrogate)
    check_examples(images, labels)
    labels = np.asarray(labels, np.int32)
    mesh = mesh_lib.make_mesh() if mesh is None else mesh
    mesh_lib.check_global_batch(batch_size, mesh, "eval.batch_size")
    fingerprints: dict[int, str] = {}
    say = print if jax.process_index() == 0 else (lambda *a, **k: None)
    results = {}
    for row in parsed.values():
        n = min(row.num_examples or len(labels), len(labels))
        base = results.get(row.after) if row.after is not None else None
        if base is not None:
            n = min(n, base.num_examples)
        if n not in fingerprints:
            fingerprints[n] = data_fingerprint(images[:n], labels[:n])
        settings = row_settings(
            row,
            defense=defense,
            surrogate=surrogate,
            num_examples=n,
            seed=seed,
            eot_samples=eot_samples,
            data=fingerprints[n],
            after_robust=base.robust[:n] if base is not None else None,
        )
        stored = load_row(workdir, row, settings)
        if isinstance(stored, RowResult):
            say(f"row {row.row_id}: done, loaded ({stored.accuracy:.2%})")
            results[row.row_id] = stored
            continue
        if stored != "not computed yet":
            say(f"row {row.row_id}: {stored}; recomputing")
        common = dict(
            defense=defense,
            surrogate=surrogate,
            batch_size=batch_size,
            seed=seed,
            mesh=mesh,
            eot_samples=eot_samples,
            progress=progress,
        )
        if base is not None:
            result = compute_after_row(row, base, images=images[:n], labels=labels[:n], **common)
        else:
            result = compute_row(
                row,
                images=images[:n],
                labels=labels[:n],
                adversarial_store=adversarial_store,
                store_key=adversarial_key(row, defense, seed, fingerprints[n], batch_size),
                **common,
            )
        save_row(workdir, result, settings)
        say(f"row {row.row_id}: {result.accuracy:.2%} ({result.seconds:.1f} s)")
        results[row.row_id] = result
    return SuiteResult(results, len(labels))
