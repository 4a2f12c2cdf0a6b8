"""The `tfds` source: a prepared tensorflow-datasets copy read into arrays, without TensorFlow.

`tfds.data_source` reads ArrayRecord files with random access and decodes records with
NumPy/Pillow, so TensorFlow is not needed. It reads only what is already prepared in
`data_dir` (a copy made with `file_format="array_record"`, e.g.
`tfds build cifar10 --file_format=array_record` on a machine with TensorFlow and network):
we always pass `download=False`, so nothing ever tries the network, and a missing copy fails
within a second with a `ValueError` that names the offline alternatives.

Any tfds image classification dataset with `image` and `label` features works (`cifar10`,
`svhn_cropped`, `mnist`, ...); it needs `train` and `test` splits.

Notes on tfds 4.9.10 (measured): `tfds.testing.mock_data` does fake `tfds.data_source`
(default policy; records come through `__getitem__`), but its `__getitems__` raises a
TypeError, so records are read one at a time. With an explicit `data_dir` and no copy there,
tfds' own error speaks of the TFRECORD format (it only defaults to ArrayRecord when no
`data_dir` is given); our message says what is really missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from capjax.core.errors import ConfigError
from capjax.data.dataset import Dataset

_MAX_CAUSE_CHARS = 400


def load_tfds(
    name: str, data_dir: str | None = None, num_train: int = 0, num_test: int = 0
) -> Dataset:
    """Reads the train and test splits of a prepared tfds dataset into uint8 arrays.

    Args:
      name: tfds dataset name, e.g. "cifar10" or "svhn_cropped" (with an optional
        "/config:version" as tfds accepts).
      data_dir: the tfds data_dir holding the prepared copy (default: tfds' own,
        `$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
      num_train: > 0 reads only the first `num_train` train records; 0 reads all.
      num_test: the same for the test split.

    Returns:
      A `Dataset` named `name`, images (N, H, W, C) uint8, labels int32.

    Raises:
      ValueError: no prepared copy in `data_dir` (the message says what to use instead),
        or the dataset has no `image`/`label` features.
    """
    import tensorflow_datasets as tfds  # heavy; only for users of this source

    splits = {}
    for split, limit in (("train", num_train), ("test", num_test)):
        try:
            source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except Exception as error:  # tfds raises many types here; all mean "not readable"
            raise ConfigError(_not_prepared_message(name, split, data_dir, error)) from error
        splits[split] = _read_all(source, name, split, limit)
    label_feature = source.dataset_info.features["label"]
    return Dataset(
        train_images=splits["train"][0],
        train_labels=splits["train"][1],
        test_images=splits["test"][0],
        test_labels=splits["test"][1],
        num_classes=int(label_feature.num_classes),
        class_names=tuple(label_feature.names),
        name=name,
    )


def _read_all(
    source: Sequence[dict[str, Any]], name: str, split: str, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, C) uint8 images and (N,) int32 labels of the first `limit` (0: all) records."""
    features = source.dataset_info.features
    if "image" not in features or "label" not in features:
        raise ConfigError(
            f"tfds dataset {name!r} has features {sorted(features.keys())}; capjax needs an "
            "'image' and a 'label' feature."
        )
    count = min(limit, len(source)) if limit else len(source)
    if count == 0:
        raise ConfigError(f"tfds dataset {name!r} split {split!r} is empty.")
    # One record at a time: `__getitems__` would batch reads, but tfds' own mock_data (used in
    # tests) does not support it, and decoding the images costs more than reading anyway.
    first = np.asarray(source[0]["image"])
    if first.dtype != np.uint8 or first.ndim != 3:
        raise ConfigError(
            f"tfds dataset {name!r}: images are {first.dtype} {first.shape}; capjax needs "
            "(H, W, C) uint8 images."
        )
    images = np.empty((count,) + first.shape, np.uint8)
    labels = np.empty((count,), np.int32)
    for i in tqdm(range(count), desc=f"Reading {name} {split}", unit="img", leave=False):
        record = source[i]
        if np.shape(record["image"]) != first.shape:
            raise ConfigError(
                f"tfds dataset {name!r} split {split!r}: record {i} has an image of shape "
                f"{np.shape(record['image'])}, record 0 of {first.shape}; capjax needs "
                "images of one size."
            )
        images[i] = record["image"]
        labels[i] = record["label"]
    return images, labels


def _not_prepared_message(name: str, split: str, data_dir: str | None, error: Exception) -> str:
    where = data_dir or "the default tfds data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    cause = " ".join(f"{type(error).__name__}: {error}".split())
    if len(cause) > _MAX_CAUSE_CHARS:  # e.g. tfds lists every dataset name it knows
        cause = cause[:_MAX_CAUSE_CHARS] + " ..."
    return (
        f"No readable prepared copy of tfds dataset {name!r} (split {split!r}) in {where}, "
        "and capjax never downloads. Use an image folder instead: "
        "--config.data.source=folder --config.data.dir=<image folder> "
        "(e.g. ../shared/data/cifar10-jpeg), or point to a prepared copy: "
        "--config.data.dir=<tfds data_dir> holding it in ArrayRecord format (made on a machine "
        f"with network and TensorFlow by `tfds build {name} --file_format=array_record`). "
        f"tfds said: {cause}"
    )
