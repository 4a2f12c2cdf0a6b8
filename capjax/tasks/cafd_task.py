"""The CAFD task: target classifier, then the denoiser, then the evaluation, in one command.

    python -m capjax.main --config=configs/cafd_cifar.py --workdir=DIR

Stages, each resumable and skipped once finished:
1. the target classifier (VGG-19-BN by default) in `DIR/target`, unless
   `config.target.workdir` names a finished classifier run to use;
2. the CAFD denoiser and discriminator (`capjax.defenses.cafd`) in `DIR/checkpoints`;
3. the evaluation of the defended classifier through the suite
   (`capjax.eval.paper_suites.purifier_rows`): `results.json`, `report.md`, `accuracy.png`
   and `examples.png` (with f's class activation maps) in DIR.

The stages are the ones every trained-purifier task shares (`capjax.tasks.purifier_task`);
this module supplies CAFD's trainer, checkpoint fingerprint and figure.
"""

from __future__ import annotations

from typing import Any

from capjax.attack_specs import FeatureAttackFn, feature_attack
from capjax.core.dtypes import parse_dtype
from capjax.defenses.cafd import CAFDTrainer
from capjax.models.denoiser import CAFDDiscriminator
from capjax.tasks.purifier_task import PurifierTask, dunet_from_config
from capjax.train.optim import optimizer_from_config, schedule_from_config


def build_attack(config) -> FeatureAttackFn:
    """`cafd.attack`, CAFA, built and checked (`capjax.attack_specs.feature_attack`)."""
    return feature_attack(config.cafd.attack, "cafd.attack")


def validate(config) -> None:
    """The CAFD section's checks that need no data, before any training."""
    build_attack(config)
    parse_dtype(config.cafd.dtype, "cafd.dtype")


def make_trainer(config, target_model, target_variables, steps_per_epoch: int) -> CAFDTrainer:
    c, t = config.cafd, config.train
    schedule = schedule_from_config(t, steps_per_epoch)

    dtype = parse_dtype(c.dtype, "cafd.dtype")
    return CAFDTrainer(
        denoiser=dunet_from_config(c, dtype),
        discriminator=CAFDDiscriminator(
            widths=tuple(c.discriminator.widths), hidden=c.discriminator.hidden, dtype=dtype
        ),
        target=target_model,
        target_variables=target_variables,
        denoiser_tx=optimizer_from_config(t, schedule),
        discriminator_tx=optimizer_from_config(t, schedule),
        schedule=schedule,
        loss_form=c.loss_form,
        class_weights=c.class_weights,
        cam_classes=c.cam_classes,
        cam_normalize=c.cam_normalize,
        cam_normalize_order=c.cam_normalize_order,
        feature_source=c.feature_source,
        lambda_caf=c.lambda_caf,
        lambda_adv=c.lambda_adv,
        attack=build_attack(config),
    )


def fingerprint(config) -> dict[str, Any]:
    """The config fields a finished run's checkpoints must match to be resumed or loaded."""
    c = config.cafd
    return {
        "task": "cafd",
        "target": config.target.model.name,
        "loss_form": c.loss_form,
        "feature_source": c.feature_source,
        "cam_normalize_order": c.cam_normalize_order,
    }


TASK = PurifierTask(
    name="cafd",
    validate=validate,
    make_trainer=make_trainer,
    fingerprint=fingerprint,
    title=lambda config: "CAFD" if config.cafd.loss_form == "eq7" else "CAFD' (Eq. 6)",
    purifier_weights=lambda state: state.denoiser_params,
    facts=lambda config: {"loss_form": config.cafd.loss_form},
)
run = TASK.run  # target, denoiser, evaluation; the results dict
load_purifier = TASK.load_purifier
