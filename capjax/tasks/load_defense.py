"""Defenses rebuilt from the workdirs of finished runs, for the evaluation suite.

Every run writes its resolved config to `<workdir>/config.json`, so a workdir alone says
which classifier or purifier it holds; `load_defense` turns one into a `capjax.eval.Defense`.

    none, adv_training     a classifier run (task classifier; `:adv` for adversarial training)
    thermometer            a classifier run trained on the code (`:thermometer`)
    jpeg, tvm              a classifier run; the purifier needs no training
    cafd, capgan, hgd,     a finished defense run of that task (its target classifier is
    apegan                 found through that run's config)
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

import ml_collections

from capjax import data as data_lib
from capjax.core.errors import ConfigError
from capjax.eval.defense import Defense, keyed
from capjax.train import classifier as classifier_lib

# name -> (task of the run it loads, the name reports use)
DEFENSES = {
    "none": ("classifier", "no defense"),
    "adv_training": ("classifier", "adversarial training (PGD)"),
    "jpeg": ("classifier", "JPEG"),
    "tvm": ("classifier", "TVM"),
    "thermometer": ("classifier", "thermometer encoding"),
    "cafd": ("cafd", "CAFD"),
    "capgan": ("capgan", "CAP-GAN"),
    "hgd": ("hgd", "HGD"),
    "apegan": ("apegan", "APE-GAN"),
}
# Tasks whose module offers `load_purifier(config, workdir) -> (purify, logits_fn)`.
PURIFIER_TASKS = {
    "cafd": "capjax.tasks.cafd_task",
    "capgan": "capjax.tasks.capgan_task",
    "hgd": "capjax.tasks.hgd_task",
    "apegan": "capjax.tasks.apegan_task",
}


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in `workdir` was started with (its `config.json`).

    Raises:
      ValueError: `workdir` holds no run.
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise ConfigError(
            f"{workdir} holds no capjax run (no config.json): pass the --workdir of a finished "
            f"`python -m capjax.main` run."
        )
    with open(path, encoding="utf-8") as f:
        return ml_collections.ConfigDict(json.load(f))


def run_fingerprint(workdir: str) -> str:
    """Which weights a run holds: its path and its latest checkpoint step (and that file's time).

    Stored evaluation rows are recomputed when this changes, e.g. after a longer retraining.
    """
    directory = os.path.join(workdir, "checkpoints")
    steps = (
        [int(d) for d in os.listdir(directory) if d.isdigit()] if os.path.isdir(directory) else []
    )
    if not steps:
        return os.path.abspath(workdir)
    latest = os.path.join(directory, str(max(steps)))
    return f"{os.path.abspath(workdir)}@{max(steps)}@{int(os.path.getmtime(latest))}"


def load_classifier(workdir: str, dataset=None):
    """(model, variables, config) of the finished classifier run in `workdir`."""
    config = read_run_config(workdir)
    if config.get("task") != "classifier":
        raise ConfigError(f"{workdir} holds a {config.get('task')!r} run, not a classifier run.")
    dataset = data_lib.load_from_config(config, workdir) if dataset is None else dataset
    model, variables = classifier_lib.restore_classifier(
        config, workdir, dataset.num_classes, dataset.image_shape
    )
    return model, variables, config


def load_defense(
    name: str,
    workdir: str,
    *,
    options: dict[str, Any] | None = None,
    classifier_workdir: str | None = None,
    dataset=None,
) -> Defense:
    """The defense `name` from the finished run in `workdir`.

    Args:
      name: one of `DEFENSES`.
      workdir: the run that holds it (a classifier run for none, adv_training, jpeg, tvm).
      options: the purifier's options (jpeg: quality, subsampling; tvm: keep_prob, weight,
        steps, ...).
      classifier_workdir: protect this classifier instead of the run's own (cross-model
        defense, CAFD Table 2).
      dataset: the loaded dataset, to avoid reading it again.

    Raises:
      ValueError: unknown name, or the workdir holds the wrong kind of run.
    """
    if name not in DEFENSES:
        raise ConfigError(f"Unknown defense {name!r}; choose one of {sorted(DEFENSES)}.")
    task, title = DEFENSES[name]
    options = dict(options or {})
    purify = differentiable = None
    if task == "classifier":
        model, variables, run_config = load_classifier(workdir, dataset)
        logits_fn = classifier_lib.eval_logits_fn(model, variables)
        levels = run_config.model.get("thermometer_levels", 0) or 0
        if (name == "thermometer") != bool(levels):
            raise ConfigError(
                f"defense {name!r} on {workdir}: that classifier was trained "
                + (
                    f"on a {levels}-level thermometer code; use defense 'thermometer'."
                    if levels
                    else "on plain images; train one with configs/classifier_cifar.py:thermometer."
                )
            )
        if name == "thermometer":
            title = f"thermometer encoding ({levels} levels)"
        elif name == "jpeg":
            from capjax.defenses.jpeg import jpeg_purifier

            purify, differentiable = jpeg_purifier(**options)
            title = f"JPEG (q={options.get('quality', 75)})"
        elif name == "tvm":
            from capjax.defenses.tvm import tvm_purifier

            purify = tvm_purifier(**options)
    else:
        config = read_run_config(workdir)
        if config.get("task") != task:
            raise ConfigError(
                f"defense {name!r} needs a finished {task!r} run, but {workdir} holds a "
                f"{config.get('task')!r} run."
            )
        module = importlib.import_module(PURIFIER_TASKS[task])
        plain_purify, logits_fn = module.load_purifier(config, workdir)
        purify = keyed(plain_purify)
    fingerprint = run_fingerprint(workdir)
    if classifier_workdir:
        model, variables, c = load_classifier(classifier_workdir, dataset)
        logits_fn = classifier_lib.eval_logits_fn(model, variables)
        title += f" protecting {c.model.name}"
        fingerprint += "+" + run_fingerprint(classifier_workdir)
    if options:
        fingerprint += f" {sorted(options.items())}"
    return Defense(
        name=title,
        classifier=logits_fn,
        purify=purify,
        differentiable_purify=differentiable,
        fingerprint=fingerprint,
    )
