"""The multi-defense summary (demo, cifar_cpu): its table, and the committed results."""

import json
import pathlib

import pytest

from capjax.eval import summary as summary_lib

RESULTS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "results" / "cifar_cpu"


def small_summary():
    return {
        "title": "t",
        "dataset": "toy",
        "num_examples": 400,
        "defenses": ["none", "cafd"],
        "names": {"none": "no defense", "cafd": "CAFD"},
        "rows": ["clean", "whitebox", "end_to_end"],
        "labels": {"clean": "clean", "whitebox": "white-box", "end_to_end": "end to end"},
        "row_examples": {"clean": 400, "whitebox": 400, "end_to_end": 100},
        "accuracy": {
            "none": {"clean": 0.9, "whitebox": 0.0},
            "cafd": {"clean": 0.8, "whitebox": 0.5, "end_to_end": 0.1},
        },
        "same_as": {"none": {"end_to_end": "whitebox"}},
        "paper": {"cafd": {"whitebox": {"value": 0.8721, "note": 1}}},
        "paper_notes": ["CAFD Table 1, PGD_N."],
        "flags": {"none": [], "cafd": ["zero_gradients"]},
        "stages": [
            {"name": "classifier", "seconds": 61.0},
            {"name": "cafd", "seconds": 5.0, "resumed": True},
        ],
        "command": "python -m capjax.main --config=x",
        "commit": "abc1234",
    }


def test_summary_table_has_intervals_paper_columns_and_notes():
    text = summary_lib.summary_markdown(small_summary())
    assert "| threat model | images | no defense | CAFD | CAFD: paper, full scale |" in text
    # 50% on 400 examples: 95% interval 1.96 * sqrt(0.25 / 400) = 4.9 points
    assert "| white-box | 400 | 0.0 ± 0.0 | 50.0 ± 4.9 | 87.2 [1] |" in text
    assert "| end to end | 100 | = white-box | 10.0 ± 5.9 | – |" in text
    assert "1. CAFD Table 1, PGD_N." in text
    assert "CAFD: ['zero_gradients']" in text
    assert "| cafd | 0 min 05 s (resumed: finished by an earlier run) |" in text
    assert "| total | 1 min 06 s |" in text
    assert "capjax commit: `abc1234`" in text
    assert summary_lib.interval95(0.5, 400) == pytest.approx(0.049)


def test_write_summary_round_trips_through_results_json(tmp_path):
    summary = small_summary()
    summary["flags"] = {"cafd": ["a"], "none": ["b"]}  # sorted keys reorder the dict
    text = summary_lib.write_summary(str(tmp_path), summary)
    assert "Sanity flags: no defense: ['b'], CAFD: ['a']" in text
    loaded = json.loads((tmp_path / "results.json").read_text())
    assert summary_lib.summary_markdown(loaded) == text == (tmp_path / "report.md").read_text()
    assert (tmp_path / "accuracy.png").stat().st_size > 1000


def test_committed_cifar_cpu_report_is_generated_from_its_results():
    """docs/results/cifar_cpu/report.md is exactly what its results.json produces."""
    results = json.loads((RESULTS / "results.json").read_text())
    assert (RESULTS / "report.md").read_text() == summary_lib.summary_markdown(results), (
        "docs/results/cifar_cpu/report.md differs from what its results.json produces; "
        "regenerate it with capjax.eval.summary.summary_markdown"
    )
    for figure in ("accuracy.png", "eval_cafd/examples.png", "eval_capgan/examples.png"):
        assert (RESULTS / figure).stat().st_size > 1000, figure
