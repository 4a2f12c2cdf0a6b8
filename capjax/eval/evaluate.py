"""One call that evaluates a defense: the suite's rows, the sanity checks, the report, a figure.

Used at the end of every defense task (CAFD, CAP-GAN, HGD, APE-GAN, the demo) and by the
`eval` task, so each defense is evaluated the same way:

    results = evaluate_defense(defense=defense, surrogate=surrogate, dataset=dataset,
                               eval_config=config.eval, workdir=workdir, seed=0, title="CAFD")

`eval_config` holds `num_examples`, `batch_size`, `figure_examples`, `eot_samples` (0 when
absent) and `rows` (the plain row dicts of `capjax.eval.paper_suites`; or the `rows`
argument).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from capjax import data as data_lib
from capjax.attacks.gradient import pgd
from capjax.eval.defense import Defense
from capjax.eval.paper_suites import CAPGAN_TABLE_TITLES, ordered
from capjax.eval.report import write_report
from capjax.eval.sanity import run_sanity_checks
from capjax.eval.suite import SuiteResult, run_suite

SURROGATE_THREATS = ("transfer", "graybox")
# (x, x_adv) -> extra figure rows {name: (N, H, W[, C]) in [0, 1]} (attention maps, say).
FigureExtra = Callable[[jax.Array, jax.Array], dict[str, jax.Array]]


def plain_rows(rows: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Config rows as plain dicts in their `order`, without the `order` field."""
    out = {}
    for row_id in ordered(rows):
        row = rows[row_id]
        row = row.to_dict() if hasattr(row, "to_dict") else dict(row)
        row.pop("order", None)
        out[row_id] = row
    return out


def needs_surrogate(rows: Mapping[str, Any]) -> bool:
    """Whether any row attacks through a surrogate (black-box transfer or gray-box)."""
    return any(row["threat"] in SURROGATE_THREATS for row in rows.values())


def tables_of(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """{table title: row ids} by each row's group, in row order."""
    tables: dict[str, list[str]] = {}
    for row_id, row in rows.items():
        group = row.get("group") or "rows"
        tables.setdefault(CAPGAN_TABLE_TITLES.get(group, group), []).append(row_id)
    return tables


def example_figure(
    path: str,
    defense: Defense,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    title: str,
    key: jax.Array,
    extra: FigureExtra | None = None,
    eps: float = 8 / 255,
) -> None:
    """Clean images, PGD-20 against the classifier, their purification (and `extra` rows)."""
    x = data_lib.to_float(jnp.asarray(images))
    y = jnp.asarray(labels)
    x_adv = pgd(defense.classifier, x, y, eps=eps, step_size=eps / 4, steps=20, key=key)
    examples = {"clean": x, "adversarial": x_adv}
    if defense.purify is not None:
        examples["purified"] = defense.purified(x_adv, key)
    if extra is not None:
        examples.update(extra(x, x_adv))
    save_figure(path, jax.device_get(examples), title)


def save_figure(path: str, examples: dict[str, np.ndarray], title: str) -> None:
    """A grid like CAFD's Figure 4: one row per kind (images, then maps), one column per image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # device_get returns dicts in sorted key order; show images first, then their maps.
    order = ("clean", "adversarial", "purified")
    kinds = [k for k in order if k in examples] + [
        f"cam {k}" for k in order if f"cam {k}" in examples
    ]
    kinds += [k for k in examples if k not in kinds]
    cols = len(examples[kinds[0]])
    fig, axes = plt.subplots(
        len(kinds), cols, figsize=(1.6 * cols, 1.7 * len(kinds)), squeeze=False
    )
    for r, kind in enumerate(kinds):
        for c in range(cols):
            ax = axes[r][c]
            image = np.asarray(examples[kind][c], np.float32)
            ax.imshow(
                np.clip(image, 0, 1),
                cmap="jet" if image.ndim == 2 else None,
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(kind, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_defense(
    *,
    defense: Defense,
    dataset: data_lib.Dataset,
    eval_config: Any,
    workdir: str,
    seed: int = 0,
    surrogate: Defense | None = None,
    mesh=None,
    title: str | None = None,
    figure_extra: FigureExtra | None = None,
    settings: Mapping[str, Any] | None = None,
    rows: Mapping[str, dict[str, Any]] | None = None,
    adversarial_store: dict | None = None,
    paper_notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Runs `eval_config.rows` on the first `num_examples` test images; writes the report.

    `rows` (plain dicts, in order) replaces `eval_config.rows` when given.
    `adversarial_store`: see `run_suite` (white-box x_adv shared across defenses on one f).
    `paper_notes`: why rows carry a paper number or none, listed in report.md.
    Finished rows are
    loaded from `workdir/rows/` rather than redone. Writes (process 0)
    `results.json`, `report.md`, `accuracy.png`, `eps_sweep.png` for eps sweeps, and
    `examples.png`.

    Returns:
      {"accuracy": {row id: accuracy}, "worst_case": {threat: accuracy}, "flags": [...],
      ...} (the payload of `capjax.eval.report.write_report`).
    """
    n = min(eval_config.num_examples, len(dataset.test_labels))
    images, labels = dataset.test_images[:n], dataset.test_labels[:n]
    rows = plain_rows(eval_config.rows) if rows is None else dict(rows)
    title = title or defense.name
    suite_result: SuiteResult = run_suite(
        rows,
        defense=defense,
        surrogate=surrogate,
        images=images,
        labels=labels,
        batch_size=eval_config.batch_size,
        workdir=workdir,
        seed=seed,
        mesh=mesh,
        eot_samples=eval_config.get("eot_samples", 0),
        adversarial_store=adversarial_store,
    )
    key = jax.random.key(seed + 7)
    flags = run_sanity_checks(
        suite_result,
        rows,
        defense,
        images,
        labels,
        key,
        batch_size=eval_config.batch_size,
        mesh=mesh,
    )
    payload = write_report(
        workdir,
        suite_result,
        rows,
        flags,
        title=title,
        defense_name=defense.name,
        tables=tables_of(rows),
        settings={"num_examples": n, "dataset": dataset.name, "seed": seed, **(settings or {})},
        paper_notes=paper_notes,
    )
    k = min(eval_config.figure_examples, n)
    if jax.process_index() == 0 and k:
        example_figure(
            os.path.join(workdir, "examples.png"),
            defense,
            images[:k],
            labels[:k],
            title=title,
            key=key,
            extra=figure_extra,
        )
        with open(os.path.join(workdir, "report.md"), "a", encoding="utf-8") as f:
            f.write("\n![adversarial and purified examples](examples.png)\n")
        with open(os.path.join(workdir, "report.md"), encoding="utf-8") as f:
            print(f.read())
    return payload if payload is not None else {"accuracy": suite_result.accuracy}
