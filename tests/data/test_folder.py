"""The folder source: layout, labels, the array cache and its invalidation, errors."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from capjax.data import folder, load_dataset

# Each class's images are filled with its own colour (plus the image index in the red
# channel), so decoded labels can be checked against pixels. PNG keeps them exact.
COLOURS = {"cat": (0, 200, 0), "dog": (0, 0, 200), "emu": (0, 100, 100)}
SIZE = (6, 5)  # width, height


def _write_image(path: Path, colour, size=SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    image.save(path, format=fmt, **({"quality": 100} if fmt == "JPEG" else {}))


def _make_folder(root: Path) -> Path:
    """train: 3 classes x (2 PNG + 1 JPG); test: 3 classes x 1 image (upper-case suffixes)."""
    for name, (_, g, b) in COLOURS.items():
        for i in range(2):
            _write_image(root / "train" / name / f"{i}.png", (10 * i, g, b))
        _write_image(root / "train" / name / "2.jpg", (20, g, b))
        _write_image(root / "test" / name / "0.PNG", (0, g, b))
        _write_image(root / "test" / name / "1.JpEg", (0, g, b))
    (root / "train" / "cat" / "notes.txt").write_text("not an image, ignored")
    return root


@pytest.fixture
def image_root(tmp_path):
    return _make_folder(tmp_path / "images")


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


_ORDER9 = np.random.default_rng(0).permutation(9)  # the folder source's fixed order
_ORDER6 = np.random.default_rng(0).permutation(6)


def _load(root, cache_dir, **kw):
    return load_dataset("folder", data_dir=str(root), cache_dir=str(cache_dir), **kw)


def test_labels_follow_sorted_class_folders(image_root, cache_dir):
    ds = _load(image_root, cache_dir)
    assert ds.class_names == ("cat", "dog", "emu") and ds.num_classes == 3
    assert ds.name == f"folder:{image_root.resolve()}"
    assert ds.train_images.shape == (9, 5, 6, 3) and ds.train_images.dtype == np.uint8
    assert ds.test_images.shape == (6, 5, 6, 3)
    # Served in the fixed mixed order (folder._mixed_order), not class by class.
    np.testing.assert_array_equal(ds.train_labels, np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])[_ORDER9])
    np.testing.assert_array_equal(ds.test_labels, np.array([0, 0, 1, 1, 2, 2])[_ORDER6])
    for images, labels in ((ds.train_images, ds.train_labels), (ds.test_images, ds.test_labels)):
        for image, label in zip(images, labels, strict=True):
            expected = np.array(COLOURS[ds.class_names[label]][1:])
            assert np.abs(image[..., 1:].astype(int) - expected).max() <= 3  # JPEG round-off
    # PNGs are exact; file-name order within a class, before the mixed order.
    second_cat = int(np.flatnonzero(_ORDER9 == 1)[0])
    np.testing.assert_array_equal(ds.train_images[second_cat], np.full((5, 6, 3), (10, 200, 0)))


def test_first_examples_mix_the_classes(image_root, cache_dir):
    ds = _load(image_root, cache_dir, num_train=4, num_test=3)
    assert len(set(ds.train_labels.tolist())) > 1 and len(set(ds.test_labels.tolist())) > 1


def test_num_train_num_test_keep_the_first(image_root, cache_dir):
    full = _load(image_root, cache_dir)
    part = _load(image_root, cache_dir, num_train=4, num_test=2)
    np.testing.assert_array_equal(part.train_images, full.train_images[:4])
    np.testing.assert_array_equal(part.test_labels, full.test_labels[:2])


def test_second_load_uses_the_cache(image_root, cache_dir, monkeypatch):
    first = _load(image_root, cache_dir)
    caches = list(cache_dir.glob("*.npz"))
    assert len(caches) == 1 and not list(cache_dir.glob("*.tmp"))

    def no_decoding(path):
        raise AssertionError(f"decoded {path} although the cache is valid")

    monkeypatch.setattr(folder, "_decode_image", no_decoding)
    second = _load(image_root, cache_dir)
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(second, field), getattr(first, field))
    assert second.class_names == first.class_names


def test_cache_holds_no_pickled_objects(image_root, cache_dir):
    _load(image_root, cache_dir)
    (cache,) = cache_dir.glob("*.npz")
    with np.load(cache, allow_pickle=False) as arrays:
        assert all(arrays[key].dtype != object for key in arrays.files)


def _count_decodes(monkeypatch) -> list:
    calls = []
    original = folder._decode_image

    def counting(path):
        calls.append(path)
        return original(path)

    monkeypatch.setattr(folder, "_decode_image", counting)
    return calls


def test_changed_file_invalidates_the_cache(image_root, cache_dir, monkeypatch):
    _load(image_root, cache_dir)
    changed = image_root / "train" / "dog" / "0.png"
    _write_image(changed, (77, 77, 77))
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    calls = _count_decodes(monkeypatch)
    ds = _load(image_root, cache_dir)
    assert len(calls) > 0
    first_dog = int(np.flatnonzero(_ORDER9 == 3)[0])  # file index 3, before the mixed order
    np.testing.assert_array_equal(ds.train_images[first_dog], np.full((5, 6, 3), 77))
    assert len(list(cache_dir.glob("*.npz"))) == 1  # the stale cache was removed


def test_added_file_invalidates_the_cache(image_root, cache_dir):
    _load(image_root, cache_dir)
    _write_image(image_root / "test" / "emu" / "2.png", (1, 2, 3))
    assert len(_load(image_root, cache_dir).test_labels) == 7


def test_corrupt_cache_is_decoded_again(image_root, cache_dir, monkeypatch):
    _load(image_root, cache_dir)
    (cache,) = cache_dir.glob("*.npz")
    cache.write_bytes(b"truncated")
    calls = _count_decodes(monkeypatch)
    ds = _load(image_root, cache_dir)
    assert len(calls) > 0 and len(ds.train_labels) == 9
    with np.load(cache, allow_pickle=False) as arrays:  # rewritten whole
        assert arrays["train_images"].shape == (9, 5, 6, 3)


def test_crash_while_writing_leaves_no_cache(image_root, cache_dir, monkeypatch):
    def crash(file, **arrays):
        file.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(folder.np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        _load(image_root, cache_dir)
    assert list(cache_dir.iterdir()) == []


def test_missing_root(tmp_path, cache_dir):
    with pytest.raises(ValueError, match="does not exist"):
        _load(tmp_path / "nowhere", cache_dir)


def test_missing_split(image_root, cache_dir):
    for path in (image_root / "test").rglob("*"):
        if path.is_file():
            path.unlink()
    for path in sorted((image_root / "test").rglob("*"), reverse=True):
        path.rmdir()
    (image_root / "test").rmdir()
    with pytest.raises(ValueError, match=r"no test/ subfolder"):
        _load(image_root, cache_dir)


def test_class_folder_without_images(image_root, cache_dir):
    (image_root / "test" / "emu" / "0.PNG").unlink()
    (image_root / "test" / "emu" / "1.JpEg").unlink()
    (image_root / "test" / "emu" / "readme.md").write_text("empty")
    with pytest.raises(ValueError, match=r"test/emu holds no images"):
        _load(image_root, cache_dir)


def test_corrupt_image_names_the_file(image_root, cache_dir):
    (image_root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"Cannot decode image .*train/dog/broken\.png"):
        _load(image_root, cache_dir)


def test_truncated_jpeg_names_the_file(image_root, cache_dir):
    path = image_root / "train" / "cat" / "2.jpg"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"train/cat/2\.jpg"):
        _load(image_root, cache_dir)


def test_class_sets_differ(image_root, cache_dir):
    (image_root / "test" / "emu").rename(image_root / "test" / "owl")
    with pytest.raises(ValueError, match=r"only in train/: \['emu'\], only in test/: \['owl'\]"):
        _load(image_root, cache_dir)


def test_images_of_differing_sizes(image_root, cache_dir):
    _write_image(image_root / "train" / "emu" / "3.png", (0, 0, 0), size=(7, 5))
    with pytest.raises(ValueError, match=r"train/emu/3\.png is 7x5 .* is 6x5"):
        _load(image_root, cache_dir)


def test_train_and_test_sizes_differ(image_root, cache_dir):
    for path in (image_root / "test").rglob("*.*"):
        _write_image(path, (0, 0, 0), size=(4, 4))
    with pytest.raises(ValueError, match=r"train images are 6x5 but test images are 4x4"):
        _load(image_root, cache_dir)


def test_folder_source_needs_a_root(cache_dir):
    with pytest.raises(ValueError, match="config.data.dir"):
        load_dataset("folder", cache_dir=str(cache_dir))
