"""Train a zoo classifier on SVHN (tfds `svhn_cropped`, 73,257 train / 26,032 test images).

    python -m capjax.main --config=configs/classifier_svhn.py:model=resnet18 --workdir=runs/svhn

Variants: `model=<name>`, `smoke`. Augmentation is off (flips and crops change digits).
Recipe: SGD momentum 0.9, weight decay 5e-4, lr 0.01, cosine schedule, 40 epochs, batch 128.
Expected test accuracy from the literature (not yet measured with capjax): about 96% for
ResNet-18 and VGG-19-BN.
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
    check_variant(variant, {"model", "smoke"}, "configs/classifier_svhn.py")
    config = classifier_config(
        data=data_config("tfds", "svhn_cropped"),
        model=model_config(variant.get("model") or "vgg19"),
        epochs=40,
        learning_rate=0.01,
        schedule="cosine",
        milestones=[],
    )
    config.data.augment.crop_padding = 0
    config.data.augment.flip = False
    if "smoke" in variant:
        shrink_to_smoke(config)
    return config
