"""BatchIterator: determinism, epoch permutations, exact resume, multi-process slices;
eval_batches: every example once, fixed shapes."""

import itertools

import numpy as np
import pytest

from capjax.data import BatchIterator, eval_batches

N = 103  # not a multiple of the batch sizes below: the remainder must be dropped


def _data(n=N):
    # Each "image" holds its own index, so batches reveal exactly which examples they carry.
    return np.arange(n, dtype=np.int32).reshape(n, 1, 1, 1), np.arange(n, dtype=np.int32) % 7


def _indices(batch):
    return batch["image"][:, 0, 0, 0]


def test_batch_contents_and_shapes():
    images, labels = _data()
    batch = next(BatchIterator(images, labels, global_batch_size=10, seed=0))
    assert batch["image"].shape == (10, 1, 1, 1) and batch["label"].shape == (10,)
    assert batch["label"].dtype == np.int32
    np.testing.assert_array_equal(batch["label"], labels[_indices(batch)])


def test_uint8_images_keep_their_dtype():
    images = np.zeros((20, 4, 4, 3), np.uint8)
    batch = next(BatchIterator(images, np.zeros(20, np.int32), global_batch_size=4, seed=0))
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (4, 4, 4, 3)


def test_deterministic_per_seed():
    images, labels = _data()

    def take(seed):
        return [_indices(b) for b in itertools.islice(BatchIterator(images, labels, 8, seed), 30)]

    a, b, c = take(1), take(1), take(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_each_epoch_is_a_permutation():
    images, labels = _data()
    it = BatchIterator(images, labels, global_batch_size=10, seed=0)
    assert it.steps_per_epoch == 10
    epochs = []
    for epoch in range(3):
        assert (it.epoch, it.step) == (epoch, 0)
        seen = np.concatenate([_indices(next(it)) for _ in range(it.steps_per_epoch)])
        assert len(seen) == 100 and len(np.unique(seen)) == 100  # each index at most once
        np.testing.assert_array_equal(seen, it.permutation(epoch)[:100])
        epochs.append(seen)
    assert (it.epoch, it.step) == (3, 0)
    assert not np.array_equal(epochs[0], epochs[1])
    # Over epochs, the dropped remainder changes, so every example gets seen.
    assert len(np.unique(np.concatenate(epochs))) == N


def test_exact_resume():
    images, labels = _data()
    reference = BatchIterator(images, labels, global_batch_size=8, seed=5)
    for k in (0, 3, 12, 13, 27):  # 12 batches per epoch: includes epoch boundaries
        uninterrupted = BatchIterator(images, labels, global_batch_size=8, seed=5)
        for _ in range(k):
            next(uninterrupted)
        state = uninterrupted.state_dict()
        assert state == {"epoch": k // 12, "step": k % 12}
        resumed = BatchIterator(images, labels, global_batch_size=8, seed=5)
        resumed.load_state_dict(dict(state))
        for _ in range(15):
            expected, got = next(uninterrupted), next(resumed)
            np.testing.assert_array_equal(got["image"], expected["image"])
            np.testing.assert_array_equal(got["label"], expected["label"])
    assert reference.state_dict() == {"epoch": 0, "step": 0}


def test_process_slices_concatenate_to_the_global_batch():
    images, labels = _data()
    single = BatchIterator(images, labels, global_batch_size=12, seed=3)
    shards = [
        BatchIterator(images, labels, 12, seed=3, process_index=p, process_count=4)
        for p in range(4)
    ]
    for _ in range(20):  # crosses epoch boundaries (8 steps per epoch)
        parts = [next(shard) for shard in shards]
        assert all(part["image"].shape[0] == 3 for part in parts)
        glued = np.concatenate([part["image"] for part in parts])
        np.testing.assert_array_equal(glued, next(single)["image"])
    assert all(shard.state_dict() == single.state_dict() for shard in shards)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(global_batch_size=104), "must be in"),
        (dict(global_batch_size=0), "must be in"),
        (dict(global_batch_size=10, process_count=3), "divisible"),
        (dict(global_batch_size=10, process_count=2, process_index=2), "process_index"),
    ],
)
def test_bad_arguments(kwargs, match):
    images, labels = _data()
    with pytest.raises(ValueError, match=match):
        BatchIterator(images, labels, seed=0, **kwargs)


def test_mismatched_arrays():
    with pytest.raises(ValueError, match="same length"):
        BatchIterator(np.zeros((5, 2, 2, 3)), np.zeros(4), global_batch_size=2, seed=0)


@pytest.mark.parametrize(
    "state", [{"epoch": 0}, {"epoch": -1, "step": 0}, {"epoch": 0, "step": 10}]
)
def test_bad_state(state):
    images, labels = _data()
    with pytest.raises(ValueError):
        BatchIterator(images, labels, 10, seed=0).load_state_dict(state)


@pytest.mark.parametrize("batch_size", [1, 10, 103, 128])
def test_eval_batches_cover_every_example_once(batch_size):
    images, labels = _data()
    batches = list(eval_batches(images, labels, batch_size))
    assert len(batches) == -(-N // batch_size)
    for batch in batches:
        assert batch["image"].shape == (batch_size, 1, 1, 1)
        assert batch["label"].shape == batch["mask"].shape == (batch_size,)
        assert batch["mask"].dtype == bool and batch["label"].dtype == np.int32
    valid = np.concatenate([_indices(b)[b["mask"]] for b in batches])
    np.testing.assert_array_equal(valid, np.arange(N))  # all, once, in order
    np.testing.assert_array_equal(np.concatenate([b["label"][b["mask"]] for b in batches]), labels)
    assert sum(int(b["mask"].sum()) for b in batches) == N
    padding = np.concatenate([_indices(b)[~b["mask"]] for b in batches])
    assert len(padding) == len(batches) * batch_size - N and not padding.any()
