"""The `eval` task through the CLI's runner: a defense rebuilt from a workdir, a paper suite."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from capjax.tasks.registry import run_task

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


def test_thermometer_classifier_masks_gradients_and_the_suite_says_so(tmp_path):
    classifier = load_config("classifier_cifar.py", "smoke,model=tiny,thermometer")
    classifier.model.thermometer_levels = 4
    classifier.data.num_train = 128
    run_task(classifier, str(tmp_path / "thm"))
    config = load_config("eval_cifar.py", "capgan_table4,smoke")
    config.defense = "thermometer"
    config.defense_workdir = str(tmp_path / "thm")
    config.eval.num_examples = 64
    config.eval.rows = {
        k: v for k, v in config.eval.rows.items() if k in ("end_to_end_clean", "end_to_end_pgd7")
    }
    results = run_task(config, str(tmp_path / "eval"))
    # The exact code has no gradient: end-to-end PGD moves no further than its random start,
    # and the zero-gradient check fires.
    acc = results["accuracy"]
    assert acc["end_to_end_pgd7"] >= acc["end_to_end_clean"] - 0.1, acc
    assert "zero_gradients" in [flag["name"] for flag in results["sanity"]["flags"]]
    assert "thermometer encoding (4 levels)" in (tmp_path / "eval" / "report.md").read_text()
    config.defense = "none"
    with pytest.raises(ValueError, match="use defense 'thermometer'"):
        run_task(config, str(tmp_path / "eval_none"))
