"""The baselines end to end on the synthetic data: an adversarially trained classifier (AT),
then HGD and APE-GAN defending it, each through `run_task` with its `:smoke` config.

One AT classifier serves as every purifier's `target.workdir`, so the target is trained once
(`capjax.main` would only add interpreter start-up to these runs; `tests/test_main.py` keeps
to the sub-30 s configs). The module runs with "rbg" as JAX's default PRNG: XLA:CPU compiles
threefry's bit generator slowly, and the HGD smoke run took 40 s of CPU with threefry keys
against 24 s with rbg ones (measured here); the code under test is the same either way.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os

import jax
import pytest

from capjax import data as data_lib
from capjax.attacks import defended
from capjax.metrics import accuracy
from capjax.tasks.registry import run_task
from capjax.train.classifier import restore_classifier

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(name: str, variant: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


@pytest.fixture(scope="module", autouse=True)
def rbg_default_prng():
    previous = jax.config.jax_default_prng_impl
    jax.config.update("jax_default_prng_impl", "rbg")
    yield
    jax.config.update("jax_default_prng_impl", previous)


@pytest.fixture(scope="module")
def at_classifier(tmp_path_factory):
    """(config, workdir, results) of a finished `classifier_cifar.py:smoke,adv` run, PGD-2."""
    config = load_config("classifier_cifar.py", "smoke,adv,model=tiny")
    config.train.adversarial.steps = 2
    config.train.adversarial.step_size = 4 / 255
    config.data.num_test = 64
    config.train.eval_batch_size = 64
    workdir = str(tmp_path_factory.mktemp("at"))
    return config, workdir, run_task(config, workdir)


def test_adversarial_training_run_reports_pgd_accuracy_and_guards_its_checkpoint(at_classifier):
    config, workdir, results = at_classifier
    assert results["adversarial_training"] == "pgd-2 linf eps 8/255 step 4/255 random start"
    assert 0 <= results["test_adversarial_accuracy"] <= results["test_accuracy"] <= 1
    assert json.loads(open(os.path.join(workdir, "results.json")).read()) == results
    train_logs = [
        json.loads(line)
        for line in open(os.path.join(workdir, "metrics.jsonl"))
        if '"train"' in line
    ]
    assert train_logs and all("adversarial_accuracy" in log for log in train_logs)
    # A standard config does not take the AT checkpoint for its own, nor the reverse.
    standard = load_config("classifier_cifar.py", "smoke,model=tiny")
    with pytest.raises(ValueError, match="adversarial"):
        restore_classifier(standard, workdir, 10, (32, 32, 3))
    restore_classifier(config, workdir, 10, (32, 32, 3))


@pytest.mark.parametrize("task", ["hgd", "apegan"])
def test_purifier_task_end_to_end_on_a_finished_target(task, at_classifier, tmp_path):
    target_config, target_dir, _ = at_classifier
    config = load_config(f"{task}_cifar.py", "smoke")
    config.target.workdir = target_dir
    config.target.model = target_config.model
    config.target.train = target_config.train
    config.eval.update({"num_examples": 32, "batch_size": 32, "figure_examples": 2})
    config.eval.pgd.steps = 2
    results = run_task(config, str(tmp_path))

    acc = results["accuracy"]
    assert list(acc) == [  # paper_suites.purifier_rows, in order
        "undefended_clean",
        "clean",
        "undefended_pgd",
        "whitebox_pgd",
        "end_to_end_pgd",
    ]
    assert all(0 <= v <= 1 for v in acc.values())
    assert results["purifier_steps"] == 4 and results["task"] == task
    for name in ("results.json", "report.md", "examples.png", "config.json", "metrics.jsonl"):
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["settings"]["task"] == task and saved["settings"]["purifier_steps"] == 4
    assert "PGD-2 on f, then purified" in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "target").exists()  # the finished classifier was reused
    # Re-running finds everything done; the restored purifier gives the same clean accuracy.
    module = importlib.import_module(f"capjax.tasks.{task}_task")
    purify, logits_fn = module.load_purifier(config, str(tmp_path))
    dataset = data_lib.load_dataset("synthetic", num_train=8, num_test=32)
    recount = accuracy(
        defended(logits_fn, purify), dataset.test_images, dataset.test_labels, batch_size=32
    )
    assert recount == acc["clean"]
