"""The `folder` source: an ImageFolder tree decoded once with Pillow, then cached as arrays.

Layout: `root/{train,test}/<class>/*.{png,jpg,jpeg}` (extensions in any case). Classes are
the subfolder names, sorted; train and test must have the same ones. Every image is decoded
to RGB uint8 and all must have the same size. Each split is served in a fixed pseudo-random
order (`_mixed_order`), so its first n examples mix the classes.

The decoded arrays are cached in `cache_dir` as an `.npz` (written with `np.savez`, read
with `allow_pickle=False`), keyed by a hash of the absolute root and of every file's
(relative path, size, mtime): a changed, added or removed file means a new key, so a stale
cache is never used. The cache is written to a temporary file and renamed into place, so a
crash never leaves a corrupt cache; an unreadable cache is decoded again.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import hashlib
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from capjax.core.errors import ConfigError
from capjax.data.dataset import Dataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
DEFAULT_CACHE_DIR = "~/.cache/capjax/folders"
SPLITS = ("train", "test")
# Bump when the cache's contents change meaning, so that old caches are ignored.
_CACHE_VERSION = "1"
# Decoding small images is part I/O, part C code that releases the GIL, so a few threads per
# core keep every core busy where a plain loop waits on each read.
_NUM_THREADS = min(16, 2 * (os.cpu_count() or 1))
_CHUNK = 256  # images per thread-pool task

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _SplitListing:
    """One split's image files, in a fixed order, with their labels and cache-key facts."""

    class_names: tuple[str, ...]
    paths: list[Path]
    labels: np.ndarray  # (N,) int32
    fingerprints: list[str]  # "relative/path\0size\0mtime_ns", one per file


def load_folder(root: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Dataset:
    """Loads an ImageFolder tree, from the cache when the folder has not changed.

    Args:
      root: folder holding `train/` and `test/`, each with one subfolder per class.
      cache_dir: where decoded arrays are cached (default `~/.cache/capjax/folders`).

    Returns:
      A `Dataset` named "folder:<absolute root>", labels following the sorted class names,
      each split in the fixed mixed order of `_mixed_order`.

    Raises:
      ValueError: root or a split folder missing, a class folder without images, train and
        test classes differ, an image that cannot be decoded, images of differing sizes.
    """
    root = Path(root).expanduser().resolve()  # canonical: "../x" and "x" share a cache
    if not root.is_dir():
        raise ConfigError(f"Image folder {root} does not exist (or is not a directory).")
    listings = {split: _list_split(root, split) for split in SPLITS}
    _check_same_classes(root, listings["train"].class_names, listings["test"].class_names)

    cache_path = _cache_path(root, listings, cache_dir)
    cached = _read_cache(cache_path, root)
    if cached is not None:
        log.info("Loaded %s from cache %s", root, cache_path)
        return cached
    arrays = {}
    for split, listing in listings.items():
        arrays[f"{split}_images"] = _decode_all(listing.paths, desc=f"Decoding {root / split}")
        arrays[f"{split}_labels"] = listing.labels
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise ConfigError(
            f"Image folder {root}: train images are {_size(arrays['train_images'][0])} but test "
            f"images are {_size(arrays['test_images'][0])}; all images must have one size."
        )
    class_names = listings["train"].class_names
    _write_cache(cache_path, arrays, class_names)
    return _make_dataset(root, arrays, class_names)


def _list_split(root: Path, split: str) -> _SplitListing:
    split_dir = root / split
    if not split_dir.is_dir():
        raise ConfigError(
            f"Image folder {root} has no {split}/ subfolder; expected the layout "
            f"{root}/{{train,test}}/<class>/*.png|jpg."
        )
    class_dirs = sorted(
        (entry for entry in os.scandir(split_dir) if entry.is_dir() and entry.name[0] != "."),
        key=lambda entry: entry.name,
    )
    if not class_dirs:
        raise ConfigError(f"{split_dir} has no class subfolders.")
    paths, labels, fingerprints = [], [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            (
                entry
                for entry in os.scandir(class_dir.path)
                if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)
            ),
            key=lambda entry: entry.name,
        )
        if not files:
            raise ConfigError(
                f"Class folder {class_dir.path} holds no images "
                f"({', '.join(IMAGE_EXTENSIONS)}, any case)."
            )
        for entry in files:
            stat = entry.stat()
            paths.append(Path(entry.path))
            labels.append(label)
            fingerprints.append(
                f"{split}/{class_dir.name}/{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}"
            )
    return _SplitListing(
        class_names=tuple(entry.name for entry in class_dirs),
        paths=paths,
        labels=np.asarray(labels, np.int32),
        fingerprints=fingerprints,
    )


def _check_same_classes(root: Path, train: tuple[str, ...], test: tuple[str, ...]) -> None:
    if train != test:
        only_train = sorted(set(train) - set(test))
        only_test = sorted(set(test) - set(train))
        raise ConfigError(
            f"Image folder {root}: train and test have different classes; only in train/: "
            f"{only_train}, only in test/: {only_test}."
        )


def _decode_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of one image file; ValueError naming the file if unreadable."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ConfigError(f"Cannot decode image {path}: {error}") from error


def _decode_all(paths: list[Path], desc: str) -> np.ndarray:
    """(N, H, W, 3) uint8 from N image files of one size, decoded on a thread pool."""
    first = _decode_image(paths[0])
    images = np.empty((len(paths),) + first.shape, np.uint8)

    def decode_chunk(start: int) -> int:
        for i in range(start, min(start + _CHUNK, len(paths))):
            pixels = _decode_image(paths[i])
            if pixels.shape != first.shape:
                raise ConfigError(
                    f"Image {paths[i]} is {_size(pixels)} but {paths[0]} is {_size(first)}; "
                    "all images must have one size."
                )
            images[i] = pixels
        return min(_CHUNK, len(paths) - start)

    with (
        concurrent.futures.ThreadPoolExecutor(_NUM_THREADS) as pool,
        tqdm(total=len(paths), desc=desc, unit="img", leave=False) as progress,
    ):
        futures = [pool.submit(decode_chunk, start) for start in range(0, len(paths), _CHUNK)]
        try:
            for future in concurrent.futures.as_completed(futures):
                progress.update(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return images


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def _cache_path(
    root: Path, listings: dict[str, _SplitListing], cache_dir: str | os.PathLike | None
) -> Path:
    """`<cache_dir>/<root name>-<hash of root>-<hash of root and files>.npz`."""
    root_hash = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    content = hashlib.sha256(f"{_CACHE_VERSION}\0{root}\n".encode())
    for split in SPLITS:
        for fingerprint in listings[split].fingerprints:
            content.update(fingerprint.encode() + b"\n")
    cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
    return cache_dir / f"{root.name}-{root_hash}-{content.hexdigest()[:20]}.npz"


def _read_cache(path: Path, root: Path) -> Dataset | None:
    """The cached dataset, or None when there is no usable cache at `path`."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as cache:
            arrays = {key: cache[key] for key in cache.files}
        class_names = tuple(str(name) for name in arrays.pop("class_names"))
        return _make_dataset(root, arrays, class_names)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
        log.warning("Ignoring unreadable cache %s (%s); decoding %s again.", path, error, root)
        return None


def _write_cache(path: Path, arrays: dict[str, np.ndarray], class_names: tuple[str, ...]) -> None:
    """Writes the cache atomically and removes older caches of the same root."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    except OSError as error:
        log.warning("Cannot cache decoded images in %s (%s); continuing.", path.parent, error)
        return
    try:
        with os.fdopen(fd, "wb") as file:
            np.savez(file, class_names=np.asarray(class_names, dtype=str), **arrays)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    # Same root, older contents: useless from now on, and each can be hundreds of MB.
    prefix = path.name.rsplit("-", 1)[0]
    for stale in path.parent.glob(f"{glob.escape(prefix)}-*.npz"):
        if stale != path:
            stale.unlink(missing_ok=True)


def _make_dataset(
    root: Path, arrays: dict[str, np.ndarray], class_names: tuple[str, ...]
) -> Dataset:
    train = _mixed_order(len(arrays["train_labels"]))
    test = _mixed_order(len(arrays["test_labels"]))
    return Dataset(
        train_images=arrays["train_images"][train],
        train_labels=arrays["train_labels"][train],
        test_images=arrays["test_images"][test],
        test_labels=arrays["test_labels"][test],
        num_classes=len(class_names),
        class_names=class_names,
        name=f"folder:{root}",
    )


def _mixed_order(n: int) -> np.ndarray:
    """The fixed order a split of `n` examples is served in: a permutation seeded by 0.

    Files are listed class by class, so without it the first 2,000 CIFAR-10 test images would
    be two classes, and `num_test`, `num_train` or a validation holdout would select by
    class. The order depends on `n` alone (not on any config seed), so every run, task and
    cache sees the same examples at the same indices, as with tfds' fixed split order.
    """
    return np.random.default_rng(0).permutation(n)
