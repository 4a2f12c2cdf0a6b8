"""Datasets as host uint8 arrays, a deterministic resumable batch iterator, and on-device
augmentation.

    ds = load_dataset("synthetic")                      # or "folder", "tfds"
    ds = load_from_config(config, workdir)              # a run config's `data` and `seed`
    it = BatchIterator(ds.train_images, ds.train_labels, global_batch_size=128, seed=0)
    batch = next(it)                                    # {"image": uint8, "label": int32}
    x = augment_batch(batch["image"], key)              # inside jit: float32 in [0, 1]
"""

from capjax.data.augment import augment_batch, to_float
from capjax.data.dataset import SOURCES, Dataset, load_dataset, load_from_config
from capjax.data.iterator import BatchIterator, eval_batches

__all__ = [
    "SOURCES",
    "BatchIterator",
    "Dataset",
    "augment_batch",
    "eval_batches",
    "load_dataset",
    "load_from_config",
    "to_float",
]
