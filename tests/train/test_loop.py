"""The generic loop on a toy task: checkpoints, resume, divergence, signals, foreign workdirs."""

from __future__ import annotations

import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capjax.train.checkpoint import Checkpointer
from capjax.train.loop import LoopConfig, TrainingDiverged, TrainingInterrupted, fit


class CountingBatches:
    """Batch i holds the value i (as a global batch of 8), so the data order is visible."""

    steps_per_epoch = 5

    def __init__(self):
        self.position = 0

    def __next__(self):
        value = np.full((8, 1), self.position, np.float32)
        self.position += 1
        return {"x": value}

    def state_dict(self):
        return {"epoch": self.position // self.steps_per_epoch, "step": self.position}

    def load_state_dict(self, state):
        self.position = state["step"]


def init_state(key):
    return {"w": jnp.zeros((3,)), "noise": jax.random.uniform(key, (3,))}


def make_step(nan_at: int | None = None):
    def train_step(state, batch, key):
        # Depends on the data value and on the key, so both the data position and the RNG
        # must be restored for a resumed run to match.
        delta = batch["x"].mean() + jax.random.uniform(key, (3,))
        w = state["w"] * 0.5 + delta
        loss = jnp.sum(w)
        if nan_at is not None:
            loss = jnp.where(batch["x"].mean() == nan_at, jnp.nan, loss)
        return {"w": w, "noise": state["noise"]}, {"loss": loss}

    return train_step


def run(workdir, steps=10, nan_at=None, on_step_end=None, fingerprint=None, batches=None):
    return fit(
        init_state=init_state,
        train_step=make_step(nan_at),
        batches=batches or CountingBatches(),
        workdir=str(workdir),
        config=LoopConfig(num_steps=steps, log_every=2, checkpoint_every=3),
        fingerprint=fingerprint or {"task": "toy"},
        on_step_end=on_step_end,
    )


def test_fresh_run_logs_metrics_and_checkpoints(tmp_path):
    result = run(tmp_path)
    assert result.step == 10 and result.resumed_from is None
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    # Metrics are also fetched (and checked for NaN) before every checkpoint (every 3 steps).
    assert [r["step"] for r in records] == [2, 3, 4, 6, 8, 9, 10]
    assert all(np.isfinite(r["loss"]) and r["images_per_s"] > 0 for r in records)
    checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
    assert checkpointer.latest_step() == 10
    assert checkpointer.read_meta()["data"] == {"epoch": 2, "step": 10}
    checkpointer.close()


def test_sigterm_checkpoints_and_resume_is_bit_identical(tmp_path):
    straight = run(tmp_path / "straight")

    def deliver_sigterm(step):
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted) as info:
        run(tmp_path / "resumed", on_step_end=deliver_sigterm)
    assert info.value.step == 4 and info.value.signum == signal.SIGTERM
    resumed = run(tmp_path / "resumed")
    assert resumed.resumed_from == 4
    np.testing.assert_array_equal(np.asarray(resumed.state["w"]), np.asarray(straight.state["w"]))


def test_finished_run_is_not_redone(tmp_path):
    run(tmp_path)
    calls = []
    again = run(tmp_path, on_step_end=calls.append)
    assert again.step == 10 and again.resumed_from == 10 and calls == []


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match="last good checkpoint \\(step 3\\)"):
        run(tmp_path, nan_at=4)  # batch value 4 is step 5's batch
    checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
    assert checkpointer.latest_step() == 3
    checkpointer.close()


def test_foreign_checkpoint_is_refused_and_left_untouched(tmp_path):
    run(tmp_path, steps=3)
    before = sorted(os.listdir(tmp_path / "checkpoints"))
    with pytest.raises(ValueError, match="does not match this run"):
        run(tmp_path, steps=6, fingerprint={"task": "other"})
    assert sorted(os.listdir(tmp_path / "checkpoints")) == before
