"""The in-memory dataset record every source returns, and `load_dataset`, the one entry point.

A `Dataset` holds whole splits as host uint8 arrays: the datasets capjax works with (CIFAR-10,
SVHN, the synthetic set) fit in memory many times over, and host arrays make the batch
iterator trivially deterministic and resumable.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from capjax.core.errors import ConfigError

SOURCES = ("tfds", "folder", "synthetic")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and test splits of an image classification dataset, in host memory.

    Attributes:
      train_images: (N, H, W, C) uint8.
      train_labels: (N,) int32 in [0, num_classes).
      test_images: (M, H, W, C) uint8, same H, W, C as the train images.
      test_labels: (M,) int32 in [0, num_classes).
      num_classes: number of classes.
      class_names: one name per class, in label order.
      name: where it came from, e.g. "cifar10", "synthetic", "folder:<root>".
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        if self.num_classes < 1 or len(self.class_names) != self.num_classes:
            raise ConfigError(
                f"Dataset {self.name!r}: num_classes={self.num_classes} but "
                f"{len(self.class_names)} class names {self.class_names}."
            )
        for split in ("train", "test"):
            _check_split(self, split)
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ConfigError(
                f"Dataset {self.name!r}: train images are {self.train_images.shape[1:]} but "
                f"test images are {self.test_images.shape[1:]} (H, W, C must agree)."
            )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        return tuple(self.train_images.shape[1:])

    def take(self, num_train: int = 0, num_test: int = 0) -> Dataset:
        """A copy keeping the first `num_train` / `num_test` examples (0 keeps all)."""
        for n in (num_train, num_test):
            if n < 0:
                raise ConfigError(f"num_train/num_test must be >= 0 (0 = all), got {n}.")
        train_end = num_train or None
        test_end = num_test or None
        return dataclasses.replace(
            self,
            train_images=self.train_images[:train_end],
            train_labels=self.train_labels[:train_end],
            test_images=self.test_images[:test_end],
            test_labels=self.test_labels[:test_end],
        )

    def holdout(self, num_validation: int) -> Dataset:
        """The validation view: the last `num_validation` training examples become the test
        split and leave the training split; the real test split is dropped.

        For tuning without looking at the test set. Every source serves its training split in
        a fixed class-mixed order (tfds' own, the folder source's `_mixed_order`, the
        synthetic generator's), so the last n are a fixed sample of all classes.

        Raises:
          ValueError: `num_validation` is negative or leaves no training example.
        """
        n = num_validation
        if n < 0 or n >= len(self.train_labels):
            raise ConfigError(
                f"data.validation={n} must be in [0, {len(self.train_labels)}) for "
                f"{self.name!r}: it is how many training images to hold out for validation."
            )
        if n == 0:
            return self
        return dataclasses.replace(
            self,
            train_images=self.train_images[:-n],
            train_labels=self.train_labels[:-n],
            test_images=self.train_images[-n:],
            test_labels=self.train_labels[-n:],
            name=f"{self.name} (validation: last {n} training images)",
        )


def _check_split(ds: Dataset, split: str) -> None:
    """Raises ValueError unless `split`'s arrays have the documented shapes, dtypes, ranges."""
    images = getattr(ds, f"{split}_images")
    labels = getattr(ds, f"{split}_labels")
    where = f"Dataset {ds.name!r} {split} split"
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ConfigError(
            f"{where}: images must be a (N, H, W, C) uint8 numpy array, got "
            f"{type(images).__name__} {getattr(images, 'dtype', '')} "
            f"{getattr(images, 'shape', '')}."
        )
    if not isinstance(labels, np.ndarray) or labels.dtype != np.int32 or labels.ndim != 1:
        raise ConfigError(
            f"{where}: labels must be a (N,) int32 numpy array, got "
            f"{type(labels).__name__} {getattr(labels, 'dtype', '')} "
            f"{getattr(labels, 'shape', '')}."
        )
    if len(labels) != len(images):
        raise ConfigError(f"{where}: {len(images)} images but {len(labels)} labels.")
    if len(labels) and (labels.min() < 0 or labels.max() >= ds.num_classes):
        raise ConfigError(
            f"{where}: labels span [{labels.min()}, {labels.max()}], outside [0, {ds.num_classes})."
        )


def load_dataset(
    source: str,
    name: str | None = None,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    num_train: int = 0,
    num_test: int = 0,
    seed: int = 0,
) -> Dataset:
    """Loads a dataset into host memory from one of `SOURCES`.

    Args:
      source: "tfds" (a prepared tensorflow-datasets copy, read without TensorFlow),
        "folder" (an ImageFolder tree `data_dir/{train,test}/<class>/*.png|jpg`) or
        "synthetic" (generated, see `capjax.data.synthetic`).
      name: the tfds dataset name (default "cifar10"); ignored by the other sources.
      data_dir: tfds data_dir (default: tfds' own), or the folder root (required).
      cache_dir: where the folder source caches decoded arrays
        (default `~/.cache/capjax/folders`); ignored by the other sources.
      num_train: > 0 keeps only the first `num_train` train examples (for "synthetic": how
        many to generate); 0 keeps all (synthetic default: 10000).
      num_test: the same for the test split (synthetic default: 2000).
      seed: seed of the synthetic generator; ignored by the other sources.

    Returns:
      The `Dataset`.

    Raises:
      ValueError: unknown source, or the source's own errors (missing data, bad files).
    """
    if num_train < 0 or num_test < 0:
        raise ConfigError(
            f"num_train/num_test must be >= 0 (0 = all), got {num_train}, {num_test}."
        )
    # Sources are imported here, not at the top: they import `Dataset` from this module, and
    # nobody should pay for importing tensorflow_datasets unless they use it.
    if source == "synthetic":
        from capjax.data.synthetic import load_synthetic

        return load_synthetic(num_train=num_train, num_test=num_test, seed=seed)
    if source == "folder":
        from capjax.data.folder import load_folder

        if not data_dir:
            raise ConfigError(
                "The folder source needs the image folder's root: "
                "--config.data.dir=<root with train/ and test/>."
            )
        return load_folder(data_dir, cache_dir=cache_dir).take(num_train, num_test)
    if source == "tfds":
        from capjax.data.tfds_source import load_tfds

        return load_tfds(
            name or "cifar10", data_dir=data_dir, num_train=num_train, num_test=num_test
        )
    raise ConfigError(f"Unknown data source {source!r}; known sources: {', '.join(SOURCES)}.")


def load_from_config(config, workdir: str | None) -> Dataset:
    """The dataset a run config's `data` section names, drawn with its `seed` (folders are
    cached beside the run, in `workdir/data_cache`, unless `data.cache_dir` says where).

    `data.validation` > 0 returns the validation view (`Dataset.holdout`): that many training
    images held out and served as the test split, for tuning without the test set.
    """
    d = config.data
    cache_dir = d.get("cache_dir") or (os.path.join(workdir, "data_cache") if workdir else None)
    validation = d.get("validation", 0) or 0
    # With a validation holdout, it is carved from the whole training split first; num_train
    # and num_test then count within the remaining training images and the validation set.
    dataset = load_dataset(
        d.source,
        name=d.get("name"),
        data_dir=d.get("dir"),
        cache_dir=cache_dir,
        num_train=0 if validation and d.source != "synthetic" else d.get("num_train", 0),
        num_test=0 if validation else d.get("num_test", 0),
        seed=config.seed,
    )
    if not validation:
        return dataset
    dataset = dataset.holdout(validation)
    num_train = 0 if d.source == "synthetic" else d.get("num_train", 0)
    return dataset.take(num_train=num_train, num_test=d.get("num_test", 0))
