"""Training any zoo classifier on any data source, and restoring it from its workdir.

The classifier task (`capjax.tasks.classifier_task`) and every task that needs a target
classifier build, train and restore it through these functions.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from capjax import data as data_lib
from capjax.core import mesh as mesh_lib
from capjax.core.dtypes import parse_dtype
from capjax.core.errors import ConfigError
from capjax.metrics import accuracy
from capjax.models import classifier_names, get_classifier
from capjax.train.adversarial import AdversarialTraining, adversarial_fingerprint
from capjax.train.checkpoint import Checkpointer, abstract_on, state_fingerprint
from capjax.train.loop import FitResult, LoopConfig, fit
from capjax.train.optim import optimizer_from_config, schedule_from_config


@flax.struct.dataclass
class ClassifierState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any

    @property
    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats}


def build_classifier(model_config: ml_collections.ConfigDict, num_classes: int):
    """The Flax classifier a `model` config section describes."""
    if model_config.name not in classifier_names():
        raise ConfigError(
            f"Unknown model.name {model_config.name!r}; registered classifiers: "
            f"{', '.join(classifier_names())}."
        )
    kwargs = dict(model_config.get("kwargs", {}) or {})
    for field in ("mean", "std"):
        if model_config.get(field) is not None:
            kwargs[field] = tuple(model_config[field])
    model = get_classifier(
        model_config.name,
        num_classes=num_classes,
        dtype=parse_dtype(model_config.dtype, "model.dtype"),
        param_dtype=parse_dtype(model_config.param_dtype, "model.param_dtype", allow_auto=False),
        **kwargs,
    )
    levels = model_config.get("thermometer_levels", 0) or 0
    if levels:
        # Thermometer encoding (Buckman et al., 2018): the classifier sees the L-bit code of
        # each pixel; its variables are the zoo model's, the first conv L times wider.
        from capjax.defenses.thermometer import ThermometerInput

        return ThermometerInput(model, levels=levels)
    return model


def validate_config(config: ml_collections.ConfigDict, mesh) -> None:
    """Name and size checks that must fail before any data loading or compilation."""
    if config.data.source not in data_lib.SOURCES:
        raise ConfigError(
            f"Unknown data.source {config.data.source!r}; choose one of {data_lib.SOURCES}."
        )
    if config.model.name not in classifier_names():
        raise ConfigError(
            f"Unknown model.name {config.model.name!r}; registered classifiers: "
            f"{', '.join(classifier_names())}."
        )
    parse_dtype(config.model.dtype, "model.dtype")
    parse_dtype(config.model.param_dtype, "model.param_dtype", allow_auto=False)
    mesh_lib.check_global_batch(config.train.batch_size, mesh)
    mesh_lib.check_global_batch(config.train.eval_batch_size, mesh, "train.eval_batch_size")
    AdversarialTraining.from_config(config.train)  # raises on a bad train.adversarial


@dataclasses.dataclass
class ClassifierTrainer:
    """The pure pieces of classifier training, for the generic loop and for later tasks.

    With `adversarial` set, each step trains on PGD examples of its augmented batch
    (`capjax.train.adversarial`) and logs `accuracy` (clean) and `adversarial_accuracy`.
    """

    model: Any
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    label_smoothing: float = 0.0
    crop_padding: int = 4
    flip: bool = True
    adversarial: AdversarialTraining | None = None
    # Data-dependent parameters that replace the initialiser's ({name: array}, from the
    # model's `fit_to_data`: the speedrun CNN's whitening stem); {} for a restore, where the
    # checkpoint has them.
    fitted_params: dict = dataclasses.field(default_factory=dict)

    def init_state(self, key: jax.Array, image_shape: tuple[int, ...]) -> ClassifierState:
        variables = self.model.init(key, jnp.zeros((1, *image_shape), jnp.float32))
        params = variables["params"]
        if self.fitted_params:
            params = dict(params)
            for name, value in self.fitted_params.items():
                params[name] = jnp.asarray(value, params[name].dtype)
        return ClassifierState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=self.tx.init(params),
        )

    def loss(self, params, batch_stats, images, labels, key):
        """Mean (label-smoothed) cross-entropy in train mode; returns (loss, (logits, stats))."""
        logits, updates = self.model.apply(
            {"params": params, "batch_stats": batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": key},
        )
        targets = jax.nn.one_hot(labels, logits.shape[-1])
        if self.label_smoothing:
            targets = optax.smooth_labels(targets, self.label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        return loss, (logits, updates.get("batch_stats", batch_stats))

    def train_step(self, state: ClassifierState, batch, key):
        """One SGD step on an augmented batch: (state, batch, key) -> (state, metrics)."""
        aug_key, dropout_key = jax.random.split(key)
        images = data_lib.augment_batch(
            batch["image"], aug_key, crop_padding=self.crop_padding, flip=self.flip
        )
        clean_logits = None
        if self.adversarial is not None:
            images, clean_logits = self.adversarial.perturb(
                self.model, state.variables, images, batch["label"], jax.random.fold_in(key, 1)
            )
        grad_fn = jax.value_and_grad(self.loss, has_aux=True)
        (loss, (logits, batch_stats)), grads = grad_fn(
            state.params, state.batch_stats, images, batch["label"], dropout_key
        )
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
            "learning_rate": self.schedule(state.step),
        }
        if clean_logits is not None:  # the step's own logits were the adversarial batch's
            metrics["adversarial_accuracy"] = metrics["accuracy"]
            metrics["accuracy"] = jnp.mean(jnp.argmax(clean_logits, -1) == batch["label"])
        new_state = ClassifierState(state.step + 1, params, batch_stats, opt_state)
        return new_state, metrics

    def logits_fn(self, variables) -> Callable[[jax.Array], jax.Array]:
        """x in [0, 1] -> logits, in eval mode (batch statistics frozen)."""
        return eval_logits_fn(self.model, variables)


def eval_logits_fn(model, variables) -> Callable[[jax.Array], jax.Array]:
    """`x -> model.apply(variables, x, train=False)`: the classifier as attacks see it."""
    return lambda x: model.apply(variables, x, train=False)


def make_trainer(config, steps_per_epoch: int, num_classes: int) -> ClassifierTrainer:
    t = config.train
    schedule = schedule_from_config(t, steps_per_epoch)
    return ClassifierTrainer(
        model=build_classifier(config.model, num_classes),
        tx=optimizer_from_config(t, schedule),
        schedule=schedule,
        label_smoothing=t.label_smoothing,
        crop_padding=config.data.augment.crop_padding,
        flip=config.data.augment.flip,
        adversarial=AdversarialTraining.from_config(t),
    )


def fingerprint(config) -> dict[str, Any]:
    fp = {
        "task": "classifier",
        "model": config.model.name,
        "adversarial": adversarial_fingerprint(config.train),
    }
    if config.data.get("validation"):  # trained without the held-out images: another model
        fp["validation"] = int(config.data.validation)
    return fp


def train_batches(dataset: data_lib.Dataset, config) -> data_lib.BatchIterator:
    """This process's share of the shuffled training batches of `config.train.batch_size`."""
    return data_lib.BatchIterator(
        dataset.train_images,
        dataset.train_labels,
        global_batch_size=config.train.batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


# How many training images a data-dependent init (`fit_to_data`) sees: airbench's whitening
# estimate uses 5,000.
FIT_IMAGES = 5000


def train_classifier(
    config: ml_collections.ConfigDict,
    workdir: str,
    dataset: data_lib.Dataset | None = None,
    mesh=None,
    on_step_end: Callable[[int], None] | None = None,
) -> tuple[ClassifierTrainer, FitResult, data_lib.Dataset]:
    """Trains (or resumes, or finds finished) the classifier described by `config`."""
    mesh = mesh_lib.make_mesh() if mesh is None else mesh
    validate_config(config, mesh)
    dataset = data_lib.load_from_config(config, workdir) if dataset is None else dataset
    batches = train_batches(dataset, config)
    trainer = make_trainer(config, batches.steps_per_epoch, dataset.num_classes)
    if hasattr(trainer.model, "fit_to_data"):
        trainer.fitted_params = trainer.model.fit_to_data(dataset.train_images[:FIT_IMAGES])
    image_shape = dataset.train_images.shape[1:]
    t = config.train

    def evaluate(state):
        logits_fn = trainer.logits_fn(state.variables)
        acc = accuracy(
            logits_fn,
            dataset.test_images,
            dataset.test_labels,
            batch_size=t.eval_batch_size,
            mesh=mesh,
        )
        return {"accuracy": acc}

    result = fit(
        init_state=lambda key: trainer.init_state(key, image_shape),
        train_step=trainer.train_step,
        batches=batches,
        workdir=workdir,
        config=LoopConfig.from_train_config(
            t, batches.steps_per_epoch, seed=config.seed, description=f"train {config.model.name}"
        ),
        fingerprint=fingerprint(config),
        evaluate=evaluate,
        mesh=mesh,
        run_config=json.loads(config.to_json_best_effort()),
        feed=config.data.get("feed", "auto"),
        on_step_end=on_step_end,
    )
    return trainer, result, dataset


def restore_classifier(
    config: ml_collections.ConfigDict, workdir: str, num_classes: int, image_shape: tuple[int, ...]
):
    """(model, variables) of the classifier a finished `classifier` run left in `workdir`.

    Raises:
      ValueError: no checkpoint there, or it belongs to another model.
    """
    model = build_classifier(config.model, num_classes)
    trainer = ClassifierTrainer(
        model=model,
        tx=make_trainer(config, 1, num_classes).tx,
        schedule=optax.constant_schedule(0.0),
    )
    abstract = jax.eval_shape(lambda k: trainer.init_state(k, image_shape), jax.random.key(0))
    target = abstract_on(abstract, mesh_lib.replicated(mesh_lib.make_mesh()))
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        if checkpointer.latest_step() is None:
            raise ConfigError(f"No classifier checkpoint in {workdir}/checkpoints.")
        state, _ = checkpointer.restore(
            target, dict(fingerprint(config), **state_fingerprint(abstract))
        )
    finally:
        checkpointer.close()
    return model, state.variables
