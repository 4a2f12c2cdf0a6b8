"""The classifier zoo: name -> constructor, so configs choose models by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn

from capjax.core.errors import ConfigError

_CLASSIFIERS: dict[str, Callable[..., nn.Module]] = {}


def register_classifier(
    name: str,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering `factory(**kwargs) -> nn.Module` under `name`."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _CLASSIFIERS:
            raise ConfigError(f"classifier {name!r} is registered twice")
        _CLASSIFIERS[name] = factory
        return factory

    return wrap


def classifier_names() -> list[str]:
    """The registered classifier names, sorted."""
    return sorted(_CLASSIFIERS)


def get_classifier(name: str, **kwargs: Any) -> nn.Module:
    """Builds the classifier registered as `name` with keyword options (num_classes, dtype, ...).

    Raises:
      ValueError: `name` is not registered (the message lists the known names).
    """
    if name not in _CLASSIFIERS:
        raise ConfigError(
            f"Unknown model.name {name!r}; registered classifiers: {', '.join(classifier_names())}."
        )
    return _CLASSIFIERS[name](**kwargs)
