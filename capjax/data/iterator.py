"""A deterministic, resumable batch iterator over host arrays, and padded eval batches.

Epoch `e` visits the examples in the order `np.random.default_rng([seed, e]).permutation(N)`,
so the position (epoch, step) alone determines every later batch: resuming needs no replay,
and every process of a multi-host run computes the same global batch and takes its own
contiguous slice of it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from capjax.core.errors import ConfigError


def _check_arrays(images: np.ndarray, labels: np.ndarray) -> None:
    if np.ndim(images) < 1 or np.ndim(labels) != 1 or len(images) != len(labels):
        raise ConfigError(
            f"images (N, ...) and labels (N,) must have the same length N; got shapes "
            f"{np.shape(images)} and {np.shape(labels)}."
        )


class BatchIterator:
    """Infinite iterator of shuffled training batches, one process's share of each.

    Attributes:
      steps_per_epoch: full global batches per epoch (the remainder is dropped).
      epoch: epoch of the next batch.
      step: index within `epoch` of the next batch.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        global_batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
    ):
        """Creates the iterator at epoch 0, step 0.

        Args:
          images: (N, H, W, C) host array (uint8 usually), indexed, never copied whole.
          labels: (N,) host array.
          global_batch_size: examples per step summed over all processes.
          seed: shuffling seed; the same seed gives the same batches.
          process_index: this process's index (`jax.process_index()`).
          process_count: number of processes (`jax.process_count()`).

        Raises:
          ValueError: mismatched arrays, a global batch not divisible by the process count
            or larger than the dataset, or a process index out of range.
        """
        _check_arrays(images, labels)
        if global_batch_size < 1 or global_batch_size > len(images):
            raise ConfigError(
                f"global_batch_size={global_batch_size} must be in [1, {len(images)}] "
                "(the dataset size)."
            )
        if process_count < 1 or global_batch_size % process_count:
            raise ConfigError(
                f"global_batch_size={global_batch_size} must be divisible by "
                f"process_count={process_count}."
            )
        if not 0 <= process_index < process_count:
            raise ConfigError(f"process_index={process_index} not in [0, {process_count}).")
        self.images = images
        self.labels = labels
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // process_count
        self.seed = seed
        self.process_index = process_index
        self.steps_per_epoch = len(images) // global_batch_size
        self.epoch = 0
        self.step = 0
        self._permutation_epoch = -1
        self._permutation = np.empty(0, np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        """(N,) the order in which `epoch` visits the examples (cached for the current one)."""
        if epoch != self._permutation_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._permutation = rng.permutation(len(self.images))
            self._permutation_epoch = epoch
        return self._permutation

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        """This process's share of the next global batch.

        Returns:
          {"image": (B_local, H, W, C) as stored, "label": (B_local,) int32}.
        """
        epoch, step = self.advance()
        start = step * self.global_batch_size + self.process_index * self.local_batch_size
        indices = self.permutation(epoch)[start : start + self.local_batch_size]
        return {
            "image": self.images[indices],
            "label": np.asarray(self.labels[indices], np.int32),
        }

    def advance(self) -> tuple[int, int]:
        """Moves past the next batch without gathering it (`next` without the data).

        Returns:
          (epoch, step) of the batch skipped: its global rows are
          `permutation(epoch)[step * global_batch_size : (step + 1) * global_batch_size]`.
        """
        position = (self.epoch, self.step)
        self.step += 1
        if self.step == self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        return position

    def state_dict(self) -> dict[str, int]:
        """The position, {"epoch", "step"}, to store in a checkpoint."""
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Moves to a position saved by `state_dict` (of an iterator over the same data)."""
        if set(state) != {"epoch", "step"}:
            raise ConfigError(f"Iterator state must have keys 'epoch' and 'step', got {state}.")
        epoch, step = int(state["epoch"]), int(state["step"])
        if epoch < 0 or not 0 <= step < self.steps_per_epoch:
            raise ConfigError(
                f"Iterator state {state} is out of range: epoch >= 0 and "
                f"0 <= step < steps_per_epoch={self.steps_per_epoch} (same data and batch size?)."
            )
        self.epoch, self.step = epoch, step


def eval_batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """Every example once, in order, in batches of exactly `batch_size`.

    The last batch is padded (zeros, label 0) to the full size, so a jitted eval step sees a
    single shape; `mask` is False on the padding, which metrics must ignore.

    Yields:
      {"image": (batch_size, ...) like images, "label": (batch_size,) int32,
       "mask": (batch_size,) bool}.
    """
    _check_arrays(images, labels)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    for start in range(0, len(images), batch_size):
        image = images[start : start + batch_size]
        label = np.asarray(labels[start : start + batch_size], np.int32)
        valid = len(image)
        mask = np.arange(batch_size) < valid
        if valid < batch_size:
            pad = batch_size - valid
            image = np.concatenate([image, np.zeros((pad,) + image.shape[1:], image.dtype)])
            label = np.concatenate([label, np.zeros((pad,), np.int32)])
        yield {"image": image, "label": label, "mask": mask}
