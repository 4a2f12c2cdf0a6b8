"""APE-GAN (Shen et al., 2017) on CIFAR-10, the CAP-GAN paper's baseline: target ResNet-18,
then the generator/discriminator pair trained on adversarial examples of the target.

    python -m capjax.main --config=configs/apegan_cifar.py --workdir=runs/apegan

Stages: train the target in `runs/apegan/target` (skipped when done, or when
`--config.target.workdir=<finished classifier run>` names one, e.g. a
`configs/classifier_cifar.py:model=resnet18` run), train APE-GAN on adversarial examples
crafted against the target inside each jitted step, then evaluate (results.json, report.md,
examples.png). Offline, point the data at the image-folder copy:
`--config.data.source=folder --config.data.dir=../shared/data/cifar10-jpeg`.

Variants (comma-separated after the colon): `cw` trains on CW-L2 examples instead of PGD
(the CAP-GAN paper: APE-GAN and HGD "trained on PGD or CW examples as in the papers");
`smoke` shrinks everything to seconds on a CPU (tests).

Defaults: the paper's networks (capjax.models.apegan_nets, with resize-convolutions in place
of its transposed convolutions), losses (0.7 x MSE + 0.3 x GAN for G) and optimizer (Adam lr
2e-4, beta1 0.5, for G and D); training examples PGD L-inf eps 8/255, step 2/255, 10
iterations (the CAFD paper's Table 1 APE-G was trained on CW-L2 examples against VGG-19:
`:cw` with a VGG-19 target); CW: 100
Adam iterations, one binary-search round at c = 1, confidence 0 (capjax's choice). Epochs
(30) and batch (128) are capjax's choice: the CAP-GAN paper gives no training details for
its baselines. Evaluation: PGD-40 L-inf eps 8/255, step 2/255.

Expected (the CAP-GAN paper, CIFAR-10, ResNet target): clean 84.15%, white-box PGD-40 (attack
the classifier, then purify; Table III) 55.32%, end to end PGD-40 (Table IV) 0.02%. Not yet
reproduced with capjax (needs a GPU run); report.md prints these beside the measured numbers.
"""

from capjax.config_defaults import (
    BASELINE_CW,
    apegan_config,
    check_variant,
    parse_variant,
    shrink_apegan_to_smoke,
)
from capjax.eval import paper_match


def get_config(arg=None):
    variant = parse_variant(arg)
    check_variant(variant, {"cw", "smoke"}, "configs/apegan_cifar.py")
    config = apegan_config(data_name="cifar10")
    # The CAP-GAN paper's APE-GAN numbers: CIFAR-10, its ResNet, trained on PGD examples.
    config.eval.paper_setting = paper_match.purifier_setting(
        dataset="cifar10",
        targets=paper_match.CAPGAN_TARGETS,
        pgd=config.eval.pgd,
        training_attack="pgd",
    )
    if "cw" in variant:
        config.apegan.attack = dict(BASELINE_CW)
        config.eval.paper = {"clean": -1.0, "pgd": -1.0, "end_to_end": -1.0}
    if "smoke" in variant:
        shrink_apegan_to_smoke(config)
    return config
