"""Shared defaults for experiment configs (`configs/*.py` build on these).

Configs hold plain values only (strings, numbers, lists); models, data sources and attacks
are chosen by registry name. Every config is locked before use, so a misspelt field on the
command line is an error rather than a silent no-op.
"""

from __future__ import annotations

import ml_collections


def data_config(source: str = "synthetic", name: str | None = None) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "source": source,  # "tfds" | "folder" | "synthetic"
            "name": name,  # tfds dataset name (cifar10, svhn_cropped); unused otherwise
            "dir": None,  # image-folder root, or tfds data_dir (None: tfds default)
            "cache_dir": None,  # decoded image-folder cache (None: <workdir>/data_cache)
            "num_train": 0,  # > 0: keep only the first n training examples
            "num_test": 0,  # > 0: keep only the first n test examples
            "augment": {"crop_padding": 4, "flip": True},
        }
    )


def model_config(name: str, **kwargs) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "name": name,  # classifier registry name: tiny, vgg19, resnet18, wrn28_10, ...
            "dtype": "float32",  # compute dtype (bfloat16 on accelerators)
            "param_dtype": "float32",
            "mean": ml_collections.FieldReference(None, field_type=tuple),
            "std": ml_collections.FieldReference(None, field_type=tuple),
            "kwargs": kwargs,  # extra constructor options (e.g. widths of the tiny CNN)
        }
    )


def train_config(**overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(
        {
            "epochs": 200,
            "batch_size": 128,  # global, over all devices and processes
            "eval_batch_size": 512,
            "optimizer": "sgd",
            "learning_rate": 0.1,
            "momentum": 0.9,
            "nesterov": False,
            "weight_decay": 5e-4,
            "schedule": "step",  # constant | step | cosine
            "milestones": [60, 120, 160],  # epochs, for the step schedule
            "gamma": 0.2,
            "warmup_epochs": 0.0,
            "label_smoothing": 0.0,
            "log_every_steps": 50,
            "checkpoint_every_steps": 0,  # 0: every epoch
            "keep_checkpoints": 3,
            "eval_every_epochs": 0,  # 0: only at the end
        }
    )
    config.update(overrides)
    return config


def classifier_config(
    *, data: ml_collections.ConfigDict, model: ml_collections.ConfigDict, **train_overrides
) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "task": "classifier",
            "seed": 0,
            "data": data,
            "model": model,
            "train": train_config(**train_overrides),
        }
    )


def parse_variant(arg: str | None) -> dict[str, str]:
    """`"smoke,model=resnet18"` -> {"smoke": "", "model": "resnet18"}."""
    variant: dict[str, str] = {}
    for part in (arg or "").split(","):
        part = part.strip()
        if part:
            key, _, value = part.partition("=")
            variant[key.strip()] = value.strip()
    return variant


def check_variant(variant: dict[str, str], known: set[str], config_file: str) -> None:
    unknown = set(variant) - known
    if unknown:
        raise ValueError(
            f"Unknown variant {sorted(unknown)} for {config_file}; known: {sorted(known)}."
        )


def shrink_to_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The `:smoke` variant of a classifier config: synthetic data, one short epoch.

    Runs in seconds on a CPU, so tests drive every config through `capjax.main`.
    """
    config.data.source = "synthetic"
    config.data.num_train = 256
    config.data.num_test = 128
    config.train.epochs = 1
    config.train.batch_size = 64
    config.train.eval_batch_size = 128
    config.train.log_every_steps = 2
    if config.model.name == "tiny":
        config.model.kwargs = {"widths": (8, 16, 32)}
    return config
