"""The whole story on real CIFAR-10 on a CPU: target, CAFD, CAP-GAN, evaluation.

    python -m capjax.main --config=configs/cifar_cpu.py --workdir=runs/cifar_cpu \\
        --config.data.dir=../shared/data/cifar10-jpeg

Runs the `demo` task's stages on the image-folder copy of CIFAR-10 (or tfds `cifar10` with
`--config.data.source=tfds`), each resumable in its own folder of the workdir.

Variants (comma-separated after the colon):
- `target`: only the target classifier (the classifier task), into
  `--workdir=runs/cifar_cpu/classifier`, the folder where the whole config's first stage
  trains it; the whole config then resumes it as finished.
- `validation`: hold out the last 5,000 training images and evaluate on them instead of the
  test split (`data.validation`), for tuning; results on the test set use no variant.
- `smoke`: synthetic data, a narrow speedrun CNN and tiny purifiers, no AutoAttack rows,
  for the tests (the target stage in seconds, the whole config in minutes).

Target: the `speedrun` CNN (`capjax.models.speedrun`, airbench's layout) at CPU widths
(stem 24, blocks 32, 128, 128), trained with the speed-run recipe: SGD with Nesterov
momentum, one epoch of linear warm-up then a linear decay to zero, peak learning rate 0.4,
label smoothing 0.2, batch 256, crops with 2-pixel padding and flips, 9 epochs. Chosen on the
validation split: 48 runs on a lent GPU picked the widths (32, 128, 128 at 8 epochs: 85.6%
and 85.1% there), and on the CPU 9 epochs of it reached 85.68% where the previous 32, 96, 128
at 8 epochs reached 84.38% and scored 84.60% on the test set (docs/cifar_cpu.md).

Purifiers: CAFD with a narrow DUNET trained with CAFA-10 over 30,720 training images once;
CAP-GAN at base width 16 on the first 10,000 images twice. Tuning runs on the validation
split, their numbers and what limits each purifier: docs/cifar_cpu.md. Results on the test
set: docs/results/cifar_cpu/.
"""

from __future__ import annotations

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

# CIFAR-10 training-set channel statistics, as the speed-run nets normalise.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
VALIDATION_IMAGES = 5000
PGD40 = {"name": "pgd", "eps": 8 / 255, "step_size": 0.01, "steps": 40}
# The same attack, leaving each image once the model it attacks misclassifies it: the same
# verdicts where that model is the scored one (end to end, BPDA), at a fraction of the steps.
PGD40_EARLY_STOP = dict(PGD40, early_stop=True)


def target_model() -> ml_collections.ConfigDict:
    model = model_config("speedrun")
    model.mean = CIFAR_MEAN
    model.std = CIFAR_STD
    model.kwargs = {"stem_width": 24, "stem": "conv", "stem_stride": 1, "widths": (32, 128, 128)}
    return model


def target_train() -> ml_collections.ConfigDict:
    return train_config(
        epochs=9,
        batch_size=256,
        eval_batch_size=1000,
        optimizer="sgd",
        learning_rate=0.4,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        schedule="linear_tail",
        decay_start=0.0,
        warmup_epochs=1.0,
        milestones=[],
        label_smoothing=0.2,
        log_every_steps=20,
    )


def real_data() -> ml_collections.ConfigDict:
    data = data_config("folder", "cifar10")
    data.augment.crop_padding = 2
    return data


def target_config(variant: dict[str, str]) -> ml_collections.ConfigDict:
    config = classifier_config(data=real_data(), model=target_model())
    config.train = target_train()
    if "smoke" in variant:
        shrink_to_smoke(config)
        config.model.kwargs.stem_width = 8
        config.model.kwargs.widths = (8, 16, 16)
    return config


AUTOATTACK = {"name": "autoattack", "eps": 8 / 255}


def eval_rows() -> dict:
    """The papers' threat models with PGD-40 (CAFD's evaluation: eps 8/255, step 0.01) and
    AutoAttack standard.

    End to end, AutoAttack attacks only the images that end-to-end PGD-40 left robust
    (`"after"`, see `capjax.eval.suite`), so the row is the per-example worst case of both
    attacks. Through the purifiers PGD-40 leaves almost none, so AutoAttack attacks the
    survivors of all 2,000 images instead of a costly pass over a fixed 100. Through CAP-GAN
    its cost is compiling and running each component's loops through the generator, not the
    number of images (the timings are in docs/cifar_cpu.md, "third test run" onwards).

    End to end and through BPDA, PGD-40 stops on each image once it is misclassified
    (`early_stop`: outside jit, 10-step programs on the images still standing). The model it
    attacks is the one scored there, so every verdict is what all 40 steps give; the
    white-box row keeps all 40, because its points are then purified.
    """
    return numbered(
        {
            "clean": {"threat": "clean", "label": "clean"},
            "whitebox_pgd40": {"threat": "whitebox", "attack": PGD40, "label": "white-box PGD-40"},
            "end_to_end_pgd40": {
                "threat": "end_to_end",
                "attack": PGD40_EARLY_STOP,
                "label": "end-to-end PGD-40",
            },
            "bpda_pgd40": {
                "threat": "bpda",
                "attack": PGD40_EARLY_STOP,
                "label": "BPDA-I PGD-40",
            },
            "whitebox_aa": {
                "threat": "whitebox",
                "attack": AUTOATTACK,
                "label": "white-box AutoAttack",
            },
            "end_to_end_aa": {
                "threat": "end_to_end",
                "attack": AUTOATTACK,
                "label": "end-to-end PGD-40, then AutoAttack on its survivors",
                "after": "end_to_end_pgd40",
            },
        }
    )


# The papers' full-scale numbers beside each row ({defense: {row: (accuracy, note)}}); the
# notes say which table and what differs from this run. CAFD prints error rates: 1 - error.
PAPER_NOTES = [
    "CAFD Table 1 (CIFAR-10): VGG-19 target with the full-size DUNET trained 70 epochs; "
    "PGD_N is 40 steps of 0.01 at 8/255 as here, AA_N is AutoAttack standard.",
    "CAFD Table 3, white-box adaptive attack: PGD_N on CAFD + VGG-19 together (end to end).",
    "CAFD Table 3, BPDA: PGD_N with 20 iterations (It-20); this row runs 40.",
    "CAP-GAN Tables III (white-box), IV (end to end) and II (BPDA-I-40), CIFAR-10, the "
    "paper's classifier and full-size CAP-GAN; its PGD-40 steps 2/255 where this row steps "
    "0.01 (2.55/255).",
    "CAP-GAN Table III, no defense: the paper's classifier; PGD-40 with steps of 2/255.",
]
PAPER = {
    "none": {"clean": (0.928, 5), "whitebox_pgd40": (0.0001, 5)},
    "cafd": {
        "clean": (1 - 0.0890, 1),
        "whitebox_pgd40": (1 - 0.1279, 1),
        "end_to_end_pgd40": (1 - 0.9518, 2),
        "bpda_pgd40": (1 - 0.5125, 3),
        "whitebox_aa": (1 - 0.1180, 1),
    },
    "capgan": {
        "clean": (0.8562, 4),
        "whitebox_pgd40": (0.8393, 4),
        "end_to_end_pgd40": (0.0658, 4),
        "bpda_pgd40": (0.7827, 4),
    },
}


def paper_numbers() -> dict:
    return {
        defense: {row: {"value": round(v, 6), "note": note} for row, (v, note) in rows.items()}
        for defense, rows in PAPER.items()
    }


def whole_config(variant: dict[str, str]) -> ml_collections.ConfigDict:
    """The demo task's stages at CPU size on real data (measured: docs/cifar_cpu.md)."""
    target = target_config(variant)
    cafd = cafd_config(data_name="cifar10", lambda_caf=1e3)
    cafd.cafd.denoiser.update(
        {"widths": [16, 32, 64], "encoder_blocks": [1, 2, 2], "decoder_blocks": [2, 1]}
    )
    cafd.cafd.discriminator.update({"widths": [16, 32], "hidden": 32})
    # CAFA-10 over the training images once, the learning rate decaying linearly over the
    # second half: on the validation split white-box PGD-40 then purify went from 36.1%
    # (CAFA-5, 10,000 images twice, constant rate) to 46.0% (CAFA-10, 45,000 images once;
    # docs/cifar_cpu.md).
    cafd.cafd.attack.steps = 10
    cafd.train.update(
        {
            "epochs": 1,
            "batch_size": 128,
            "milestones": [],
            "schedule": "linear_tail",
            "decay_start": 0.5,
            "log_every_steps": 20,
        }
    )

    capgan = capgan_config(data_name="cifar10")
    capgan.capgan.generator.update(
        {"base_width": 16, "num_blocks": 2, "stem_kernel": 3, "residual": True}
    )
    cpu_sized_capgan_loss(capgan.capgan.loss)
    capgan.capgan.discriminator.update({"base_width": 16, "scales": [2]})
    capgan.capgan.domain.attack.steps = 5
    capgan.train.update(
        {"epochs": 2, "batch_size": 128, "learning_rate": 2e-3, "log_every_steps": 20}
    )
    smoke = "smoke" in variant
    if smoke:  # the demo's smoke sizes: seconds, every code path
        for stage in (cafd, capgan):
            stage.train.update({"epochs": 1, "batch_size": 64})
        cafd.cafd.denoiser.update(
            {"widths": [8, 16, 16], "encoder_blocks": [1, 1, 1], "decoder_blocks": [1, 1]}
        )
        cafd.cafd.discriminator.update({"widths": [8, 16], "hidden": 16})
        capgan.capgan.generator.update({"base_width": 8, "num_blocks": 1})
        capgan.capgan.discriminator.base_width = 8
        cafd.cafd.attack.steps = capgan.capgan.domain.attack.steps = 2
    rows = eval_rows()
    if smoke:  # 2 PGD steps, no AutoAttack, and the labels say so
        rows = {k: v for k, v in rows.items() if not k.endswith("_aa")}
        for row in rows.values():
            if "attack" in row:
                row["attack"] = dict(row["attack"], steps=2)
                row["label"] = row["label"].replace("PGD-40", "PGD-2 (smoke)")
    config = ml_collections.ConfigDict(
        {
            "task": "demo",
            "title": "capjax cifar_cpu: the speedrun CNN, undefended and purified",
            "seed": 0,
            "data": target.data,
            "classifier": {"model": target.model, "train": target.train},
            # The papers' full-scale numbers, set beside the rows in report.md (labelled so).
            "paper": {} if smoke else paper_numbers(),
            "paper_notes": [] if smoke else PAPER_NOTES,
            "eval": {
                "num_examples": 64 if smoke else 2000,
                "batch_size": 64 if smoke else 200,
                "eot_samples": 2,
                "figure_examples": 4 if smoke else 6,
                "rows": rows,
            },
        }
    )
    # Each stage is its task's whole config, linked to the demo's data, seed and classifier.
    config.classifier = demo_classifier(config)
    # CAFD: 240 steps of 128 (30,720 images), sized to the CPU stage budget of 15 minutes
    # (docs/cifar_cpu.md has the measured stage times). CAP-GAN: the first 10,000 images,
    # twice.
    config.cafd = demo_stage(cafd, config, num_train=256 if smoke else 30_720)
    config.capgan = demo_stage(capgan, config, num_train=256 if smoke else 10_000)
    return config


def get_config(arg=None):
    variant = parse_variant(arg)
    check_variant(variant, {"smoke", "target", "validation"}, "configs/cifar_cpu.py")
    config = target_config(variant) if "target" in variant else whole_config(variant)
    if "validation" in variant:
        config.data.validation = VALIDATION_IMAGES
    return config
