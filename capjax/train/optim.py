"""Learning-rate schedules and optimizers built from config fields."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import optax

from capjax.core.errors import ConfigError

SCHEDULES = ("constant", "step", "cosine", "linear_tail")
OPTIMIZERS = ("sgd", "adam")


def learning_rate_schedule(
    *,
    base: float,
    kind: str,
    steps_per_epoch: int,
    total_steps: int,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
    decay_start: float = 0.5,
) -> optax.Schedule:
    """A schedule over optimizer steps.

    Args:
      base: peak learning rate.
      kind: "constant", "step" (multiply by `gamma` at each epoch in `milestones`) or
        "cosine" (to zero at `total_steps`) or "linear_tail" (constant, then linear to zero
        from the fraction `decay_start` of training: U-GAT-IT's and CycleGAN's).
      steps_per_epoch: converts epochs to steps.
      total_steps: length of training.
      milestones: epochs at which a step schedule decays.
      gamma: the step schedule's factor.
      warmup_epochs: linear warm-up from 0, prepended to any kind.
      decay_start: where the linear_tail schedule starts decaying, a fraction in [0, 1].
    """
    if kind not in SCHEDULES:
        raise ConfigError(f"Unknown train.schedule {kind!r}; choose one of {SCHEDULES}.")
    warmup = int(round(warmup_epochs * steps_per_epoch))
    remaining = max(total_steps - warmup, 1)
    if kind == "constant":
        main = optax.constant_schedule(base)
    elif kind == "step":
        boundaries = {
            int(m * steps_per_epoch) - warmup: gamma
            for m in milestones
            if 0 < int(m * steps_per_epoch) - warmup
        }
        main = optax.piecewise_constant_schedule(base, boundaries)
    elif kind == "cosine":
        main = optax.cosine_decay_schedule(base, remaining)
    else:
        if not 0.0 <= decay_start <= 1.0:
            raise ConfigError(f"train.decay_start={decay_start} must be a fraction in [0, 1].")
        flat = int(round(decay_start * remaining))
        main = optax.join_schedules(
            [optax.constant_schedule(base), optax.linear_schedule(base, 0.0, remaining - flat)],
            [flat],
        )
    if not warmup:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), main], [warmup])


def make_optimizer(
    *,
    kind: str,
    schedule: optax.Schedule,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
) -> optax.GradientTransformation:
    """SGD (momentum, Nesterov) or Adam, with PyTorch-style L2 weight decay on every parameter
    but frozen ones (`decayed`).

    Weight decay is added to the gradient before the update (`optax.add_decayed_weights`),
    which is what `torch.optim.SGD(weight_decay=...)` does and what the papers' code used.
    """
    if kind not in OPTIMIZERS:
        raise ConfigError(f"Unknown optimizer {kind!r}; choose one of {OPTIMIZERS}.")
    if kind == "sgd":
        base = optax.sgd(schedule, momentum=momentum or None, nesterov=nesterov)
    else:
        base = optax.adam(schedule, b1=b1, b2=b2)
    if weight_decay:
        return optax.chain(optax.add_decayed_weights(weight_decay, mask=decayed), base)
    return base


def optimizer_from_config(train_config, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The optimizer a config's `train` section describes (optimizer, weight_decay, b1, b2,
    and momentum and nesterov where the section has them)."""
    t = train_config
    return make_optimizer(
        kind=t.optimizer,
        schedule=schedule,
        momentum=t.get("momentum", 0.9),
        nesterov=t.get("nesterov", False),
        weight_decay=t.weight_decay,
        b1=t.b1,
        b2=t.b2,
    )


def decayed(params):
    """The weight-decay mask: every parameter except frozen ones (named `frozen_*`, whose
    gradient the model stops, such as the speedrun CNN's whitening stem)."""

    def keep(path, _):
        return not any(str(getattr(k, "key", k)).startswith("frozen_") for k in path)

    return jax.tree_util.tree_map_with_path(keep, params)


def schedule_from_config(train_config, steps_per_epoch: int) -> optax.Schedule:
    """The schedule a config's `train` section describes (learning_rate, schedule, epochs,
    milestones, gamma, warmup_epochs)."""
    t = train_config
    return learning_rate_schedule(
        base=t.learning_rate,
        kind=t.schedule,
        steps_per_epoch=steps_per_epoch,
        total_steps=t.epochs * steps_per_epoch,
        milestones=tuple(t.milestones),
        gamma=t.gamma,
        warmup_epochs=t.warmup_epochs,
        decay_start=t.get("decay_start", 0.5),
    )
