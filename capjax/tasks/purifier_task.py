"""The stages every trained-purifier task shares (CAFD, HGD, APE-GAN; CAP-GAN trains through
them and evaluates with the suite): target, purifier, evaluation, each resumable; and the
restore of a finished run's purifier.

A task module supplies `make_trainer(config, target_model, target_variables,
steps_per_epoch)` (a trainer with `init_state(key, image_shape)`, `train_step` and
`purify(state)`) and its checkpoint `fingerprint(config)`; this module does the rest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from capjax.attacks.feature import zoo_class_activation_fn
from capjax.core import mesh as mesh_lib
from capjax.core.errors import ConfigError
from capjax.eval import paper_match
from capjax.eval.purifier_report import evaluate_purifier, write_purifier_report
from capjax.train import classifier as classifier_lib
from capjax.train.adversarial import AdversarialTraining
from capjax.train.checkpoint import Checkpointer, abstract_on, state_fingerprint
from capjax.train.loop import LoopConfig, fit
from capjax.train.targets import prepare_target, restore_target, target_config

MakeTrainer = Callable[[ml_collections.ConfigDict, Any, Any, int], Any]

# eval.paper field -> the report row it is printed beside.
PAPER_ROWS = {
    "clean": "clean (purified)",
    "pgd": "PGD on classifier, then purified",
    "end_to_end": "PGD end to end",
}


def paper_rows(config, dataset_name: str | None) -> tuple[dict[str, float] | None, list[str]]:
    """The paper's accuracies keyed by report row (negative values mean "none"), and notes.

    The numbers stand beside the rows only when the run is in the setting
    `eval.paper_setting` names (`capjax.eval.paper_match`: dataset, target, variant);
    otherwise none do, and a note says what differs.
    """
    paper = config.eval.get("paper") or {}
    rows = {PAPER_ROWS[k]: v for k, v in paper.items() if k in PAPER_ROWS and v >= 0}
    if not rows:
        return None, []
    setting = config.eval.get("paper_setting")
    setting = setting.to_dict() if setting is not None else {}
    why = paper_match.mismatches(setting, paper_match.run_facts(config.to_dict(), dataset_name))
    if why:
        return None, [f"No paper numbers: {'; '.join(why)}."]
    return rows, []


def train_purifier(
    config: ml_collections.ConfigDict,
    workdir: str,
    dataset,
    mesh,
    *,
    make_trainer: MakeTrainer,
    fingerprint: dict[str, Any],
    title: str,
):
    """Target (trained in `workdir/target` or restored), then the purifier's training run.

    Shared by every trained-purifier task (CAFD, CAP-GAN, HGD, APE-GAN).

    Returns:
      (trainer, `FitResult`); `trainer.target` and `trainer.target_variables` are f's.
    """
    classifier_lib.validate_config(target_config(config), mesh)
    mesh_lib.check_global_batch(config.train.batch_size, mesh)
    target_model, target_variables = prepare_target(config, workdir, dataset, mesh)
    batches = classifier_lib.train_batches(dataset, config)
    trainer = make_trainer(config, target_model, target_variables, batches.steps_per_epoch)
    result = fit(
        init_state=lambda key: trainer.init_state(key, dataset.image_shape),
        train_step=trainer.train_step,
        batches=batches,
        workdir=workdir,
        config=LoopConfig.from_train_config(
            config.train, batches.steps_per_epoch, seed=config.seed, description=f"train {title}"
        ),
        fingerprint=fingerprint,
        mesh=mesh,
        run_config=json.loads(config.to_json_best_effort()),
        feed=config.data.get("feed", "auto"),
    )
    return trainer, result


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    task: str,
    make_trainer: MakeTrainer,
    fingerprint: dict[str, Any],
    title: str,
    extra_results: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Target (trained or restored), purifier (trained or resumed), evaluation and report.

    Returns:
      The results dict also written to `workdir/results.json` (see `evaluate_purifier`).
    """
    mesh = mesh_lib.make_mesh()
    if AdversarialTraining.from_config(config.train) is not None:
        raise ConfigError(
            f"train.adversarial applies to classifier training, not to the {task} purifier; "
            f"to defend an adversarially trained target, set target.train.adversarial."
        )
    dataset = classifier_lib.load_data(config, workdir)
    trainer, result = train_purifier(
        config,
        workdir,
        dataset,
        mesh,
        make_trainer=make_trainer,
        fingerprint=fingerprint,
        title=title,
    )
    target_model, target_variables = trainer.target, trainer.target_variables
    results = evaluate_purifier(
        logits_fn=classifier_lib.eval_logits_fn(target_model, target_variables),
        purify=trainer.purify(result.state),
        dataset=dataset,
        eval_config=config.eval,
        mesh=mesh,
        cam_fn=zoo_class_activation_fn(target_model, target_variables, kind="map"),
        seed=config.seed,
    )
    results.update(
        {
            "task": task,
            "dataset": dataset.name,
            "purifier_steps": result.step,
            "target": config.target.model.name,
            **(extra_results or {}),
        }
    )
    paper, notes = paper_rows(config, paper_match.dataset_of(config.data.to_dict()))
    write_purifier_report(workdir, results, title=title, paper=paper, notes=notes)
    return results


def load_finished_purifier(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    make_trainer: MakeTrainer,
    fingerprint: dict[str, Any],
    title: str,
):
    """(purify, classifier logits_fn) of the finished run in `workdir`.

    Raises:
      ValueError: the run has not finished, or its checkpoints belong to another config.
    """
    trainer, state = restore_finished(
        config, workdir, make_trainer=make_trainer, fingerprint=fingerprint, title=title
    )
    return trainer.purify(state), classifier_lib.eval_logits_fn(
        trainer.target, trainer.target_variables
    )


def restore_finished(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    make_trainer: MakeTrainer,
    fingerprint: dict[str, Any],
    title: str,
):
    """(trainer, final state) of the finished purifier run in `workdir`.

    Raises:
      ValueError: the run has not finished, or its checkpoints belong to another config.
    """
    dataset = classifier_lib.load_data(config, workdir)
    target_model, target_variables = restore_target(config, workdir, dataset)
    steps_per_epoch = len(dataset.train_labels) // config.train.batch_size
    trainer = make_trainer(config, target_model, target_variables, steps_per_epoch)
    abstract = jax.eval_shape(
        lambda key: trainer.init_state(key, dataset.image_shape), jax.random.key(0)
    )
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        expected_step = config.train.epochs * steps_per_epoch
        if checkpointer.latest_step() != expected_step:
            raise ConfigError(
                f"The {title} run in {workdir} has not finished (checkpoint step "
                f"{checkpointer.latest_step()} of {expected_step}); run it to the end first."
            )
        state, _ = checkpointer.restore(
            abstract_on(abstract, mesh_lib.replicated(mesh_lib.make_mesh())),
            dict(fingerprint, **state_fingerprint(abstract)),
        )
    finally:
        checkpointer.close()
    return trainer, state
