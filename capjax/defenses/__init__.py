"""Purification defenses: one module per defense (its losses, train step and `purify`).

The input-transformation baselines' entry points are exported here; they need only jax and
flax. The transforms themselves stay in their modules (`capjax.defenses.jpeg.jpeg`,
`capjax.defenses.tvm.tvm`): exported here under those names they would hide the modules
(`import capjax.defenses.jpeg` would then give the function). The trained defenses
(`capjax.defenses.cafd`, ...) pull in optax and the data layer, so they are imported from
their modules.
"""

from capjax.defenses.jpeg import jpeg_purifier
from capjax.defenses.thermometer import (
    ThermometerInput,
    thermometer_classifier,
    thermometer_encode,
    thermometer_encode_smooth,
)
from capjax.defenses.tvm import tvm_purifier

__all__ = [
    "ThermometerInput",
    "jpeg_purifier",
    "thermometer_classifier",
    "thermometer_encode",
    "thermometer_encode_smooth",
    "tvm_purifier",
]
