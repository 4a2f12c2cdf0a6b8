"""The evaluation report: `results.json`, `report.md` with the papers' tables, and figures.

`report.md` holds one table per group laid out like the papers' (a row for the defense, a
"paper" row when the config gives the paper's numbers; one column per attack), the
per-example worst case of each threat model, every row in detail, and the sanity checks.
Figures: `accuracy.png` (every row) and, when rows form an eps sweep, `eps_sweep.png`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax

from capjax import attack_specs
from capjax.core.errors import ConfigError
from capjax.core.jsonio import write_json
from capjax.eval import threats
from capjax.eval.sanity import CHECKS, Flag, SanityReport
from capjax.eval.suite import RowResult, SuiteResult
from capjax.eval.summary import interval95

DEFAULT_GROUP = "Results"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _eps(r: RowResult) -> float | None:
    return attack_specs.budget(r.row.attack)[1]


def column_names(results: Sequence[RowResult]) -> list[str]:
    """Column headers for rows of one table: descriptions, where two coincide told apart by
    what differs between them: the threat model, else eps, else the row id."""
    names = [r.row.description for r in results]
    for extra in (
        lambda r: r.row.threat,
        lambda r: "unbounded" if _eps(r) is None else f"ε={_eps(r) * 255:.3g}/255",
        lambda r: r.row.row_id,
    ):
        for name in {n for n in names if names.count(n) > 1}:
            same = [i for i, n in enumerate(names) if n == name]
            if len({extra(results[i]) for i in same}) > 1:
                for i in same:
                    names[i] = f"{name} ({extra(results[i])})"
    return names


def group_tables(
    suite_result: SuiteResult, tables: Mapping[str, Sequence[str]] | None
) -> dict[str, list[str]]:
    """{table title: row ids}: `tables` as given, else rows grouped by their "group"."""
    if tables is not None:
        out = {str(t): list(ids) for t, ids in tables.items()}
        unknown = sorted({i for ids in out.values() for i in ids} - set(suite_result.rows))
        if unknown:
            raise ConfigError(f"tables name unknown row id(s) {unknown}.")
        return out
    out: dict[str, list[str]] = {}
    for row_id, r in suite_result.rows.items():
        out.setdefault(r.row.group or DEFAULT_GROUP, []).append(row_id)
    return out


def markdown_table(suite_result: SuiteResult, row_ids: Sequence[str], defense_name: str) -> str:
    """One paper-style table: a row for the defense, a "paper" row if any number is given."""
    results = [suite_result.rows[i] for i in row_ids]
    header = ["defense", *column_names(results)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        f"| {defense_name} (ours) | " + " | ".join(_pct(r.accuracy) for r in results) + " |",
    ]
    if any(r.row.paper is not None for r in results):
        lines.append("| paper | " + " | ".join(_pct(r.row.paper) for r in results) + " |")
    return "\n".join(lines)


def _flags_of(flags: SanityReport | Iterable[Flag] | None) -> tuple[list[Flag], list[str], dict]:
    if isinstance(flags, SanityReport):
        return list(flags.flags), list(flags.checks), dict(flags.measured)
    return list(flags or []), list(CHECKS), {}


def results_payload(
    suite_result: SuiteResult,
    flags,
    *,
    title: str,
    defense_name: str,
    tables: dict[str, list[str]],
    settings: Mapping[str, Any],
    paper_notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Everything `results.json` holds."""
    flag_list, checks, measured = _flags_of(flags)
    rows = {}
    for row_id, r in suite_result.rows.items():
        norm, eps = attack_specs.budget(r.row.attack)
        rows[row_id] = {
            "threat": r.row.threat,
            "attack": r.row.attack,
            "description": r.row.description,
            "kind": attack_specs.kind(r.row.attack),
            "norm": norm,
            "eps": eps,
            "group": r.row.group,
            "paper": r.row.paper,
            "accuracy": r.accuracy,
            "robust_accuracy": r.robust_accuracy,
            "clean_accuracy": r.clean_accuracy,
            "seconds": r.seconds,
            "loaded": r.loaded,
            "num_examples": r.num_examples,
        }
    return {
        "title": title,
        "defense": defense_name,
        "num_examples": suite_result.num_examples,
        "accuracy": dict(suite_result.accuracy),
        "settings": dict(settings),
        "rows": rows,
        "tables": tables,
        "paper_notes": list(paper_notes),
        "worst_case_by_threat": suite_result.worst_case_by_threat(),
        "sanity": {
            "flags": [
                {"name": f.name, "message": f.message, "rows": list(f.rows)} for f in flag_list
            ],
            "checks": {name: CHECKS.get(name, "") for name in checks},
            "measured": measured,
        },
        "seconds": sum(suite_result.seconds.values()),
    }


def markdown(payload: Mapping[str, Any], suite_result: SuiteResult, figures: Sequence[str]) -> str:
    """report.md from the results payload."""
    n = payload["num_examples"]
    lines = [
        f"# {payload['title']}",
        "",
        f"Defense: {payload['defense']}; {n} test examples. "
        "Every accuracy is recounted by a fresh forward pass of the defended model "
        "(of the bare classifier for `undefended`).",
        "",
    ]
    for title, ids in payload["tables"].items():
        lines += [f"## {title}", "", markdown_table(suite_result, ids, payload["defense"]), ""]
    notes = payload.get("paper_notes") or []
    if notes:
        lines += ['Paper numbers ("paper" rows):', ""]
        lines += [f"- {note}" for note in notes]
        lines.append("")
    worst = payload["worst_case_by_threat"]
    if worst:
        by_threat = suite_result.attack_rows_by_threat()
        lines += [
            "## Worst case per threat model",
            "",
            "An example counts as robust only if it is classified correctly clean and under "
            "every attack of the threat model (per example, not the minimum over rows; over "
            "the examples every such row ran on).",
            "",
            "| threat model | rows | robust accuracy |",
            "|---|---|---|",
        ]
        for threat, value in worst.items():
            names = ", ".join(by_threat[threat])
            lines.append(f"| {threat} | {names} | {_pct(value)} |")
        lines.append("")
    lines += [
        "## All rows",
        "",
        "| row | threat model | attack | eps | examples | accuracy | ± 95% | robust | paper | "
        "seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row_id, r in payload["rows"].items():
        eps = "–" if r["eps"] is None else f"{r['eps'] * 255:.3g}/255 ({r['norm']})"
        loaded = " (loaded)" if r["loaded"] else ""
        examples = r.get("num_examples", n)
        half = "–" if r["accuracy"] is None else f"{interval95(r['accuracy'], examples):.1%}"
        lines.append(
            f"| {row_id} | {r['threat']} | {r['description']} | {eps} | "
            f"{examples} | {_pct(r['accuracy'])} | {half} | "
            f"{_pct(r['robust_accuracy'])} | {_pct(r['paper'])} | {r['seconds']:.1f}{loaded} |"
        )
    lines += ["", "Threat models:", ""]
    used = dict.fromkeys(r["threat"] for r in payload["rows"].values())
    lines += [f"- `{t}`: {threats.DESCRIPTIONS[t]}" for t in used]
    sanity = payload["sanity"]
    lines += ["", "## Sanity checks", ""]
    if sanity["flags"]:
        for f in sanity["flags"]:
            lines.append(f"- **{f['name']}**: {f['message']}")
    else:
        lines.append("None fired. Checks run:")
        lines.append("")
        lines += [f"- {name}: {text}" for name, text in sanity["checks"].items()]
    measured = sanity["measured"]
    if "zero_gradient_fraction" in measured:
        lines += [
            "",
            f"Measured: {measured['zero_gradient_fraction']:.1%} of examples have a "
            "zero or non-finite input gradient through the defense's gradient path.",
        ]
    for figure in figures:
        lines += ["", f"![{figure}]({figure})"]
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_accuracy_figure(path: str, suite_result: SuiteResult, title: str) -> None:
    """Horizontal bars, one per row, with the paper's number as a marker where given."""
    plt = _plt()
    ids = list(suite_result.rows)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(ids) + 1.2))
    values = [suite_result.rows[i].accuracy * 100 for i in ids]
    ax.barh(range(len(ids)), values, color="tab:blue", label="ours")
    papers = [(k, r.row.paper) for k, r in enumerate(suite_result.rows.values()) if r.row.paper]
    if papers:
        ax.scatter(
            [p * 100 for _, p in papers],
            [k for k, _ in papers],
            color="tab:red",
            marker="|",
            s=200,
            label="paper",
            zorder=3,
        )
        ax.legend(fontsize=8)
    ax.set_yticks(range(len(ids)), ids, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def eps_sweeps(suite_result: SuiteResult) -> dict[tuple, list[str]]:
    """{(threat, attack name, norm, steps): row ids} with at least two distinct eps."""
    sweeps: dict[tuple, list[str]] = {}
    for row_id, r in suite_result.rows.items():
        norm, eps = attack_specs.budget(r.row.attack)
        if not r.row.is_attack or eps is None:
            continue
        opts = attack_specs.resolved(r.row.attack)
        key = (r.row.threat, attack_specs.attack_name(r.row.attack), norm, opts.get("steps"))
        sweeps.setdefault(key, []).append(row_id)
    return {
        k: sorted(ids, key=lambda i: _eps(suite_result.rows[i]))
        for k, ids in sweeps.items()
        if len({_eps(suite_result.rows[i]) for i in ids}) >= 2
    }


def save_eps_sweep_figure(path: str, suite_result: SuiteResult, title: str) -> bool:
    """Accuracy against eps * 255, a line per (threat, attack); False when there is no sweep."""
    sweeps = eps_sweeps(suite_result)
    if not sweeps:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for (threat, _, _, _), ids in sweeps.items():
        rows = [suite_result.rows[i] for i in ids]
        ax.plot(
            [_eps(r) * 255 for r in rows],
            [r.accuracy * 100 for r in rows],
            marker="o",
            label=f"{threat}: {attack_specs.describe(rows[0].row.attack)}",
        )
    ax.set_xlabel("eps (× 1/255)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(
    workdir: str,
    suite_result: SuiteResult,
    rows: Mapping[str, Mapping[str, Any]] | None,
    flags: SanityReport | Iterable[Flag] | None,
    *,
    title: str,
    defense_name: str,
    tables: Mapping[str, Sequence[str]] | None = None,
    settings: Mapping[str, Any] | None = None,
    paper_notes: Sequence[str] = (),
) -> dict[str, Any] | None:
    """Writes `results.json`, `report.md`, `accuracy.png` (and `eps_sweep.png`) to workdir.

    Args:
      suite_result: from `run_suite`.
      rows: the row dicts (unused beyond what suite_result holds; kept for the caller's
        symmetry with `run_sanity_checks`, may be None).
      flags: a `SanityReport` (its measured values are reported too) or a list of `Flag`s.
      title: the report's heading.
      defense_name: the name in the tables' "ours" row.
      tables: {table title: row ids}; None groups the rows by their "group".
      settings: run settings stored in results.json (config, data, seeds...).
      paper_notes: why rows have a paper number or not (`paper_suites.attach_paper_numbers`),
        listed under the tables.

    Returns:
      The results payload on process 0, None elsewhere (which write nothing).
    """
    del rows
    if jax.process_index() != 0:
        return None
    os.makedirs(workdir, exist_ok=True)
    grouped = group_tables(suite_result, tables)
    payload = results_payload(
        suite_result,
        flags,
        title=title,
        defense_name=defense_name,
        tables=grouped,
        settings=settings or {},
        paper_notes=paper_notes,
    )
    save_accuracy_figure(os.path.join(workdir, "accuracy.png"), suite_result, title)
    figures = ["accuracy.png"]
    if save_eps_sweep_figure(os.path.join(workdir, "eps_sweep.png"), suite_result, title):
        figures.append("eps_sweep.png")
    payload["figures"] = figures
    write_json(os.path.join(workdir, "results.json"), payload)
    tmp = os.path.join(workdir, "report.md.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(markdown(payload, suite_result, figures))
    os.replace(tmp, os.path.join(workdir, "report.md"))
    return payload
