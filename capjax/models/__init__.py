"""Flax classifiers (and, in later modules, the purifier networks).

Every classifier takes [0, 1] NHWC images, `train` (BatchNorm mode) and `return_features`
(also return the last convolutional feature map), and names its final linear layer `head`.
"""

from capjax.models import resnet as _resnet  # noqa: F401  (registers resnet*, preact_resnet18)
from capjax.models import speedrun as _speedrun  # noqa: F401  (registers "speedrun")
from capjax.models import tiny as _tiny  # noqa: F401  (registers "tiny")
from capjax.models import vgg as _vgg  # noqa: F401  (registers vgg11/16/19)
from capjax.models import wrn as _wrn  # noqa: F401  (registers wrn, wrn28_10)
from capjax.models.capgan_nets import (
    AttentionDiscriminator,
    AttentionGenerator,
    MultiScaleDiscriminator,
    attention_features,
)
from capjax.models.zoo import classifier_names, get_classifier, register_classifier

__all__ = [
    "AttentionDiscriminator",
    "AttentionGenerator",
    "MultiScaleDiscriminator",
    "attention_features",
    "classifier_names",
    "get_classifier",
    "register_classifier",
]
