"""What the evaluation suite sees of a defense: a classifier and an optional purifier.

Every defense capjax evaluates (none, CAFD, CAP-GAN, the baselines) is reduced to this one
shape, so that each threat model is built once (docs/design.md principle 3):

- `classifier`: the protected classifier f, x in [0, 1] -> logits (adversarial training and
  input encodings live here, inside f);
- `purify`: (x, key) -> x' in [0, 1], or None when the defense has no purifier. Deterministic
  purifiers ignore the key; random ones (TVM's pixel dropout, say) draw from it, so their
  randomness is explicit and the suite can both detect it and average over it (EOT).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from capjax.attacks import LogitsFn

KeyedPurify = Callable[[jax.Array, jax.Array], jax.Array]


def weights_fingerprint(*trees: Any) -> str:
    """A short hash of every array in `trees` (host copies; float bits, shapes and dtypes)."""
    digest = hashlib.sha1()
    for leaf in jax.tree.leaves(jax.device_get(trees)):
        array = np.asarray(leaf)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def keyed(purify: Callable[[jax.Array], jax.Array]) -> KeyedPurify:
    """A deterministic purify(x) as the (x, key) -> x' form `Defense` takes."""
    return lambda x, key: purify(x)


@dataclasses.dataclass(frozen=True)
class Defense:
    """A defended classifier, seen from outside.

    Attributes:
      name: shown in reports ("CAFD", "CAP-GAN", "JPEG (q=75)", "none").
      classifier: f, (N, H, W, C) float32 in [0, 1] -> (N, K) logits.
      purify: (x, key) -> x' of x's shape in [0, 1], or None (no purifier).
      differentiable_purify: an (x, key) -> x' that approximates `purify` with useful
        gradients (JPEG's smooth rounding, say), used by end-to-end attacks; None means
        `purify` itself is differentiated.
      fingerprint: identifies the weights behind the callables (`weights_fingerprint`): the
        suite recomputes stored rows of another fingerprint instead of loading them, so a
        retrained defense is never reported with its predecessor's numbers.
      classifier_fingerprint: identifies f's weights alone; when set, the suite may reuse
        the x_adv of a white-box attack on f across defenses built on the same f.
    """

    name: str
    classifier: LogitsFn
    purify: KeyedPurify | None = None
    differentiable_purify: KeyedPurify | None = None
    fingerprint: str = ""
    classifier_fingerprint: str = ""

    def purified(self, x: jax.Array, key: jax.Array) -> jax.Array:
        """purify(x, key), or x when there is no purifier."""
        return x if self.purify is None else self.purify(x, key)

    def defended(self, key: jax.Array) -> LogitsFn:
        """x -> f(purify(x, key)): the full defended model with its randomness fixed by key."""
        return lambda x: self.classifier(self.purified(x, key))

    def gradient_path(self, key: jax.Array) -> LogitsFn:
        """x -> f(approx(x, key)): what an end-to-end attacker differentiates."""
        if self.differentiable_purify is None:
            return self.defended(key)
        return lambda x: self.classifier(self.differentiable_purify(x, key))

    def without_purifier(self) -> Defense:
        return dataclasses.replace(self, purify=None, differentiable_purify=None)
