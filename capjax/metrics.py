"""Top-1 accuracy of a classifier over host images, in padded batches sharded over the mesh."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from capjax import data as data_lib
from capjax.core import mesh as mesh_lib


def accuracy(
    logits_fn: Callable[[jax.Array], jax.Array],
    images,
    labels,
    *,
    batch_size: int,
    mesh=None,
    transform: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    desc: str | None = None,
) -> float:
    """Top-1 accuracy of `logits_fn` over uint8 host images, in padded sharded batches.

    Args:
      transform: optional (x, labels) -> x applied before classification (an attack, say).
    """
    mesh = mesh_lib.make_mesh() if mesh is None else mesh

    @jax.jit
    def correct(batch):
        x = data_lib.to_float(batch["image"])
        if transform is not None:
            x = transform(x, batch["label"])
        hits = jnp.argmax(logits_fn(x), -1) == batch["label"]
        return jnp.sum(hits & batch["mask"])

    total = 0
    batches = data_lib.eval_batches(images, labels, batch_size)
    num_batches = -(-len(labels) // batch_size)
    for batch in tqdm(batches, total=num_batches, desc=desc, disable=desc is None, leave=False):
        total += int(correct(mesh_lib.shard_global_batch(batch, mesh)))
    return total / len(labels)
