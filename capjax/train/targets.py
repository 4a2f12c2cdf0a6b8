"""The frozen classifiers a defense task needs: its target f and a black-box surrogate f'.

A defense config has a `target` section ({workdir, model, train}) and, for tasks that
evaluate black-box transfer, a `surrogate` section ({workdir, seed_offset}): f' is trained
with f's recipe and seed `config.seed + seed_offset` unless `surrogate.workdir` names a
finished classifier run.
"""

from __future__ import annotations

import os

import ml_collections

from capjax import data as data_lib
from capjax.train import classifier as classifier_lib


def target_config(config: ml_collections.ConfigDict, seed_offset: int = 0):
    """The target's classifier config: the task's data and seed, the `target` section's rest."""
    return ml_collections.ConfigDict(
        {
            "task": "classifier",
            "seed": config.seed + seed_offset,
            "data": config.data,
            "model": config.target.model,
            "train": config.target.train,
        }
    )


def _prepare(config, source: str | None, train_dir: str, dataset, mesh, seed_offset: int):
    c = target_config(config, seed_offset)
    if source:
        return classifier_lib.restore_classifier(
            c, source, dataset.num_classes, dataset.image_shape
        )
    trainer, result, _ = classifier_lib.train_classifier(c, train_dir, dataset, mesh)
    return trainer.model, result.state.variables


def prepare_target(config, workdir: str, dataset: data_lib.Dataset, mesh):
    """(model, variables) of f: restored from `target.workdir`, or trained in `workdir/target`."""
    return _prepare(
        config, config.target.get("workdir"), os.path.join(workdir, "target"), dataset, mesh, 0
    )


def prepare_surrogate(config, workdir: str, dataset: data_lib.Dataset, mesh):
    """(model, variables) of f': from `surrogate.workdir`, or trained in `workdir/surrogate`."""
    s = config.surrogate
    return _prepare(
        config, s.get("workdir"), os.path.join(workdir, "surrogate"), dataset, mesh, s.seed_offset
    )


def restore_target(config, workdir: str, dataset: data_lib.Dataset):
    """(model, variables) of the f a finished task in `workdir` used."""
    source = config.target.get("workdir") or os.path.join(workdir, "target")
    return classifier_lib.restore_classifier(
        target_config(config), source, dataset.num_classes, dataset.image_shape
    )
