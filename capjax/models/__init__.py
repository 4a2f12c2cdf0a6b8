"""Flax classifiers (and, in later modules, the purifier networks).

Every classifier takes [0, 1] NHWC images, `train` (BatchNorm mode) and `return_features`
(also return the last convolutional feature map), and names its final linear layer `head`.
"""

from capjax.models import tiny as _tiny  # noqa: F401  (registers "tiny")
from capjax.models.registry import classifier_names, get_classifier, register_classifier

__all__ = ["classifier_names", "get_classifier", "register_classifier"]
