"""CAFD on SVHN (tfds `svhn_cropped`): as configs/cafd_cifar.py with lambda1 = 1e2.

    python -m capjax.main --config=configs/cafd_svhn.py --workdir=runs/cafd_svhn

Variants: `eq6`, `eq7` (default), `smoke`. The target is trained without augmentation
(crops and flips change digits). Not yet reproduced with capjax (needs a GPU run).
"""

from capjax.config_defaults import cafd_config, check_variant, parse_variant, shrink_cafd_to_smoke
from capjax.eval import paper_match


def get_config(arg=None):
    variant = parse_variant(arg)
    check_variant(variant, {"eq6", "eq7", "smoke"}, "configs/cafd_svhn.py")
    config = cafd_config(data_name="svhn_cropped", lambda_caf=1e2)
    config.data.augment.crop_padding = 0
    config.data.augment.flip = False
    config.target.train.epochs = 40
    config.target.train.learning_rate = 0.01
    config.target.train.schedule = "cosine"
    config.eval.paper = {"clean": 1 - 0.0765, "pgd": 1 - 0.1464}  # Table 1, SVHN, CAFD
    if "eq6" in variant:
        config.cafd.loss_form = "eq6"
        config.eval.paper = {"clean": 1 - 0.0979, "pgd": 1 - 0.1591}
    config.eval.paper_setting = paper_match.purifier_setting(
        dataset="svhn_cropped",
        targets=paper_match.CAFD_TARGETS,
        pgd=config.eval.pgd,
        loss_form=config.cafd.loss_form,
    )
    if "smoke" in variant:
        shrink_cafd_to_smoke(config)
    return config
