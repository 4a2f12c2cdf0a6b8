"""capjax.attacks: pure, jit-compatible adversarial attacks for any JAX classifier.

Every attack takes the model as a callable (`logits_fn(x) -> logits`, or a feature function),
images `x` (N, H, W, C) float in [0, 1], labels `y` (N,) (the targets when `targeted=True`),
keyword-only options with shared names (`eps`, `norm`, `steps`, `step_size`, `loss`,
`targeted`, `random_start`, `restarts`, `key`, `unroll`, `validate`), and returns `x_adv` of
the same shape and dtype inside the threat model exactly.

    from capjax import attacks
    x_adv = attacks.pgd(logits_fn, x, y, eps=8/255, step_size=2/255, steps=10, key=key)

This package imports nothing else of capjax: use it with your own models and training code.
"""

from capjax.attacks._common import LogitsFn as LogitsFn  # the type of every attack's model
from capjax.attacks.apgd import apgd, apgd_t
from capjax.attacks.autoattack import autoattack
from capjax.attacks.fab import fab
from capjax.attacks.fast_pool import tiled_max_pool
from capjax.attacks.feature import (
    cafa,
    class_activation_features,
    class_activation_features_fn,
    class_activation_maps,
    feature_pgd,
    zoo_class_activation_fn,
)
from capjax.attacks.gradient import fgsm, mifgsm, pgd, ti_dim
from capjax.attacks.minimal_norm import cw_l2, ddn
from capjax.attacks.model_fn import flax_logits_fn
from capjax.attacks.spatial import flow_warp, stadv
from capjax.attacks.spsa import spsa
from capjax.attacks.square import square
from capjax.attacks.wrappers import bpda, defended, eot

__all__ = [
    "apgd",
    "apgd_t",
    "autoattack",
    "bpda",
    "cafa",
    "class_activation_features",
    "class_activation_features_fn",
    "class_activation_maps",
    "cw_l2",
    "ddn",
    "defended",
    "eot",
    "fab",
    "feature_pgd",
    "fgsm",
    "flax_logits_fn",
    "flow_warp",
    "mifgsm",
    "pgd",
    "spsa",
    "square",
    "stadv",
    "ti_dim",
    "tiled_max_pool",
    "zoo_class_activation_fn",
]
