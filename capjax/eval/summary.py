"""One table over several defenses: `results.json` in, `report.md` and `accuracy.png` out.

The demo task (and `configs/cifar_cpu.py`, which runs it on real CIFAR-10) evaluates the
undefended classifier and each purifier with the same rows, then summarises them here:

    summary = {"title": ..., "dataset": ..., "num_examples": 2000,
               "defenses": ["none", "cafd"], "names": {"none": "no defense", ...},
               "rows": ["clean", "whitebox_pgd40"], "labels": {"clean": "clean", ...},
               "row_examples": {"clean": 2000, ...},
               "accuracy": {"none": {"clean": 0.83, ...}, ...},
               "same_as": {"none": {"end_to_end_pgd40": "whitebox_pgd40"}},
               "paper": {"cafd": {"whitebox_pgd40": {"value": 0.8721, "note": 1}}},
               "paper_notes": ["CAFD Table 1 (PGD_N, VGG-19, full scale) ..."],
               "flags": {"cafd": []}, "stages": [{"name": "classifier", "seconds": 887.0}],
               "command": "python -m capjax.main ...", "commit": "abc123"}
    text = summary_markdown(summary)      # a pure function of the summary

Lists keep their order through `results.json` (written with sorted keys); dicts do not, so
everything ordered is a list. `summary_markdown` is pure so that a committed `report.md` can
be checked against the committed `results.json` it came from (`tests/eval/test_summary.py`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any


def interval95(accuracy: float, n: int) -> float:
    """Half-width of the normal-approximation 95% interval of an accuracy on n examples."""
    return 1.96 * math.sqrt(max(accuracy * (1 - accuracy), 0.0) / max(n, 1))


def _cell(summary: Mapping[str, Any], defense: str, row: str) -> str:
    same = summary.get("same_as", {}).get(defense, {}).get(row)
    if same is not None:
        return f"= {summary['labels'][same]}"
    value = summary["accuracy"].get(defense, {}).get(row)
    if value is None:
        return "–"
    n = summary["row_examples"][row]
    return f"{100 * value:.1f} ± {100 * interval95(value, n):.1f}"


def _paper_cell(summary: Mapping[str, Any], defense: str, row: str) -> str:
    entry = summary.get("paper", {}).get(defense, {}).get(row)
    if entry is None:
        return "–"
    return f"{100 * entry['value']:.1f} [{entry['note']}]"


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60):02d} s"


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """report.md of a multi-defense summary (see the module docstring for its fields)."""
    defenses, names, rows = summary["defenses"], summary["names"], summary["rows"]
    papers = [d for d in defenses if summary.get("paper", {}).get(d)]
    header = ["threat model", "images"]
    for d in defenses:
        header.append(names[d])
        if d in papers:
            header.append(f"{names[d]}: paper, full scale")
    lines = [
        f"# {summary['title']}",
        "",
        f"Test images of {summary['dataset']} (the first {summary['num_examples']}, or the "
        "count in the images column); L-inf eps 8/255. Accuracy in %, ± the 95% interval "
        "(normal approximation). Details, sanity checks and figures per defense in "
        "`eval_<defense>/report.md`.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [summary["labels"][row], str(summary["row_examples"][row])]
        for d in defenses:
            cells.append(_cell(summary, d, row))
            if d in papers:
                cells.append(_paper_cell(summary, d, row))
        lines.append("| " + " | ".join(cells) + " |")
    notes = summary.get("paper_notes") or []
    if notes:
        lines += ["", "Paper numbers (full-scale models from the papers, not this run's):", ""]
        lines += [f"{i}. {note}" for i, note in enumerate(notes, 1)]
    same = {r for d in defenses for r in summary.get("same_as", {}).get(d, {})}
    if same:
        lines += [
            "",
            '"= row": without a purifier the row is the same attack on the same model as '
            "that row, so it is not run twice.",
        ]
    flags = summary.get("flags", {})
    flagged = {d: flags[d] for d in defenses if flags.get(d)}
    lines += [
        "",
        "Sanity flags: "
        + (", ".join(f"{names[d]}: {f}" for d, f in flagged.items()) if flagged else "none fired."),
    ]
    stages = summary.get("stages") or {}
    if stages:
        lines += ["", "| stage | wall time |", "|---|---|"]
        for info in stages:
            resumed = " (resumed: finished by an earlier run)" if info.get("resumed") else ""
            lines.append(f"| {info['name']} | {_minutes(info['seconds'])}{resumed} |")
        total = sum(info["seconds"] for info in stages)
        lines.append(f"| total | {_minutes(total)} |")
    if summary.get("command"):
        lines += ["", "Command:", "", f"    {summary['command']}"]
    if summary.get("commit"):
        lines += ["", f"capjax commit: `{summary['commit']}`"]
    lines += ["", "![accuracy](accuracy.png)"]
    return "\n".join(lines) + "\n"


def write_summary(workdir: str, summary: Mapping[str, Any]) -> str:
    """Writes `results.json`, `report.md` and `accuracy.png` to workdir; returns the text."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "results.json.tmp"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(os.path.join(workdir, "results.json.tmp"), os.path.join(workdir, "results.json"))
    text = summary_markdown(summary)
    with open(os.path.join(workdir, "report.md"), "w", encoding="utf-8") as f:
        f.write(text)
    save_summary_figure(os.path.join(workdir, "accuracy.png"), summary)
    return text


def save_summary_figure(path: str, summary: Mapping[str, Any]) -> None:
    """Grouped bars: one group per row, one bar per defense, paper numbers as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    defenses, rows = summary["defenses"], summary["rows"]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(rows), 3.4))
    width = 0.8 / len(defenses)
    for i, d in enumerate(defenses):
        xs = np.arange(len(rows)) + i * width
        values = []
        for row in rows:
            row_of = summary.get("same_as", {}).get(d, {}).get(row, row)
            values.append(100 * summary["accuracy"].get(d, {}).get(row_of, float("nan")))
        ax.bar(xs, values, width, label=summary["names"][d])
        paper = summary.get("paper", {}).get(d, {})
        marks = [(x, 100 * paper[r]["value"]) for x, r in zip(xs, rows, strict=True) if r in paper]
        if marks:
            ax.scatter(
                [m[0] for m in marks],
                [m[1] for m in marks],
                marker="_",
                s=300,
                color="black",
                linewidths=2,
                zorder=3,
            )
    labels = [summary["labels"][r] for r in rows]
    ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2, labels, fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    if summary.get("paper"):
        ax.set_title("bars: this run; dashes: the papers' full-scale numbers", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
