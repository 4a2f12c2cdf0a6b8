"""The report: results.json numbers, the papers' table layout, worst cases, flags, figures."""

import json

from eval_fakes import fake_result

from capjax.eval import report, sanity

EPS = 8 / 255
ROWS = {
    "clean": {"threat": "clean", "group": "Table 2", "paper": 0.912},
    "fgsm": {
        "threat": "whitebox",
        "attack": {"name": "fgsm", "eps": EPS},
        "group": "Table 2",
        "paper": 0.85,
    },
    "mifgsm": {
        "threat": "whitebox",
        "attack": {"name": "mifgsm", "eps": EPS, "steps": 20},
        "group": "Table 2",
        "paper": -1,
    },
    "pgd7": {
        "threat": "whitebox",
        "group": "Table 2",
        "attack": {"name": "pgd", "eps": EPS, "step_size": 2 / 255, "steps": 7},
    },
    "pgd40": {
        "threat": "whitebox",
        "group": "Table 2",
        "paper": 0.80,
        "attack": {"name": "pgd", "eps": EPS, "step_size": 2 / 255, "steps": 40},
    },
    "bpda 4": {
        "threat": "bpda",
        "group": "Adaptive",
        "attack": {"name": "pgd", "eps": 4 / 255, "step_size": 1 / 255, "steps": 40},
    },
    "bpda 8": {
        "threat": "bpda",
        "group": "Adaptive",
        "attack": {"name": "pgd", "eps": EPS, "step_size": 2 / 255, "steps": 40},
    },
}
ACC = {
    "clean": 0.95,
    "fgsm": 0.85,
    "mifgsm": 0.82,
    "pgd7": 0.81,
    "pgd40": 0.79,
    "bpda 4": 0.5,
    "bpda 8": 0.12,
}


def test_report_files_tables_and_numbers(tmp_path):
    result = fake_result(ROWS, ACC)
    flags = sanity.SanityReport(
        flags=[sanity.Flag("zero_gradients", "63.0% of examples have zero gradients.")],
        checks=list(sanity.CHECKS),
        measured={"zero_gradient_fraction": 0.63},
    )
    payload = report.write_report(
        str(tmp_path),
        result,
        ROWS,
        flags,
        title="CAFD on CIFAR-10",
        defense_name="CAFD",
        tables=None,
        settings={"seed": 0},
    )
    for name in ("results.json", "report.md", "accuracy.png", "eps_sweep.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    md = (tmp_path / "report.md").read_text()
    assert "| defense | Clean | FGSM | MI-FGSM-20 | PGD-7 | PGD-40 |" in md
    assert "| CAFD (ours) | 95.0% | 85.0% | 82.0% | 81.0% | 79.0% |" in md
    assert "| paper | 91.2% | 85.0% | – | – | 80.0% |" in md
    # same description in one table: told apart by eps; no paper numbers, no paper row
    assert (
        "| defense | PGD-40 (ε=4/255) | PGD-40 (ε=8/255) |\n|---|---|---|\n"
        "| CAFD (ours) | 50.0% | 12.0% |\n\n"
    ) in md
    # worst case per threat: first examples are the correct ones, so min over rows here
    assert "| whitebox | fgsm, mifgsm, pgd7, pgd40 | 79.0% |" in md
    assert "**zero_gradients**: 63.0%" in md and "Measured: 63.0%" in md
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["rows"]["pgd40"]["accuracy"] == 0.79 and stored["rows"]["pgd40"]["paper"] == 0.8
    assert stored["rows"]["mifgsm"]["paper"] is None
    assert stored["worst_case_by_threat"] == {"whitebox": 0.79, "bpda": 0.12}
    assert stored["sanity"]["flags"][0]["name"] == "zero_gradients"
    assert stored["settings"] == {"seed": 0} and stored["seconds"] == 1.5 * len(ROWS)
    assert stored["figures"] == ["accuracy.png", "eps_sweep.png"]
    assert payload["tables"] == {
        "Table 2": ["clean", "fgsm", "mifgsm", "pgd7", "pgd40"],
        "Adaptive": ["bpda 4", "bpda 8"],
    }


def test_quiet_report_lists_checks_and_explicit_tables(tmp_path):
    rows = {k: ROWS[k] for k in ("clean", "pgd40")}
    result = fake_result(rows, ACC)
    report.write_report(
        str(tmp_path),
        result,
        rows,
        [],
        title="t",
        defense_name="none",
        tables={"Main": ["pgd40", "clean"]},
        settings={},
    )
    md = (tmp_path / "report.md").read_text()
    assert "## Main" in md and "| defense | PGD-40 | Clean |" in md
    assert "None fired. Checks run:" in md and "- zero_gradients:" in md
    assert not (tmp_path / "eps_sweep.png").exists()
