"""The stages every trained-purifier task shares (CAFD, CAP-GAN, HGD, APE-GAN): target,
purifier, evaluation through the suite, each resumable; and the restore of a finished run's
purifier.

A task module describes itself as a `PurifierTask`: its early checks, `make_trainer(config,
target_model, target_variables, steps_per_epoch)` (a trainer with `init_state(key,
image_shape)`, `train_step` and `purify(state)`), its checkpoint `fingerprint(config)` and its
title; `PurifierTask.run` and `PurifierTask.load_purifier` do the rest.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from capjax import data as data_lib
from capjax.attacks.feature import zoo_class_activation_fn
from capjax.core import mesh as mesh_lib
from capjax.core.errors import ConfigError
from capjax.eval import paper_match, paper_suites
from capjax.eval.defense import Defense, keyed, weights_fingerprint
from capjax.eval.evaluate import FigureExtra, evaluate_defense, needs_surrogate
from capjax.models.denoiser import DUNet
from capjax.train import classifier as classifier_lib
from capjax.train.adversarial import AdversarialTraining
from capjax.train.checkpoint import Checkpointer, abstract_on, state_fingerprint
from capjax.train.loop import LoopConfig, fit
from capjax.train.targets import prepare_surrogate, prepare_target, restore_target, target_config

MakeTrainer = Callable[[ml_collections.ConfigDict, Any, Any, int], Any]
ReportRows = Callable[[ml_collections.ConfigDict, str | None], tuple[dict[str, dict], list[str]]]


def paper_rows(config, dataset_name: str | None) -> tuple[dict[str, float] | None, list[str]]:
    """The paper's accuracies keyed by `purifier_rows` row id (negative values in
    `eval.paper` mean "none"), and notes.

    The numbers stand beside the rows only when the run is in the setting
    `eval.paper_setting` names (`capjax.eval.paper_match`: dataset, target, variant);
    otherwise none do, and a note says what differs.
    """
    paper = config.eval.get("paper") or {}
    ids = paper_suites.PURIFIER_PAPER_ROWS
    rows = {ids[k]: v for k, v in paper.items() if k in ids and v >= 0}
    if not rows:
        return None, []
    setting = config.eval.get("paper_setting")
    setting = setting.to_dict() if setting is not None else {}
    why = paper_match.mismatches(setting, paper_match.run_facts(config.to_dict(), dataset_name))
    if why:
        return None, [f"No paper numbers: {'; '.join(why)}."]
    return rows, []


def dunet_from_config(section, dtype) -> DUNet:
    """The DUNET denoiser a purifier section's `denoiser` field describes (CAFD, HGD)."""
    d = section.denoiser
    return DUNet(
        widths=tuple(d.widths),
        encoder_blocks=tuple(d.encoder_blocks),
        decoder_blocks=tuple(d.decoder_blocks),
        dtype=dtype,
    )


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


def cam_figure(trainer: Any, state: Any) -> FigureExtra:
    """(x, x_adv) -> the figure's extra rows: f's class activation maps of x, x_adv and the
    purified x_adv (each for its own predicted class), the maps CAFD aligns."""
    cam = zoo_class_activation_fn(trainer.target, trainer.target_variables, kind="map")
    purify = trainer.purify(state)

    def extra(x, x_adv):
        maps = {"clean": cam(x), "adversarial": cam(x_adv), "purified": cam(purify(x_adv))}
        return {f"cam {name}": _as_map(value) for name, value in maps.items()}

    return extra


def _as_map(cams: jax.Array) -> jax.Array:
    """(N, H, W[, C]) class activation maps or features -> (N, H, W) in [0, 1]."""
    cams = cams.sum(-1) if cams.ndim == 4 else cams
    low = cams.min(axis=(1, 2), keepdims=True)
    high = cams.max(axis=(1, 2), keepdims=True)
    return (cams - low) / jnp.maximum(high - low, 1e-12)


def purifier_report_rows(config, dataset_name: str | None) -> tuple[dict[str, dict], list[str]]:
    """`paper_suites.purifier_rows(eval.pgd)`, with `eval.paper`'s numbers where they apply."""
    rows = paper_suites.purifier_rows(config.eval.pgd)
    paper, notes = paper_rows(config, dataset_name)
    for row_id, value in (paper or {}).items():
        rows[row_id]["paper"] = value
    return rows, notes


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    task: str,
    make_trainer: MakeTrainer,
    fingerprint: dict[str, Any],
    title: str,
    purifier_weights: Callable[[Any], Any],
    rows: ReportRows = purifier_report_rows,
    figure_extra: Callable[[Any, Any], FigureExtra] = cam_figure,
    extra_results: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Target (trained or restored), purifier (trained or resumed), evaluation and report.

    Every trained-purifier task ends here, and evaluates through the suite
    (`capjax.eval.evaluate.evaluate_defense`): its rows resume, the sanity checks run, and the
    report has the suite's layout.

    Args:
      title: the defense's name in the report and the progress bars.
      purifier_weights: state -> the purifier's parameters (with f's, they fingerprint the
        defense, so saved rows are reused only for the same weights).
      rows: (config, dataset name) -> (plain row dicts, paper notes); by default
        `purifier_report_rows`.
      figure_extra: (trainer, state) -> extra rows of the examples figure.
      extra_results: more task facts for `results.json`'s settings.

    Returns:
      The payload of `results.json` (`capjax.eval.report.write_report`), with the task facts.
    """
    mesh = mesh_lib.make_mesh()
    if AdversarialTraining.from_config(config.train) is not None:
        raise ConfigError(
            f"train.adversarial applies to classifier training, not to the {task} purifier; "
            f"to defend an adversarially trained target, set target.train.adversarial."
        )
    dataset = data_lib.load_from_config(config, workdir)
    trainer, result = train_purifier(
        config,
        workdir,
        dataset,
        mesh,
        make_trainer=make_trainer,
        fingerprint=fingerprint,
        title=title,
    )
    report_rows, notes = rows(config, paper_match.dataset_of(config.data.to_dict()))
    surrogate = None
    if needs_surrogate(report_rows):
        s_model, s_variables = prepare_surrogate(config, workdir, dataset, mesh)
        surrogate = Defense(
            name="surrogate f'",
            classifier=classifier_lib.eval_logits_fn(s_model, s_variables),
            fingerprint=weights_fingerprint(s_variables),
        )
    target_variables = trainer.target_variables
    defense = Defense(
        name=title,
        classifier=classifier_lib.eval_logits_fn(trainer.target, target_variables),
        purify=keyed(trainer.purify(result.state)),
        fingerprint=weights_fingerprint(purifier_weights(result.state), target_variables),
    )
    facts = {
        "task": task,
        "purifier_steps": result.step,
        "target": config.target.model.name,
        **(extra_results or {}),
    }
    results = evaluate_defense(
        defense=defense,
        surrogate=surrogate,
        dataset=dataset,
        eval_config=config.eval,
        workdir=workdir,
        seed=config.seed,
        mesh=mesh,
        title=title,
        figure_extra=figure_extra(trainer, result.state),
        settings=facts,
        rows=report_rows,
        paper_notes=notes,
    )
    return {**results, **facts}


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
    dataset = data_lib.load_from_config(config, workdir)
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
    return trainer.purify(state), classifier_lib.eval_logits_fn(
        trainer.target, trainer.target_variables
    )


@dataclasses.dataclass(frozen=True)
class PurifierTask:
    """What a trained-purifier task supplies, and the `run` and `load_purifier` that every
    such task (CAFD, CAP-GAN, HGD, APE-GAN) shares.

    Attributes:
      name: `config.task`.
      validate: config -> None; raises ConfigError on what can be checked before any data is
        loaded or anything trains (its training attack, names, dtypes).
      make_trainer: (config, target model, target variables, steps per epoch) -> trainer.
      fingerprint: config -> the fields a checkpoint must match to be resumed or loaded.
      title: config -> the defense's name in the report, the progress bars and errors.
      purifier_weights: state -> the purifier's parameters (see `train_and_evaluate`).
      facts: config -> more task facts for `results.json`'s settings.
      rows, figure_extra: as in `train_and_evaluate`.
    """

    name: str
    validate: Callable[[ml_collections.ConfigDict], None]
    make_trainer: MakeTrainer
    fingerprint: Callable[[ml_collections.ConfigDict], dict[str, Any]]
    title: Callable[[ml_collections.ConfigDict], str]
    purifier_weights: Callable[[Any], Any]
    facts: Callable[[ml_collections.ConfigDict], dict[str, Any]] = lambda config: {}
    rows: ReportRows = purifier_report_rows
    figure_extra: Callable[[Any, Any], FigureExtra] = cam_figure

    def run(self, config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
        """The task's entry point: target, purifier, evaluation; the results dict."""
        self.validate(config)
        return train_and_evaluate(
            config,
            workdir,
            task=self.name,
            make_trainer=self.make_trainer,
            fingerprint=self.fingerprint(config),
            title=self.title(config),
            purifier_weights=self.purifier_weights,
            rows=self.rows,
            figure_extra=self.figure_extra,
            extra_results=self.facts(config),
        )

    def load_purifier(self, config: ml_collections.ConfigDict, workdir: str):
        """(purify, classifier logits_fn) of the finished run in `workdir`, for attacks and
        evaluation.

        Raises:
          ValueError: a bad setting, the run has not finished, or its checkpoints belong to
            another config.
        """
        self.validate(config)
        return load_finished_purifier(
            config,
            workdir,
            make_trainer=self.make_trainer,
            fingerprint=self.fingerprint(config),
            title=self.title(config),
        )
