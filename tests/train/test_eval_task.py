"""The `eval` task through the CLI's runner: a defense rebuilt from a workdir, a paper suite."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from capjax.train.tasks import run_task

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(name: str, variant: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("classifier")
    run_task(load_config("classifier_cifar.py", "smoke,model=tiny"), str(workdir))
    return str(workdir)


def test_jpeg_defense_on_the_white_box_table_resumes(classifier_run, tmp_path, capsys):
    config = load_config("eval_cifar.py", "capgan_table3,smoke")
    config.defense = "jpeg"
    config.defense_workdir = classifier_run
    results = run_task(config, str(tmp_path))
    accuracy = results["accuracy"]
    assert set(accuracy) == {
        "whitebox_clean",
        "whitebox_fgsm",
        "whitebox_mifgsm20",
        "whitebox_pgd7",
        "whitebox_pgd40",
        "whitebox_cw",
    }
    report = (tmp_path / "report.md").read_text()
    assert "JPEG (q=75)" in report and "paper" in report  # the paper's JPEG row of Table III
    assert json.loads((tmp_path / "results.json").read_text())["accuracy"] == accuracy
    for name in ("accuracy.png", "examples.png"):
        assert (tmp_path / name).exists(), name

    # A second run loads every finished row instead of attacking again.
    capsys.readouterr()
    again = run_task(config, str(tmp_path))
    assert again["accuracy"] == accuracy
    assert capsys.readouterr().out.count("done, loaded") == len(accuracy)


def test_wrong_kind_of_run_and_missing_surrogate_are_explained(classifier_run, tmp_path):
    config = load_config("eval_cifar.py", "capgan_table3,smoke")
    config.defense = "capgan"
    config.defense_workdir = classifier_run
    with pytest.raises(ValueError, match="needs a finished 'capgan' run"):
        run_task(config, str(tmp_path))
    config = load_config("eval_cifar.py", "capgan_table1,smoke")
    config.defense = "none"
    config.defense_workdir = classifier_run
    with pytest.raises(ValueError, match="surrogate_workdir"):
        run_task(config, str(tmp_path))
