"""Train a zoo classifier on CIFAR-10.

    python -m capjax.main --config=configs/classifier_cifar.py:model=resnet18 --workdir=runs/r18

Variants (comma-separated after the colon): `model=<name>` (any registry name: tiny, vgg11,
vgg16, vgg19, resnet18, resnet34, resnet50, preact_resnet18, wrn28_10); `adv` (PGD adversarial
training, below); `thermometer` (the classifier sees a 16-level thermometer code of each pixel,
Buckman et al. 2018: the THM baseline, evaluated as `--config.defense=thermometer`);
`smoke` (4 steps on the synthetic data, for tests: seconds with `model=tiny`; far longer with
VGG-19, mostly compilation; times in docs/benchmarks.md).

Data: tfds `cifar10` by default (needs a prepared tfds data_dir when offline). Without one, use
the image-folder copy: `--config.data.source=folder --config.data.dir=../shared/data/cifar10-jpeg`.

Recipe (the CAFD authors' target-classifier recipe): SGD momentum 0.9, weight decay 5e-4,
lr 0.1 times 0.2 after epochs 60, 120, 160; 200 epochs; batch 128; random crop (pad 4) and
flip; no input normalisation. Expected test accuracy with this recipe, from the literature
(not yet measured with capjax on a GPU): VGG-19-BN about 93-94%, ResNet-18 about 95%.

`adv`: PGD adversarial training (Madry et al., 2018; `capjax.train.adversarial`), the CAP-GAN
paper's AT baseline: every step trains on PGD-7 L-inf examples (eps 8/255, step 2/255, random
start) of its augmented batch, crafted against the current weights (BatchNorm in train mode,
its updates discarded, as in Madry et al.'s code); same recipe otherwise. About 8x the cost of
standard training. results.json adds `test_adversarial_accuracy` (the same PGD-7, eval mode).

    python -m capjax.main --config=configs/classifier_cifar.py:model=resnet18,adv --workdir=runs/at

Expected (the CAP-GAN paper, CIFAR-10, its AT ResNet): clean 78.1%; end-to-end white-box
PGD-7/40 48.09%/45.22% (Table IV). Not yet reproduced with capjax (needs a GPU run).
"""

from capjax.config_defaults import (
    check_variant,
    classifier_config,
    data_config,
    model_config,
    parse_variant,
    shrink_to_smoke,
)


def get_config(arg=None):
    variant = parse_variant(arg)
    check_variant(variant, {"adv", "model", "smoke", "thermometer"}, "configs/classifier_cifar.py")
    config = classifier_config(
        data=data_config("tfds", "cifar10"),
        model=model_config(variant.get("model") or "vgg19"),
    )
    if "adv" in variant:
        config.train.adversarial.update(
            {"steps": 7, "eps": 8 / 255, "step_size": 2 / 255, "random_start": True}
        )
    if "thermometer" in variant:
        config.model.thermometer_levels = 16
    if "smoke" in variant:
        shrink_to_smoke(config)
    return config
