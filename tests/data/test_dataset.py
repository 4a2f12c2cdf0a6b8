"""Dataset validation, `take`, and `load_dataset` dispatch."""

import dataclasses

import numpy as np
import pytest

import capjax.data as data
from capjax.data import SOURCES, Dataset, load_dataset


def _dataset(**overrides):
    fields = dict(
        train_images=np.zeros((6, 4, 4, 3), np.uint8),
        train_labels=np.array([0, 1, 2, 0, 1, 2], np.int32),
        test_images=np.zeros((3, 4, 4, 3), np.uint8),
        test_labels=np.array([2, 1, 0], np.int32),
        num_classes=3,
        class_names=("a", "b", "c"),
        name="toy",
    )
    fields.update(overrides)
    return Dataset(**fields)


def test_public_names():
    assert SOURCES == ("tfds", "folder", "synthetic")
    for name in ("Dataset", "load_dataset", "BatchIterator", "eval_batches"):
        assert hasattr(data, name)
    assert {"augment_batch", "to_float", "SOURCES"} <= set(data.__all__)


def test_valid_dataset_is_frozen():
    ds = _dataset()
    assert ds.image_shape == (4, 4, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(train_images=np.zeros((6, 4, 4, 3), np.float32)), "uint8"),
        (dict(test_images=np.zeros((3, 4, 4), np.uint8)), r"\(N, H, W, C\)"),
        (dict(train_labels=np.zeros(6, np.int64)), "int32"),
        (dict(test_labels=np.zeros(2, np.int32)), "3 images but 2 labels"),
        (dict(test_labels=np.array([0, 3, 1], np.int32)), r"outside \[0, 3\)"),
        (dict(train_labels=np.array([0, -1, 0, 0, 0, 0], np.int32)), "outside"),
        (dict(class_names=("a", "b")), "2 class names"),
        (dict(test_images=np.zeros((3, 5, 4, 3), np.uint8)), "must agree"),
    ],
)
def test_validation(overrides, match):
    with pytest.raises(ValueError, match=match):
        _dataset(**overrides)


def test_take_keeps_the_first():
    ds = _dataset().take(num_train=4)
    np.testing.assert_array_equal(ds.train_labels, [0, 1, 2, 0])
    assert len(ds.test_labels) == 3  # 0 keeps all
    with pytest.raises(ValueError, match=">= 0"):
        _dataset().take(num_train=-1)


def test_holdout_serves_the_last_training_images_as_the_test_split():
    train_images = np.broadcast_to(np.arange(6, dtype=np.uint8)[:, None, None, None], (6, 4, 4, 3))
    train_images = np.ascontiguousarray(train_images)
    ds = _dataset(train_images=train_images).holdout(2)
    np.testing.assert_array_equal(ds.train_labels, [0, 1, 2, 0])
    np.testing.assert_array_equal(ds.test_labels, [1, 2])
    np.testing.assert_array_equal(ds.test_images[:, 0, 0, 0], [4, 5])  # no overlap with train
    np.testing.assert_array_equal(ds.train_images[:, 0, 0, 0], [0, 1, 2, 3])
    assert "validation: last 2" in ds.name
    unchanged = _dataset()
    assert unchanged.holdout(0) is unchanged
    for bad in (-1, 6):
        with pytest.raises(ValueError, match="data.validation"):
            _dataset().holdout(bad)


def test_load_from_config_validation_counts_within_the_holdout(tmp_path):
    import ml_collections

    from capjax.config_defaults import data_config
    from capjax.data import load_from_config

    config = ml_collections.ConfigDict({"seed": 0, "data": data_config("synthetic")})
    config.data.update({"num_train": 300, "num_test": 40, "validation": 100})
    ds = load_from_config(config, str(tmp_path))
    full = load_dataset("synthetic", num_train=300)
    assert len(ds.train_labels) == 200 and len(ds.test_labels) == 40
    np.testing.assert_array_equal(ds.test_images, full.train_images[200:240])
    np.testing.assert_array_equal(ds.train_images, full.train_images[:200])


def test_unknown_source_names_the_known_ones():
    with pytest.raises(ValueError, match="known sources: tfds, folder, synthetic"):
        load_dataset("imagenet_from_the_moon")


def test_negative_sizes_rejected():
    with pytest.raises(ValueError, match=">= 0"):
        load_dataset("synthetic", num_train=-5)
