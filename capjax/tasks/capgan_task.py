"""The CAP-GAN task: target and surrogate classifiers, the GAN pair, the evaluation.

    python -m capjax.main --config=configs/capgan_cifar.py --workdir=DIR

Stages, each resumable and skipped once finished:
1. the target classifier f (ResNet-18 by default) in `DIR/target`, unless
   `config.target.workdir` names a finished classifier run;
2. T_A->C, T_C->A, D_C and D_A (`capjax.defenses.capgan`) in `DIR/checkpoints`;
3. the surrogate f' (f's recipe, another seed) in `DIR/surrogate` when a row of the
   evaluation needs it (black-box transfer), unless `config.surrogate.workdir` names one;
4. the evaluation suite (`capjax.eval`) on `config.eval.rows`: `results.json`, `report.md`,
   PNG figures, and sanity checks, in DIR (finished rows are not redone).
"""

from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp

from capjax.attack_specs import AttackFn, training_attack
from capjax.core.dtypes import parse_dtype
from capjax.defenses.capgan import DOMAIN_ATTACKS, CAPGANTrainer, LossWeights
from capjax.eval.evaluate import plain_rows
from capjax.eval.paper_match import run_facts
from capjax.eval.paper_suites import attach_paper_numbers
from capjax.models.capgan_nets import AttentionGenerator, MultiScaleDiscriminator
from capjax.tasks.purifier_task import PurifierTask
from capjax.train.optim import optimizer_from_config, schedule_from_config


def build_attack(config) -> AttackFn:
    """`capgan.domain.attack`, the attack that crafts domain A, built and checked."""
    return training_attack(
        config.capgan.domain.attack, "capgan.domain.attack", names=DOMAIN_ATTACKS
    )


def validate(config) -> None:
    """The CAP-GAN section's checks that need no data, before any training."""
    build_attack(config)
    parse_dtype(config.capgan.dtype, "capgan.dtype")
    LossWeights(**config.capgan.loss.to_dict())


def make_trainer(config, target_model, target_variables, steps_per_epoch: int) -> CAPGANTrainer:
    """The trainer a config describes, around a trained target f."""
    c, t = config.capgan, config.train
    schedule = schedule_from_config(t, steps_per_epoch)

    dtype = parse_dtype(c.dtype, "capgan.dtype")
    return CAPGANTrainer(
        generator=AttentionGenerator(
            base_width=c.generator.base_width,
            num_downsamples=c.generator.num_downsamples,
            num_blocks=c.generator.num_blocks,
            stem_kernel=c.generator.stem_kernel,
            residual=c.generator.residual,
            light=c.generator.get("light", True),
            dtype=dtype,
        ),
        discriminator=MultiScaleDiscriminator(
            base_width=c.discriminator.base_width,
            scales=tuple(c.discriminator.scales),
            spectral_norm=c.discriminator.spectral_norm,
            dtype=dtype,
        ),
        target=target_model,
        target_variables=target_variables,
        generator_tx=optimizer_from_config(t, schedule),
        discriminator_tx=optimizer_from_config(t, schedule),
        weights=LossWeights(**c.loss.to_dict()),
        schedule=schedule,
        attack=build_attack(config),
    )


# The rows a CAP-GAN run evaluates come from these paper suites (`paper_suites.capgan_default`).
CAPGAN_SUITES = "capgan_table1+capgan_table3+capgan_table4+capgan_table2"


def fingerprint(config) -> dict[str, Any]:
    """What identifies the trained weights: every setting of the loss, the networks and the
    adversarial domain (a checkpoint trained with another alpha or T is refused, not
    evaluated under the new title). The training schedule (epochs, learning rate) is left
    out so that a finished run can be resumed to train longer."""
    c = config.capgan
    return {
        "task": "capgan",
        "target": config.target.model.name,
        "loss": json.dumps(c.loss.to_dict(), sort_keys=True),
        "generator": json.dumps(c.generator.to_dict(), sort_keys=True),
        "discriminator": json.dumps(c.discriminator.to_dict(), sort_keys=True),
        "domain": json.dumps(c.domain.to_dict(), sort_keys=True),
    }


def attention_figure(trainer: CAPGANTrainer, state) -> Any:
    """(x, x_adv) -> the figure's extra rows: T_A->C's attention on x_adv, at image size."""
    params = state.generator_params["a2c"]

    def extra(x: jax.Array, x_adv: jax.Array) -> dict[str, jax.Array]:
        _, _, heatmap = trainer.translate(params, x_adv)
        n, h, w = x.shape[:3]
        heatmap = jax.image.resize(heatmap.astype(jnp.float32), (n, h, w), "bilinear")
        low = heatmap.min(axis=(1, 2), keepdims=True)
        high = heatmap.max(axis=(1, 2), keepdims=True)
        return {"attention (T_A->C)": (heatmap - low) / jnp.maximum(high - low, 1e-12)}

    return extra


def report_rows(config, dataset_name: str | None) -> tuple[dict[str, dict], list[str]]:
    """`eval.rows`, each with the paper's number where the run is in the paper's setting."""
    facts = run_facts(config.to_dict(), dataset_name)
    return attach_paper_numbers(plain_rows(config.eval.rows), CAPGAN_SUITES, "capgan", facts)


def _ablation_suffix(loss) -> str:
    off = [
        name
        for name, on in (("CAM", loss.use_cam), ("sem", loss.use_sem), ("cycle", loss.use_cycle))
        if not on
    ]
    extra = f" (without {', '.join(off)})" if off else ""
    return extra + f", alpha {loss.alpha:g}, T {loss.temperature:g}"


TASK = PurifierTask(
    name="capgan",
    validate=validate,
    make_trainer=make_trainer,
    fingerprint=fingerprint,
    title=lambda config: "CAP-GAN" + _ablation_suffix(config.capgan.loss),
    purifier_weights=lambda state: state.generator_params["a2c"],
    facts=lambda config: {"loss": config.capgan.loss.to_dict()},
    rows=report_rows,
    figure_extra=attention_figure,
)
run = TASK.run  # f, the GAN pair, f' (if the evaluation needs it), the evaluation
load_purifier = TASK.load_purifier
