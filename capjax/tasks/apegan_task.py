"""The APE-GAN baseline task: target classifier, then the GAN, then the evaluation.

    python -m capjax.main --config=configs/apegan_cifar.py --workdir=DIR

Stages, each resumable and skipped once finished (`capjax.tasks.purifier_task`):
1. the target classifier (ResNet-18 by default, the CAP-GAN setting) in `DIR/target`, unless
   `config.target.workdir` names a finished classifier run to use;
2. APE-GAN's generator and discriminator (`capjax.defenses.apegan`) on training examples
   crafted against the target inside each step, in `DIR/checkpoints`;
3. the evaluation of the defended classifier through the suite
   (`capjax.eval.paper_suites.purifier_rows`): `results.json`, `report.md`, `accuracy.png`
   and `examples.png` in DIR.
"""

from __future__ import annotations

from typing import Any

from capjax.attack_specs import AttackFn, training_attack
from capjax.core.dtypes import parse_dtype
from capjax.core.errors import ConfigError
from capjax.defenses.apegan import APEGANTrainer
from capjax.defenses.purifier_parts import TRAINING_ATTACKS
from capjax.models.apegan_nets import UPSAMPLING, APEGANDiscriminator, APEGANGenerator
from capjax.tasks.purifier_task import PurifierTask
from capjax.train.optim import optimizer_from_config, schedule_from_config

TITLE = "APE-GAN"


def validate(config) -> None:
    """The APE-GAN section's names, checked before any training."""
    a = config.apegan
    if a.generator.upsampling not in UPSAMPLING:
        raise ConfigError(
            f"Unknown apegan.generator.upsampling {a.generator.upsampling!r}; choose one of "
            f"{UPSAMPLING}."
        )
    build_attack(config)  # the check
    parse_dtype(a.dtype, "apegan.dtype")


def build_attack(config) -> AttackFn:
    """`apegan.attack`, built and checked (`capjax.attack_specs.training_attack`)."""
    return training_attack(config.apegan.attack, "apegan.attack", names=TRAINING_ATTACKS)


def make_trainer(config, target_model, target_variables, steps_per_epoch: int) -> APEGANTrainer:
    """The trainer a config describes, around a trained target."""
    a, t = config.apegan, config.train
    schedule = schedule_from_config(t, steps_per_epoch)

    dtype = parse_dtype(a.dtype, "apegan.dtype")
    return APEGANTrainer(
        generator=APEGANGenerator(
            widths=tuple(a.generator.widths), upsampling=a.generator.upsampling, dtype=dtype
        ),
        discriminator=APEGANDiscriminator(widths=tuple(a.discriminator.widths), dtype=dtype),
        target=target_model,
        target_variables=target_variables,
        generator_tx=optimizer_from_config(t, schedule),
        discriminator_tx=optimizer_from_config(t, schedule),
        schedule=schedule,
        mse_weight=a.mse_weight,
        gan_weight=a.gan_weight,
        attack=build_attack(config),
    )


def fingerprint(config) -> dict[str, Any]:
    return {
        "task": "apegan",
        "target": config.target.model.name,
        "attack": config.apegan.attack.name,
    }


TASK = PurifierTask(
    name="apegan",
    validate=validate,
    make_trainer=make_trainer,
    fingerprint=fingerprint,
    title=lambda config: TITLE,
    purifier_weights=lambda state: state.generator_params,
    facts=lambda config: {"attack": config.apegan.attack.to_dict()},
)
run = TASK.run  # target, generator and discriminator, evaluation; the results dict
load_purifier = TASK.load_purifier
