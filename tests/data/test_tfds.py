"""The tfds source: mocked datasets, a real (tiny) ArrayRecord copy, and failing fast offline."""

import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from capjax.data import load_dataset


class CapjaxTinyImages(tfds.core.GeneratorBasedBuilder):
    """A 3-class dataset of 4x4 images that can be prepared offline without TensorFlow.

    Its images are a `Tensor` feature rather than `Image` (encoding PNGs needs TensorFlow);
    reading goes through the same `tfds.data_source` ArrayRecord path as cifar10.
    """

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(4, 4, 3), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=["ant", "bee", "cow"]),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(7), "test": self._generate_examples(5)}

    def _generate_examples(self, count):
        for i in range(count):
            yield i, {"image": np.full((4, 4, 3), 10 * i + count, np.uint8), "label": i % 3}


@pytest.mark.parametrize("name", ["cifar10", "svhn_cropped"])
def test_mocked_dataset(name, tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        ds = load_dataset("tfds", name=name, data_dir=str(tmp_path))
    assert ds.name == name and ds.num_classes == 10 and len(ds.class_names) == 10
    assert ds.train_images.shape == (12, 32, 32, 3) and ds.train_images.dtype == np.uint8
    assert ds.test_images.shape == (12, 32, 32, 3)
    assert ds.train_labels.dtype == np.int32
    assert ds.train_labels.min() >= 0 and ds.train_labels.max() < 10
    assert ds.train_images.std() > 10  # random pixels, not a constant fill


def test_mocked_dataset_num_train_num_test(tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        ds = load_dataset("tfds", name="cifar10", data_dir=str(tmp_path), num_train=5, num_test=3)
    assert len(ds.train_labels) == 5 and len(ds.test_images) == 3


def test_prepared_array_record_copy(tmp_path):
    CapjaxTinyImages(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    ds = load_dataset("tfds", name="capjax_tiny_images", data_dir=str(tmp_path))
    assert ds.class_names == ("ant", "bee", "cow") and ds.num_classes == 3
    # ArrayRecord keeps tfds' (deterministic) shuffled order: compare as sets of examples.
    pairs = zip(ds.train_images[:, 0, 0, 0].tolist(), ds.train_labels.tolist(), strict=True)
    assert sorted(pairs) == [(10 * i + 7, i % 3) for i in range(7)]
    assert sorted(int(image[0, 0, 0]) for image in ds.test_images) == [5, 15, 25, 35, 45]
    assert ds.train_images.shape == (7, 4, 4, 3) and ds.test_labels.dtype == np.int32


@pytest.mark.parametrize("name", ["cifar10", "svhn_cropped"])
def test_missing_copy_fails_fast_naming_alternatives(name, tmp_path):
    start = time.monotonic()
    with pytest.raises(ValueError) as error:
        load_dataset("tfds", name=name, data_dir=str(tmp_path))
    assert time.monotonic() - start < 5.0
    message = str(error.value)
    assert "--config.data.source=folder --config.data.dir=<image folder>" in message
    assert "cifar10-jpeg" in message
    assert "--config.data.dir=<tfds data_dir>" in message
    assert str(tmp_path) in message
    assert not any(tmp_path.rglob("*.array_record*"))  # nothing was downloaded or built


def test_unknown_tfds_name_fails_fast(tmp_path):
    with pytest.raises(ValueError, match="no_such_dataset_xyz"):
        load_dataset("tfds", name="no_such_dataset_xyz", data_dir=str(tmp_path))
