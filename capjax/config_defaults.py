"""Shared defaults for experiment configs (`configs/*.py` build on these).

Configs hold plain values only (strings, numbers, lists); models, data sources and attacks
are chosen by registry name. Every config is locked before use, so a misspelt field on the
command line is an error rather than a silent no-op.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

from capjax.core.errors import ConfigError


def optional_str(value: str | None = None) -> ml_collections.FieldReference:
    """A string field that may be unset (None) and still be set from the command line.

    ml_collections refuses `--config.x=value` on a field whose value is a bare None (its type
    is NoneType); this field is typed `str` whatever its value.
    """
    field = placeholder(str)
    if value is not None:
        field.set(value)
    return field


def data_config(source: str = "synthetic", name: str | None = None) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "source": source,  # "tfds" | "folder" | "synthetic"
            "name": optional_str(name),  # tfds dataset name (cifar10, svhn_cropped)
            "dir": optional_str(),  # image-folder root, or tfds data_dir (None: tfds default)
            "cache_dir": optional_str(),  # image-folder cache (None: <workdir>/data_cache)
            "num_train": 0,  # > 0: keep only the first n training examples
            "num_test": 0,  # > 0: keep only the first n test examples
            # > 0: hold out the last n training images and evaluate on them instead of the
            # test split (tuning without the test set; `Dataset.holdout`).
            "validation": 0,
            "augment": {"crop_padding": 4, "flip": True},
            # "auto" | "device" | "host": "device" puts the training split on the
            # accelerators once and gathers each batch there; "auto" does so on GPU/TPU when
            # it fits in a quarter of one device's memory. Same batches either way.
            "feed": "auto",
        }
    )


def model_config(name: str, **kwargs) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "name": name,  # classifier registry name: tiny, vgg19, resnet18, wrn28_10, ...
            # Compute dtype: "auto" is bfloat16 on GPU/TPU and float32 on CPU; or name one
            # (float32, bfloat16, float16). Parameters and batch statistics stay float32.
            "dtype": "auto",
            "param_dtype": "float32",
            "mean": ml_collections.FieldReference(None, field_type=tuple),
            "std": ml_collections.FieldReference(None, field_type=tuple),
            "kwargs": kwargs,  # extra constructor options (e.g. widths of the tiny CNN)
            "thermometer_levels": 0,  # > 0: thermometer-encode the input (the THM baseline)
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
            "schedule": "step",  # constant | step | cosine | linear_tail
            "milestones": [60, 120, 160],  # epochs, for the step schedule
            "gamma": 0.2,
            "warmup_epochs": 0.0,
            "decay_start": 0.5,  # linear_tail: fraction of training before the linear decay
            "label_smoothing": 0.0,
            "log_every_steps": 50,
            "checkpoint_every_steps": 0,  # 0: every epoch
            "keep_checkpoints": 3,
            "eval_every_epochs": 0,  # 0: only at the end
            "b1": 0.9,  # Adam's betas (optimizer=adam)
            "b2": 0.999,
            # PGD adversarial training (Madry et al.) of a classifier; steps 0: off.
            "adversarial": {
                "steps": 0,
                "eps": 8 / 255,
                "step_size": 2 / 255,
                "random_start": True,
            },
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
        raise ConfigError(
            f"Unknown variant {sorted(unknown)} for {config_file}; known: {sorted(known)}."
        )


def shrink_to_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The `:smoke` variant of a classifier config: synthetic data, one short epoch (4 steps).

    The model is kept: seconds on a CPU for the tiny CNN, far longer for VGG-19, mostly
    compilation (times in docs/benchmarks.md). Tests drive every config through `capjax.main`.
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


def target_section(model_name: str) -> dict:
    """A purifier task's `target`: the classifier it protects, trained in `DIR/target` unless
    `target.workdir` names a finished classifier run."""
    return {"workdir": optional_str(), "model": model_config(model_name), "train": train_config()}


def purifier_eval(*, pgd_step_size: float, paper: dict[str, float]) -> dict:
    """A trained-purifier task's `eval` (CAFD, HGD, APE-GAN): the row preset
    `capjax.eval.paper_suites.purifier_rows` of PGD-40 at eps 8/255, on every test image.

    Args:
      pgd_step_size: PGD's step (the CAFD authors' 0.01; 2/255 for the CAP-GAN baselines).
      paper: the paper's accuracies ("clean", "pgd" and optionally "end_to_end"; negative:
        none), set beside the rows when the run is in `eval.paper_setting`.
    """
    return {
        # All 10,000 test images: on 1,000 (standard error near 1.1 points) a 2-point gap to a
        # paper is noise. report.md prints each row's 95% interval; --config.eval.num_examples=N
        # for a quick run.
        "num_examples": 10_000,
        "batch_size": 200,
        "pgd": {"eps": 8 / 255, "step_size": pgd_step_size, "steps": 40},
        "figure_examples": 6,
        "paper": dict(paper),
    }


def purifier_config(
    *, task: str, data_name: str, target_model: str, section: dict, train: dict, eval_config: dict
) -> ml_collections.ConfigDict:
    """The shape of every trained-purifier task's config: task, seed, data, target, the
    task's own section (named after the task), train (the purifier's) and eval."""
    return ml_collections.ConfigDict(
        {
            "task": task,
            "seed": 0,
            "data": data_config("tfds", data_name),
            "target": target_section(target_model),
            task: section,
            "train": train,
            "eval": eval_config,
        }
    )


def shrink_purifier_eval_to_smoke(config: ml_collections.ConfigDict) -> None:
    """A purifier task's evaluation in seconds: 64 images, PGD-3, no paper numbers."""
    config.eval.update({"num_examples": 64, "batch_size": 64, "figure_examples": 4})
    config.eval.pgd.steps = 3
    config.eval.paper = {k: -1.0 for k in config.eval.paper}  # synthetic data: nothing to compare


def cafd_config(*, data_name: str, lambda_caf: float) -> ml_collections.ConfigDict:
    """CAFD with the authors' code's defaults (docs/sources.md), on a tfds dataset."""
    return purifier_config(
        task="cafd",
        data_name=data_name,
        target_model="vgg19",
        section={
            "dtype": "auto",  # denoiser/discriminator compute dtype, as model.dtype
            "denoiser": {
                "widths": [64, 128, 256, 256, 256],
                "encoder_blocks": [2, 3, 3, 3, 3],
                "decoder_blocks": [3, 3, 3, 2],
            },
            "discriminator": {"widths": [32, 64, 128, 128], "hidden": 100},
            "loss_form": "eq7",  # eq7: CAFD; eq6: CAFD'
            "class_weights": "softmax",  # Eq. 7 weight rows: softmax | argmax (authors)
            "cam_classes": "clean",  # Eq. 6 classes: clean | own
            "cam_normalize": "per_image",  # per_image | batch (authors)
            # CAFA's maps: normalised after_upsampling | before_upsampling (authors).
            # P's features: head_input (the map the head pools) | last_conv (authors).
            # The authors' pair purified no better on real CIFAR-10 (the docstring of
            # capjax.defenses.cafd has the measurement).
            "cam_normalize_order": "after_upsampling",
            "feature_source": "head_input",
            "lambda_caf": lambda_caf,  # Eq. 10 lambda1
            "lambda_adv": 5e-3,  # Eq. 10 lambda2
            "attack": {"eps": 8 / 255, "step_size": 0.01, "steps": 100},
        },
        train=train_config(
            epochs=70,
            batch_size=300,
            optimizer="adam",
            learning_rate=1e-3,
            weight_decay=2e-4,
            schedule="step",
            milestones=[40, 50, 60],
            gamma=0.3,
            log_every_steps=20,
        ),
        # The paper's accuracies for this setting (clean and PGD, defended), if any.
        eval_config=purifier_eval(pgd_step_size=0.01, paper={"clean": -1.0, "pgd": -1.0}),
    )


def shrink_cafd_to_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Seconds on a CPU: synthetic data, tiny target/denoiser, CAFA-3, one short epoch each."""
    config.data.source = "synthetic"
    config.data.num_train = 256
    config.data.num_test = 128
    config.target.model.name = "tiny"
    config.target.model.kwargs = {"widths": (8, 16, 32)}
    config.target.train.update(
        {
            "epochs": 2,
            "batch_size": 64,
            "eval_batch_size": 128,
            "learning_rate": 0.05,
            "log_every_steps": 2,
        }
    )
    config.cafd.denoiser.widths = [8, 16, 16]
    config.cafd.denoiser.encoder_blocks = [1, 1, 1]
    config.cafd.denoiser.decoder_blocks = [1, 1]
    config.cafd.discriminator.widths = [8, 16]
    config.cafd.discriminator.hidden = 16
    config.cafd.attack.steps = 3
    config.train.update({"epochs": 1, "batch_size": 64, "log_every_steps": 2, "milestones": []})
    shrink_purifier_eval_to_smoke(config)
    return config


def capgan_config(*, data_name: str) -> ml_collections.ConfigDict:
    """CAP-GAN, with the gaps of the paper's text filled as docs/sources.md says."""
    from capjax.eval import paper_suites  # plain row dicts; imported here to keep this light

    return ml_collections.ConfigDict(
        {
            "task": "capgan",
            "seed": 0,
            "data": data_config("tfds", data_name),
            "target": target_section("resnet18"),
            # f': the black-box surrogate, the target's recipe with another seed.
            "surrogate": {
                "workdir": optional_str(),
                "seed_offset": 1,
            },
            "capgan": {
                "dtype": "float32",
                # stem_kernel: U-GAT-IT's 7x7 first/last conv; 3 in the CPU-sized configs.
                "generator": {
                    "base_width": 64,
                    "num_downsamples": 2,
                    "num_blocks": 4,
                    "stem_kernel": 7,
                    "residual": False,  # True: T starts as the identity (capjax's option)
                    # gamma/beta from pooled features (U-GAT-IT's --light; capjax's default);
                    # False: U-GAT-IT's default MLP on the flattened map.
                    "light": True,
                },
                "discriminator": {"base_width": 64, "scales": [3, 2], "spectral_norm": True},
                "loss": {
                    "adversarial": 1.0,
                    "cycle": 10.0,
                    "identity": 10.0,
                    "cam": 1000.0,
                    "semantic": 1.0,
                    "alpha": 0.7,
                    "temperature": 10.0,
                    "combine": "alpha",  # alpha: a*L_pixel + (1-a)*L_feature | sum
                    "use_cam": True,
                    "use_sem": True,
                    "use_cycle": True,
                },
                # Domain A, crafted against f inside every train step.
                "domain": {
                    "attack": {"name": "pgd", "eps": 8 / 255, "step_size": 2 / 255, "steps": 10}
                },
            },
            "train": train_config(
                epochs=50,
                batch_size=128,
                optimizer="adam",
                learning_rate=1e-4,
                b1=0.5,
                b2=0.999,
                weight_decay=1e-4,
                schedule="linear_tail",
                milestones=[],
                log_every_steps=20,
            ),
            "eval": {
                # All 10,000 test images: on 1,000 (standard error near 1.1 points) a 2-point
                # gap to a paper is noise. report.md prints each row's 95% interval;
                # --config.eval.num_examples=N for a quick run.
                "num_examples": 10_000,
                "batch_size": 200,
                "eot_samples": 8,
                "figure_examples": 6,
                "rows": paper_suites.capgan_default("capgan"),
            },
        }
    )


# The baselines' training examples (HGD, APE-GAN): PGD L-inf, eps 8/255, step 2/255, 10 steps;
# `:cw` variants train on CW-L2 (capjax's choice of its settings: the papers give none).
BASELINE_PGD = {"name": "pgd", "eps": 8 / 255, "step_size": 2 / 255, "steps": 10}
BASELINE_CW = {
    "name": "cw",
    "steps": 100,
    "binary_search_steps": 1,
    "initial_const": 1.0,
    "confidence": 0.0,
    "learning_rate": 0.01,
}


def baseline_config(
    *, task: str, data_name: str, section: dict, train: dict, paper: dict[str, float]
) -> ml_collections.ConfigDict:
    """A CAP-GAN paper baseline (HGD, APE-GAN): a ResNet-18 target, training examples crafted
    against it in every step (`attack`, `BASELINE_PGD` by default), and PGD-40 at eps 8/255,
    step 2/255 in the evaluation (the paper does not give its step).

    Args:
      section: the task's own section, without `attack`.
      paper: the paper's accuracies (negative: none): clean, PGD-40 white-box (purified) and
        end to end.
    """
    return purifier_config(
        task=task,
        data_name=data_name,
        target_model="resnet18",
        # The training examples: {"name": "pgd" | "fgsm" | "cw", options of that attack}.
        section={**section, "attack": dict(BASELINE_PGD)},
        train=train,
        eval_config=purifier_eval(pgd_step_size=2 / 255, paper=paper),
    )


def hgd_config(*, data_name: str) -> ml_collections.ConfigDict:
    """HGD: DUNET with the logits-guided loss, trained with CAFD's DUNET recipe."""
    return baseline_config(
        task="hgd",
        data_name=data_name,
        section={
            "dtype": "auto",  # denoiser compute dtype, as model.dtype
            "denoiser": {
                "widths": [64, 128, 256, 256, 256],
                "encoder_blocks": [2, 3, 3, 3, 3],
                "decoder_blocks": [3, 3, 3, 2],
            },
            "loss": "logits",  # logits: LGD | features: FGD
        },
        train=train_config(
            epochs=70,
            batch_size=128,
            optimizer="adam",
            learning_rate=1e-3,
            weight_decay=0.0,
            schedule="step",
            milestones=[40, 50, 60],
            gamma=0.3,
            log_every_steps=20,
        ),
        paper={"clean": 0.8768, "pgd": 0.8477, "end_to_end": 0.0001},
    )


def shrink_hgd_to_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Seconds on a CPU: synthetic data, tiny target and denoiser, 3-step attacks."""
    shrink_target_to_smoke(config)
    config.hgd.denoiser.widths = [8, 16, 16]
    config.hgd.denoiser.encoder_blocks = [1, 1, 1]
    config.hgd.denoiser.decoder_blocks = [1, 1]
    config.hgd.attack.steps = 3
    config.train.update({"epochs": 1, "batch_size": 64, "log_every_steps": 2, "milestones": []})
    shrink_purifier_eval_to_smoke(config)
    return config


def apegan_config(*, data_name: str) -> ml_collections.ConfigDict:
    """APE-GAN: the paper's networks, losses and optimizer."""
    return baseline_config(
        task="apegan",
        data_name=data_name,
        section={
            "dtype": "auto",  # generator/discriminator compute dtype, as model.dtype
            "generator": {"widths": [64, 128], "upsampling": "nearest"},  # | bilinear
            "discriminator": {"widths": [64, 128, 256]},
            "mse_weight": 0.7,  # xi1
            "gan_weight": 0.3,  # xi2
        },
        train=train_config(
            epochs=30,
            batch_size=128,
            optimizer="adam",
            learning_rate=2e-4,
            b1=0.5,
            b2=0.999,
            weight_decay=0.0,
            schedule="constant",
            milestones=[],
            log_every_steps=20,
        ),
        paper={"clean": 0.8415, "pgd": 0.5532, "end_to_end": 0.0002},
    )


def shrink_apegan_to_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Seconds on a CPU: synthetic data, tiny target and networks, 3-step attacks."""
    shrink_target_to_smoke(config)
    config.apegan.generator.widths = [8, 16]
    config.apegan.discriminator.widths = [8, 16, 16]
    config.apegan.attack.steps = 3
    config.train.update(
        {"epochs": 1, "batch_size": 64, "learning_rate": 2e-3, "log_every_steps": 2}
    )
    shrink_purifier_eval_to_smoke(config)
    return config


def shrink_target_to_smoke(config: ml_collections.ConfigDict) -> None:
    """The smoke scale shared by defense tasks: synthetic data and a tiny target in seconds."""
    config.data.source = "synthetic"
    config.data.num_train = 256
    config.data.num_test = 64
    config.data.augment.crop_padding = 0
    config.data.augment.flip = False
    config.target.model.name = "tiny"
    config.target.model.kwargs = {"widths": (8, 16, 32)}
    config.target.train.update(
        {
            "epochs": 2,
            "batch_size": 64,
            "eval_batch_size": 64,
            "optimizer": "adam",
            "learning_rate": 3e-3,
            "weight_decay": 0.0,
            "schedule": "constant",
            "log_every_steps": 2,
        }
    )


def cpu_sized_capgan_loss(loss: ml_collections.ConfigDict) -> None:
    """The generator's term weights of capjax's minute-long CPU configs (smoke, demo).

    U-GAT-IT's CAM weight 1000 suits its long runs. In a short one, eta_T's BCE, which
    cannot fall far while x and x_adv differ by only 8/255, outweighs L_sem and the
    generator learns nothing that defends: measured on the synthetic data after 128 steps,
    the purified training batch was 2% accurate under PGD-3 with (cam 1000, sem 1) and 15%
    with (cam 1, sem 10). The full-size configs keep the paper's weights.
    """
    loss.cam = 1.0
    loss.semantic = 10.0


def shrink_capgan_to_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Seconds on a CPU: synthetic data, tiny target, surrogate and networks, few steps."""
    shrink_target_to_smoke(config)
    config.capgan.generator.update(
        {"base_width": 8, "num_blocks": 1, "stem_kernel": 3, "residual": True}
    )
    cpu_sized_capgan_loss(config.capgan.loss)
    config.capgan.discriminator.update({"base_width": 8, "scales": [2], "spectral_norm": True})
    config.capgan.domain.attack.steps = 3
    config.train.update(
        {"epochs": 1, "batch_size": 64, "learning_rate": 2e-3, "log_every_steps": 2}
    )
    config.eval.update(
        {"num_examples": 64, "batch_size": 64, "figure_examples": 4, "eot_samples": 2}
    )
    # One row per threat model the task supports, each attack a few steps: every code path
    # (surrogate, transfer, white-box, end to end, BPDA) in seconds.
    keep = ("whitebox_clean", "transfer_pgd7", "whitebox_pgd7", "end_to_end_pgd7", "bpda_pgd40")
    config.eval.rows = {k: v for k, v in config.eval.rows.items() if k in keep}
    for row in config.eval.rows.values():
        row["paper"] = -1.0  # synthetic data: nothing to compare
        attack = row["attack"]
        if "steps" in attack:
            attack["steps"] = min(attack["steps"], 3)
    return config


def demo_classifier(demo: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The demo's classifier stage as the classifier task's whole config: `demo.classifier`'s
    model and train, with the demo's seed and data (the same dict: it trains on `data` as
    written)."""
    stage = ml_collections.ConfigDict(
        {"task": "classifier", "model": demo.classifier.model, "train": demo.classifier.train}
    )
    stage.seed = demo.get_ref("seed")
    stage.data = demo.data
    return stage


def demo_stage(
    purifier: ml_collections.ConfigDict, demo: ml_collections.ConfigDict, *, num_train: int
) -> ml_collections.ConfigDict:
    """One purifier stage of the demo task, as the whole config of its purifier task.

    Args:
      purifier: a `cafd_config` / `capgan_config` (its task, its own section and `train` are
        kept; its `data`, `seed` and `target` are replaced).
      demo: the demo's config, already built: `seed`, `data` and `classifier` (a
        `demo_classifier` or its model and train sections).
      num_train: the stage's training images, the first n (0: all).

    The stage's `seed`, `data` fields and `target.model` / `target.train` are linked to the
    demo's (ml_collections references), so `--config.data.dir=...` or an override of the
    classifier reaches every stage, and `config.json` shows what each stage uses. The one
    value left to the run is `target.workdir`: the demo task points it at its classifier
    stage, `<workdir>/classifier`, which depends on `--workdir`, not on the config.
    """
    task = purifier.task
    data = ml_collections.ConfigDict()
    for key, value in demo.data.items():
        if key == "num_train":
            data.num_train = num_train
        elif isinstance(value, ml_collections.ConfigDict):
            data[key] = value  # the same dict: an override reaches both
        else:
            data[key] = demo.data.get_ref(key)
    stage = ml_collections.ConfigDict(
        {
            "task": task,
            task: purifier[task],
            "train": purifier.train,
            "target": {"workdir": optional_str()},
        }
    )
    stage.seed = demo.get_ref("seed")
    stage.data = data
    stage.target.model = demo.classifier.model
    stage.target.train = demo.classifier.train
    return stage
