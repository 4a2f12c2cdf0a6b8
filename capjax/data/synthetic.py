"""A procedurally generated 10-class 32x32 RGB dataset: shapes and textures on clutter.

It needs no download, generates its images in a vectorised numpy pass, and is made to be
learnable fast yet not trivial. Measured with the tiny CNN
(`get_classifier("tiny", widths=(16, 32, 64))`, Adam 3e-3 with cosine decay, batch 32, no
augmentation): 90-96% test accuracy after 600 steps (three seeds) and 99.8% after 1,800
steps; yet PGD-10 brings that model to 60% at eps
4/255 and 6% at 8/255. Classes differ only in shape or texture, never in colour, size or
position.

Every image holds one object of the labelled class, drawn in a random colour at some
contrast against the background, with a random radius (8 to 12 px), position and rotation,
over a background of a random colour with a random linear gradient, a few small blobs of
random colours (clutter) and per-pixel Gaussian noise of random strength. The classes:

    0 disk       a filled circle
    1 ring       a thin circle outline
    2 frame      a square outline with a thick stroke
    3 triangle   an equilateral triangle outline
    4 cross      a plus sign of two equal bars
    5 star       a disk cut into six wedges (a pinwheel)
    6 stripes    a disk filled with parallel stripes
    7 checker    a disk filled with a checkerboard
    8 dots       a disk filled with a sparse square grid of dots
    9 speckle    a disk filled with a random pattern of 2x2-pixel cells

Textures have a random period (4 to 6 px) and follow the object's rotation.

Generation is deterministic: chunk `k` of split `split` is drawn from
`np.random.default_rng([seed, split, k])`, so the same seed gives identical arrays, train and
test come from disjoint random streams, and the first n images do not depend on how many
are generated in all.
"""

from __future__ import annotations

import numpy as np

from capjax.core.errors import ConfigError
from capjax.data.dataset import Dataset

CLASS_NAMES = (
    "disk",
    "ring",
    "frame",
    "triangle",
    "cross",
    "star",
    "stripes",
    "checker",
    "dots",
    "speckle",
)
IMAGE_SIZE = 32
DEFAULT_NUM_TRAIN = 10_000
DEFAULT_NUM_TEST = 2_000
# Images are drawn in fixed-size chunks, each from its own seeded stream (see module doc).
CHUNK = 250
_TRAIN_STREAM, _TEST_STREAM = 0, 1

# Difficulty knobs, in pixels or [0, 1] colour units.
SIZE_RANGE = (8.0, 12.0)  # object "radius"
CONTRAST_RANGE = (0.5, 0.9)  # colour distance object <-> background (before clipping)
GRADIENT_MAX = 0.15  # background colour change from centre to edge
NUM_CLUTTER = 3
CLUTTER_RADIUS_RANGE = (0.7, 1.5)
NOISE_STD_RANGE = (0.0, 0.03)
TEXTURE_PERIOD_RANGE = (4.0, 6.0)


def load_synthetic(num_train: int = 0, num_test: int = 0, seed: int = 0) -> Dataset:
    """Generates the synthetic dataset.

    Args:
      num_train: number of train images (0: 10000).
      num_test: number of test images (0: 2000).
      seed: integer seed; the same seed gives identical arrays.

    Returns:
      A `Dataset` named "synthetic" with (N, 32, 32, 3) uint8 images and balanced labels.
    """
    train_images, train_labels = generate(num_train or DEFAULT_NUM_TRAIN, seed, _TRAIN_STREAM)
    test_images, test_labels = generate(num_test or DEFAULT_NUM_TEST, seed, _TEST_STREAM)
    return Dataset(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        num_classes=len(CLASS_NAMES),
        class_names=CLASS_NAMES,
        name="synthetic",
    )


def generate(num: int, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """Draws `num` images from random stream `stream` of `seed`.

    Returns:
      images: (num, 32, 32, 3) uint8; labels: (num,) int32, each class equally often in
      every chunk of `CHUNK` images.
    """
    if num < 1:
        raise ConfigError(f"The synthetic dataset needs num >= 1 images, got {num}.")
    images, labels = [], []
    for chunk in range(-(-num // CHUNK)):
        rng = np.random.default_rng([seed, stream, chunk])
        chunk_images, chunk_labels = _generate_chunk(rng, CHUNK)
        images.append(chunk_images)
        labels.append(chunk_labels)
    return np.concatenate(images)[:num], np.concatenate(labels)[:num]


def _generate_chunk(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n images with balanced labels, vectorised over the batch (float32 throughout)."""
    labels = rng.permutation(np.arange(n) % len(CLASS_NAMES)).astype(np.int32)
    background = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    image = _background(rng, background)
    image = _paint(image, *_clutter(rng, n))
    image = _paint(image, _object_sdf(rng, labels), _contrasting_colour(rng, background))
    noise_std = rng.uniform(*NOISE_STD_RANGE, (n, 1, 1, 1)).astype(np.float32)
    image += noise_std * rng.standard_normal(image.shape, dtype=np.float32)
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8), labels


# Pixel-centre coordinates, shaped to broadcast against (n, H, W).
_GRID = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5
_YS, _XS = _GRID[None, :, None], _GRID[None, None, :]


def _col(values: np.ndarray) -> np.ndarray:
    """(n,) -> (n, 1, 1) (or (n, k) -> (n, 1, 1, k)) to broadcast against images."""
    return values.reshape(values.shape[:1] + (1, 1) + values.shape[1:])


def _uniform(rng: np.random.Generator, low: float, high: float, shape) -> np.ndarray:
    return rng.uniform(low, high, shape).astype(np.float32)


def _background(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """(n, H, W, 3): `colour` (n, 3) plus a linear gradient along a random direction."""
    n = len(colour)
    angle = _col(_uniform(rng, 0.0, 2 * np.pi, n))
    centre = IMAGE_SIZE / 2
    ramp = (np.cos(angle) * (_XS - centre) + np.sin(angle) * (_YS - centre)) / centre
    slope = _uniform(rng, -GRADIENT_MAX, GRADIENT_MAX, (n, 3))
    return _col(colour) + ramp[..., None] * _col(slope)


def _clutter(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Small blobs of random colours: their signed distance (n, H, W) and colour (n, H, W, 3).

    All blobs are painted in one pass, each pixel taking the colour of the blob it lies
    deepest in: the same picture as painting them one by one, at a fraction of the cost.
    """
    centres = _uniform(rng, 0.0, IMAGE_SIZE, (NUM_CLUTTER, 2, n))
    radii = _uniform(rng, *CLUTTER_RADIUS_RANGE, (NUM_CLUTTER, n))
    colours = _uniform(rng, 0.0, 1.0, (n, NUM_CLUTTER, 3))
    sdf = np.full((n, IMAGE_SIZE, IMAGE_SIZE), np.inf, np.float32)
    deepest = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), np.intp)
    for k, ((cx, cy), radius) in enumerate(zip(centres, radii, strict=True)):
        # Summing (n, 1, W) and (n, H, 1) squares is cheaper than hypot on (n, H, W).
        blob = np.sqrt((_XS - _col(cx)) ** 2 + (_YS - _col(cy)) ** 2) - _col(radius)
        deeper = blob < sdf
        sdf = np.where(deeper, blob, sdf)
        deepest = np.where(deeper, k, deepest)
    return sdf, colours[np.arange(n)[:, None, None], deepest]


def _object_sdf(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """(n, H, W) signed distance to each image's object, of class `labels[i]`."""
    n = len(labels)
    size = _uniform(rng, *SIZE_RANGE, n)
    margin = 0.7 * size + 1.0  # keeps most of the object inside the image
    cx = margin + _uniform(rng, 0.0, 1.0, n) * (IMAGE_SIZE - 2 * margin)
    cy = margin + _uniform(rng, 0.0, 1.0, n) * (IMAGE_SIZE - 2 * margin)
    theta = _col(_uniform(rng, 0.0, 2 * np.pi, n))
    period = _uniform(rng, *TEXTURE_PERIOD_RANGE, n)
    dx, dy = _XS - _col(cx), _YS - _col(cy)
    u = np.cos(theta) * dx + np.sin(theta) * dy
    v = np.cos(theta) * dy - np.sin(theta) * dx
    sdf = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for label, shape_sdf in enumerate(_SHAPES):
        idx = np.flatnonzero(labels == label)
        sdf[idx] = shape_sdf(u[idx], v[idx], _col(size[idx]), _col(period[idx]))
    return sdf


def _paint(image: np.ndarray, sdf: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Composites `colour` where the signed distance `sdf` (n, H, W) < 0, anti-aliased.

    `colour` is (n, 3), one per image, or (n, H, W, 3), one per pixel.
    """
    if colour.ndim == 2:
        colour = colour[:, None, None, :]
    coverage = np.clip(0.5 - sdf, 0.0, 1.0)[..., None]
    return image + coverage * (colour - image)


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A colour at a random distance in CONTRAST_RANGE from `background` (n, 3)."""
    direction = rng.standard_normal(background.shape).astype(np.float32)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-6
    distance = rng.uniform(*CONTRAST_RANGE, (len(background), 1)).astype(np.float32)
    colour = background + direction * distance
    # Where a channel would leave [0, 1], step the other way so the contrast survives.
    colour = np.where((colour < 0) | (colour > 1), background - direction * distance, colour)
    return np.clip(colour, 0.0, 1.0)


# Signed distance functions (negative inside, roughly in pixels, which is what anti-aliasing
# needs) in the object's frame. Each takes u, v: (k, H, W) pixel coordinates centred on the
# object and rotated with it; size and texture period: (k, 1, 1).


def _disk(u, v, s, p):
    return np.hypot(u, v) - s


def _ring(u, v, s, p):
    return np.abs(np.hypot(u, v) - 0.8 * s) - 0.12 * s


def _frame(u, v, s, p):
    return np.abs(np.maximum(np.abs(u), np.abs(v)) - 0.72 * s) - 0.18 * s


def _triangle(u, v, s, p):
    # Outline of the intersection of three half-planes with normals 120 degrees apart.
    angles = np.pi / 2 + 2 * np.pi / 3 * np.arange(3)
    filled = np.max([np.cos(a) * u + np.sin(a) * v for a in angles], axis=0) - 0.5 * s
    return np.abs(filled + 0.2 * s) - 0.14 * s


def _cross(u, v, s, p):
    def bar(along, across):
        return np.maximum(np.abs(along) - s, np.abs(across) - 0.25 * s)

    return np.minimum(bar(u, v), bar(v, u))


def _textured_disk(u, v, s, pattern):
    """A disk keeping only where `pattern` (a signed distance, negative = ink) is inked."""
    return np.maximum(_disk(u, v, s, None), pattern)


def _star(u, v, s, p):
    spokes = 6
    # Angular wave times r / spokes approximates the pixel distance to the wedge edges.
    return _textured_disk(u, v, s, -np.sin(spokes * np.arctan2(v, u)) * np.hypot(u, v) / spokes)


def _stripes(u, v, s, p):
    # A sine wave of period p, scaled by p / 2pi so that near its zeros it is a pixel distance.
    return _textured_disk(u, v, s, -np.sin(2 * np.pi * u / p) * p / (2 * np.pi))


def _checker(u, v, s, p):
    wave = -np.sin(2 * np.pi * u / p) * np.sin(2 * np.pi * v / p) * p / (2 * np.pi)
    return _textured_disk(u, v, s, wave)


def _dots(u, v, s, p):
    p = 1.4 * p  # sparser than the checkerboard's squares, to tell them apart
    cell_u, cell_v = np.mod(u, p) - 0.5 * p, np.mod(v, p) - 0.5 * p
    return _textured_disk(u, v, s, np.hypot(cell_u, cell_v) - 0.25 * p)


def _speckle(u, v, s, p):
    # A random binary pattern of 2x2-pixel cells (in the rotated frame) from a fixed hash of
    # the cell coordinates, so that it stays a pure function of (u, v).
    cell = np.floor(u / 2.0) * 12.9898 + np.floor(v / 2.0) * 78.233
    noise = np.mod(np.sin(cell) * 43758.5453, 1.0)
    return _textured_disk(u, v, s, np.where(noise < 0.5, -1.0, 1.0))


# In label order, matching CLASS_NAMES.
_SHAPES = (_disk, _ring, _frame, _triangle, _cross, _star, _stripes, _checker, _dots, _speckle)
