"""Train a zoo classifier on CIFAR-10.

    python -m capjax.main --config=configs/classifier_cifar.py:model=resnet18 --workdir=runs/r18

Variants (comma-separated after the colon): `model=<name>` (any registry name: tiny, vgg11,
vgg16, vgg19, resnet18, resnet34, resnet50, preact_resnet18, wrn28_10); `smoke` (a few seconds
on the synthetic data, for tests).

Data: tfds `cifar10` by default (needs a prepared tfds data_dir when offline). Without one, use
the image-folder copy: `--config.data.source=folder --config.data.dir=../shared/data/cifar10-jpeg`.

Recipe (the CAFD authors' target-classifier recipe): SGD momentum 0.9, weight decay 5e-4,
lr 0.1 times 0.2 after epochs 60, 120, 160; 200 epochs; batch 128; random crop (pad 4) and
flip; no input normalisation. Expected test accuracy with this recipe, from the literature
(not yet measured with capjax on a GPU): VGG-19-BN about 93-94%, ResNet-18 about 95%.
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
    check_variant(variant, {"model", "smoke"}, "configs/classifier_cifar.py")
    config = classifier_config(
        data=data_config("tfds", "cifar10"),
        model=model_config(variant.get("model") or "vgg19"),
    )
    if "smoke" in variant:
        shrink_to_smoke(config)
    return config
