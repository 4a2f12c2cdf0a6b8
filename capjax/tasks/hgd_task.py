"""The HGD baseline task: target classifier, then the guided denoiser, then the evaluation.

    python -m capjax.main --config=configs/hgd_cifar.py --workdir=DIR

Stages, each resumable and skipped once finished (`capjax.tasks.purifier_task`):
1. the target classifier (ResNet-18 by default, the CAP-GAN setting) in `DIR/target`, unless
   `config.target.workdir` names a finished classifier run to use;
2. the DUNET denoiser trained with HGD's guided loss (`capjax.defenses.hgd`) on training
   examples crafted against the target inside each step, in `DIR/checkpoints`;
3. the evaluation of the defended classifier through the suite
   (`capjax.eval.paper_suites.purifier_rows`): `results.json`, `report.md`, `accuracy.png`
   and `examples.png` in DIR.
"""

from __future__ import annotations

from typing import Any

from capjax.attack_specs import AttackFn, training_attack
from capjax.core.dtypes import parse_dtype
from capjax.core.errors import ConfigError
from capjax.defenses.hgd import GUIDED_LOSSES, HGDTrainer
from capjax.defenses.purifier_parts import TRAINING_ATTACKS
from capjax.tasks.purifier_task import PurifierTask, dunet_from_config
from capjax.train.optim import optimizer_from_config, schedule_from_config

TITLES = {"logits": "HGD (LGD)", "features": "HGD (FGD)"}


def validate(config) -> None:
    """The HGD section's names, checked before any training."""
    if config.hgd.loss not in GUIDED_LOSSES:
        raise ConfigError(f"Unknown hgd.loss {config.hgd.loss!r}; choose one of {GUIDED_LOSSES}.")
    build_attack(config)  # the check
    parse_dtype(config.hgd.dtype, "hgd.dtype")


def build_attack(config) -> AttackFn:
    """`hgd.attack`, built and checked (`capjax.attack_specs.training_attack`)."""
    return training_attack(config.hgd.attack, "hgd.attack", names=TRAINING_ATTACKS)


def make_trainer(config, target_model, target_variables, steps_per_epoch: int) -> HGDTrainer:
    """The trainer a config describes, around a trained target."""
    h, t = config.hgd, config.train
    schedule = schedule_from_config(t, steps_per_epoch)
    return HGDTrainer(
        denoiser=dunet_from_config(h, parse_dtype(h.dtype, "hgd.dtype")),
        target=target_model,
        target_variables=target_variables,
        tx=optimizer_from_config(t, schedule),
        schedule=schedule,
        loss=h.loss,
        attack=build_attack(config),
    )


def fingerprint(config) -> dict[str, Any]:
    return {
        "task": "hgd",
        "target": config.target.model.name,
        "loss": config.hgd.loss,
        "attack": config.hgd.attack.name,
    }


TASK = PurifierTask(
    name="hgd",
    validate=validate,
    make_trainer=make_trainer,
    fingerprint=fingerprint,
    title=lambda config: TITLES[config.hgd.loss],
    purifier_weights=lambda state: state.denoiser_params,
    facts=lambda config: {"loss": config.hgd.loss, "attack": config.hgd.attack.to_dict()},
)
run = TASK.run  # target, denoiser, evaluation; the results dict
load_purifier = TASK.load_purifier
