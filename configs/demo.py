"""Demo: the whole story at small scale on capjax's synthetic data (no download needed).

    python -m capjax.main --config=configs/demo.py --workdir=/tmp/capjax_demo

Trains a tiny CNN on 10 synthetic shape classes, a CAFD purifier and a CAP-GAN purifier for
it, then evaluates no defense, CAFD and CAP-GAN under clean, white-box (PGD on the
classifier, then purified), end-to-end PGD and BPDA-I PGD, with the sanity checks, and
prints one table. Everything resumes; each stage has a progress bar. The workdir gets
`report.md`, `accuracy.png`, `results.json`, and per defense `eval_<name>/` with its report,
figures and per-example results.

`configs/demo.py:smoke` is the seconds-long version the tests run;
`configs/demo.py:classifier` only trains the classifier (the first release's demo).
"""

import ml_collections

from capjax.config_defaults import (
    cafd_config,
    capgan_config,
    check_variant,
    classifier_config,
    cpu_sized_capgan_loss,
    data_config,
    demo_classifier,
    demo_stage,
    model_config,
    parse_variant,
    shrink_to_smoke,
    train_config,
)
from capjax.eval.paper_suites import numbered

EPS = 8 / 255
PGD = {"name": "pgd", "eps": EPS, "step_size": 2 / 255, "steps": 10}


def eval_rows(steps: int) -> dict:
    pgd = dict(PGD, steps=steps)
    return numbered(
        {
            "clean": {"threat": "clean", "label": "clean"},
            "whitebox_pgd": {"threat": "whitebox", "attack": pgd, "label": "white-box PGD"},
            "end_to_end_pgd": {"threat": "end_to_end", "attack": pgd, "label": "end-to-end PGD"},
            "bpda_pgd": {"threat": "bpda", "attack": pgd, "label": "BPDA-I PGD"},
        }
    )


def classifier_only(variant) -> ml_collections.ConfigDict:
    config = classifier_config(
        data=data_config("synthetic"),
        model=model_config("tiny"),
        epochs=3,
        batch_size=64,
        optimizer="adam",
        learning_rate=3e-3,
        schedule="cosine",
        weight_decay=0.0,
        log_every_steps=20,
    )
    config.data.augment.crop_padding = 0
    config.data.augment.flip = False
    if "smoke" in variant:
        shrink_to_smoke(config)
    return config


def get_config(arg=None):
    variant = parse_variant(arg)
    check_variant(variant, {"smoke", "classifier"}, "configs/demo.py")
    if "classifier" in variant:
        return classifier_only(variant)
    smoke = "smoke" in variant
    data = data_config("synthetic")
    # The synthetic classes are shapes at random positions: no augmentation needed.
    data.augment.crop_padding = 0
    data.augment.flip = False
    data.num_train = 256 if smoke else 0  # 0: all 10,000 synthetic training images
    data.num_test = 64 if smoke else 256

    cafd = cafd_config(data_name="synthetic", lambda_caf=1e3)
    cafd.cafd.denoiser.update(
        {"widths": [8, 16, 16], "encoder_blocks": [1, 1, 1], "decoder_blocks": [1, 1]}
    )
    cafd.cafd.discriminator.update({"widths": [8, 16], "hidden": 16})
    cafd.cafd.attack.steps = 2 if smoke else 3
    cafd.train.update(
        {"epochs": 1 if smoke else 2, "batch_size": 64, "milestones": [], "log_every_steps": 8}
    )

    capgan = capgan_config(data_name="synthetic")
    capgan.capgan.generator.update(
        {"base_width": 8, "num_blocks": 1, "stem_kernel": 3, "residual": True}
    )
    cpu_sized_capgan_loss(capgan.capgan.loss)
    capgan.capgan.discriminator.update({"base_width": 8, "scales": [2]})
    capgan.capgan.domain.attack.steps = 2 if smoke else 3
    capgan.train.update(
        {"epochs": 1 if smoke else 2, "batch_size": 64, "learning_rate": 2e-3, "log_every_steps": 8}
    )
    classifier = train_config(
        epochs=1 if smoke else 3,
        batch_size=64,
        eval_batch_size=64 if smoke else 256,
        optimizer="adam",
        learning_rate=3e-3,
        schedule="cosine",
        weight_decay=0.0,
        log_every_steps=20,
    )
    tiny = model_config("tiny")
    if smoke:
        tiny.kwargs = {"widths": (8, 16, 32)}
    config = ml_collections.ConfigDict(
        {
            "task": "demo",
            "seed": 0,
            "data": data,
            "classifier": {"model": tiny, "train": classifier},
            "eval": {
                "num_examples": 64 if smoke else 256,
                "batch_size": 64,
                "eot_samples": 2,
                "figure_examples": 4 if smoke else 6,
                "rows": eval_rows(2 if smoke else 10),
            },
        }
    )
    # Each stage is its task's whole config, linked to the demo's data, seed and classifier;
    # the purifiers train on the first n training images (the classifier on all).
    config.classifier = demo_classifier(config)
    purifier_images = 256 if smoke else 2048
    config.cafd = demo_stage(cafd, config, num_train=purifier_images)
    config.capgan = demo_stage(capgan, config, num_train=purifier_images)
    return config
