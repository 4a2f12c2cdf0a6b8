"""The `eval` task: evaluate a trained defense (or none, or a baseline) with a suite of rows.

    python -m capjax.main --config=configs/eval_cifar.py:capgan_table1 \
        --config.defense=capgan --config.defense_workdir=runs/capgan \
        --config.surrogate_workdir=runs/capgan/surrogate --workdir=runs/eval_capgan_t1

Writes `results.json`, `report.md`, figures and `rows/` (per-example results; an interrupted
evaluation resumes without redoing finished rows) to the workdir.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import ml_collections

from capjax import data as data_lib
from capjax.core import mesh as mesh_lib
from capjax.core.errors import ConfigError
from capjax.eval.defense import Defense
from capjax.eval.evaluate import evaluate_defense, needs_surrogate, plain_rows
from capjax.eval.paper_match import dataset_of, run_facts
from capjax.eval.paper_suites import attach_paper_numbers
from capjax.tasks.load_defense import (
    load_classifier,
    load_defense,
    read_run_config,
    run_fingerprint,
)
from capjax.train import classifier as classifier_lib


def _data_config(config) -> ml_collections.ConfigDict:
    """The data section: the eval config's own, or the defense run's when `data.source` is 'run'."""
    if config.data.source != "run":
        return config
    run_config = read_run_config(config.defense_workdir)
    if "data" not in run_config:
        raise ConfigError(f"The run in {config.defense_workdir} has no data section.")
    merged = ml_collections.ConfigDict(config.to_dict())
    merged.data = run_config.data
    return merged


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Loads the defense, the surrogate(s) when a row needs one, and runs the suite."""
    if not config.defense_workdir:
        raise ConfigError(
            "Set --config.defense_workdir to the finished run that holds the defense (for "
            "none, jpeg, tvm and adv_training: a classifier run)."
        )
    mesh = mesh_lib.make_mesh()
    mesh_lib.check_global_batch(config.eval.batch_size, mesh, "eval.batch_size")
    data_config = _data_config(config)
    dataset = data_lib.load_from_config(data_config, workdir)
    options = config.defense_options.get(config.defense)
    defense = load_defense(
        config.defense,
        config.defense_workdir,
        options=options.to_dict() if options is not None else None,
        classifier_workdir=config.classifier_workdir,
        dataset=dataset,
    )
    rows, notes = attach_paper_numbers(
        plain_rows(config.eval.rows), config.suite, config.defense, _facts(config, data_config)
    )
    surrogate = None
    if needs_surrogate(rows):
        surrogate = _surrogate(config, dataset)
    return evaluate_defense(
        defense=defense,
        surrogate=surrogate,
        dataset=dataset,
        eval_config=config.eval,
        workdir=workdir,
        seed=config.seed,
        mesh=mesh,
        title=f"{defense.name}: {config.suite}",
        settings={"config": json.loads(config.to_json_best_effort())},
        rows=rows,
        paper_notes=notes,
    )


def _facts(config, data_config) -> dict[str, Any]:
    """What decides which paper numbers apply: the evaluation's dataset, the defense run's
    target and variant (`capjax.eval.paper_match.run_facts`)."""
    run_config = read_run_config(config.defense_workdir).to_dict()
    facts = run_facts(run_config, dataset_of(data_config.data.to_dict()))
    if config.classifier_workdir:  # cross-model defense (CAFD Table 2): another target
        facts["target"] = read_run_config(config.classifier_workdir).model.name
    options = config.defense_options.get(config.defense)
    options = options.to_dict() if options is not None else {}
    if config.defense == "jpeg":
        facts["jpeg_quality"] = options.get("quality", 75)
    if config.defense == "tvm":
        facts["tvm_weight"] = options.get("weight")
    return facts


def _surrogate(config, dataset) -> Defense:
    """f' for transfer rows and, with `surrogate_defense_workdir`, the gray-box copy."""
    if config.surrogate_defense_workdir:
        local = load_defense(config.defense, config.surrogate_defense_workdir, dataset=dataset)
        return dataclasses.replace(local, name=f"local copy of {local.name}")
    if not config.surrogate_workdir:
        raise ConfigError(
            "This suite has black-box transfer rows: set --config.surrogate_workdir to a "
            "classifier run trained like the target with another seed (a CAP-GAN run keeps "
            "one in <its workdir>/surrogate), or --config.surrogate_defense_workdir."
        )
    model, variables, _ = load_classifier(config.surrogate_workdir, dataset)
    return Defense(
        name="surrogate f'",
        classifier=classifier_lib.eval_logits_fn(model, variables),
        fingerprint=run_fingerprint(config.surrogate_workdir),
    )
