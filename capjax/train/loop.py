"""The one generic training loop every task plugs into.

A task gives a pure `train_step(state, batch, key) -> (state, metrics)` and an
`init_state(key) -> state`; the loop does the rest: a data-parallel mesh, `jax.jit` with
shardings and a donated state, orbax checkpoints (asynchronous, the last N kept) that hold
the data position too, automatic resume, SIGTERM/SIGINT handled by checkpointing and
stopping cleanly, JSON-lines metrics, a progress bar on process 0, and a stop with a clear
message when a metric turns NaN/Inf (the last good checkpoint is kept).

Randomness is `fold_in(key, step)` inside the step, and the data iterator's position is saved
with each checkpoint, so an interrupted and resumed run ends bit-identical (on CPU) to one
that ran straight through.

Batches come through a feed (`capjax.train.feeds`): gathered on the host and sent each step,
or, with `feed="device"`, gathered inside the jitted step from a copy of the whole training
split kept on the devices; both give the same batches.

Several processes (after `jax.distributed.initialize`) run the same loop: each feeds its
slice of the global batch, every process takes part in each checkpoint (orbax coordinates
the writes), only process 0 writes metrics and JSON files, and a SIGTERM on any process
stops all of them at one agreed step through JAX's preemption service.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from capjax.core import mesh as mesh_lib
from capjax.core.errors import ConfigError
from capjax.core.jsonio import write_json
from capjax.run_once import run_once
from capjax.train.checkpoint import Checkpointer, abstract_on, state_fingerprint
from capjax.train.feeds import check_feed, make_feed


class TrainingInterrupted(Exception):
    """Raised after a SIGTERM/SIGINT once the state is checkpointed; rerun to resume."""

    def __init__(self, step: int, signum: int, workdir: str):
        self.step, self.signum, self.workdir = step, signum, workdir
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} received: checkpoint saved at step {step} in {workdir}. "
            "Run the same command again to resume."
        )


class TrainingDiverged(FloatingPointError):
    """Raised when a metric turns NaN or Inf; the last good checkpoint is left in place."""


class BatchSource(Protocol):
    """What the loop needs of a data iterator (see `capjax.data.BatchIterator`)."""

    steps_per_epoch: int

    def __next__(self) -> dict[str, np.ndarray]: ...

    def state_dict(self) -> dict[str, int]: ...

    def load_state_dict(self, state: dict[str, int]) -> None: ...


@dataclasses.dataclass
class LoopConfig:
    """How long to train and how often to log, checkpoint and evaluate (all in steps)."""

    num_steps: int
    log_every: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    eval_every: int = 0  # 0: only at the end
    seed: int = 0
    description: str = "train"

    @classmethod
    def from_train_config(
        cls, train_config, steps_per_epoch: int, *, seed: int, description: str
    ) -> LoopConfig:
        """From a config's `train` section: epochs, log_every_steps, checkpoint_every_steps
        (0: every epoch), keep_checkpoints and eval_every_epochs (0: only at the end)."""
        t = train_config
        return cls(
            num_steps=t.epochs * steps_per_epoch,
            log_every=t.log_every_steps,
            checkpoint_every=t.checkpoint_every_steps or steps_per_epoch,
            keep_checkpoints=t.keep_checkpoints,
            eval_every=t.get("eval_every_epochs", 0) * steps_per_epoch,
            seed=seed,
            description=description,
        )


@dataclasses.dataclass
class FitResult:
    state: Any
    step: int
    resumed_from: int | None  # step restored from, None for a fresh start
    metrics: dict[str, float]  # the last logged training metrics


class _SignalCatcher:
    """Tells the loop when to checkpoint and stop because of SIGTERM/SIGINT.

    One process: records SIGTERM/SIGINT instead of dying. Several processes: every process
    must stop at the same step (a checkpoint is a collective), so nothing is caught here;
    JAX's preemption service (started by `jax.distributed.initialize`) catches SIGTERM on any
    process and `reached_preemption_sync_point` turns true at one agreed step on all of them.
    Ctrl-C then interrupts at once, and the run resumes from its last periodic checkpoint.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._multiprocess = jax.process_count() > 1

    def __enter__(self):
        if self._multiprocess:
            return self
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals cannot be caught here
                pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means "now"
        self.signum = signum

    def check(self, step: int) -> int | None:
        """The signal to stop for after `step` completed steps, or None to go on.

        With several processes this must be called at every step, on every process.
        """
        if self._multiprocess and self.signum is None:
            try:
                if multihost_utils.reached_preemption_sync_point(step):
                    self.signum = signal.SIGTERM
            except RuntimeError as e:  # jax_enable_preemption_service turned off
                logging.warning("No coordinated stop on SIGTERM: %s", e)
                self._multiprocess = False
        return self.signum

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _check_same_checkpoint_everywhere(step: int | None, directory: str) -> None:
    """Raises ValueError unless every process sees the same latest checkpoint.

    Processes that disagree would restore different states and then hang in the first
    collective; that happens when the workdir is not on a filesystem all hosts share.
    """
    if jax.process_count() == 1:
        return
    seen = np.asarray(
        multihost_utils.process_allgather(np.asarray(-1 if step is None else step, np.int64))
    ).reshape(-1)
    if len(set(seen.tolist())) > 1:
        listing = ", ".join(
            f"process {i}: {'none' if s < 0 else f'step {s}'}" for i, s in enumerate(seen)
        )
        raise ConfigError(
            f"The processes see different checkpoints in {directory} ({listing}). With "
            "several hosts the workdir must be one directory they all share (NFS, Filestore, "
            "or a gcsfuse-mounted bucket), not a local disk on each."
        )


def _is_lead_process() -> bool:
    return jax.process_index() == 0


def append_jsonl(path: str, record: dict[str, Any]) -> None:
    """Appends one JSON record (process 0 only)."""
    if _is_lead_process():
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


def _host_metrics(pending: Sequence[dict[str, jax.Array]]) -> dict[str, float]:
    """Means over the pending steps' metrics (one device-to-host transfer)."""
    fetched = jax.device_get(list(pending))
    return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def _check_finite(metrics: dict[str, float], step: int, checkpoint_step: int | None):
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        kept = (
            f"the last good checkpoint (step {checkpoint_step}) is kept"
            if checkpoint_step is not None
            else "no checkpoint had been written yet"
        )
        raise TrainingDiverged(
            f"Training diverged by step {step}: {bad}. Stopping; {kept}. Try a lower learning "
            "rate, or check the data."
        )


def fit(
    *,
    init_state: Callable[[jax.Array], Any],
    train_step: Callable[[Any, dict[str, jax.Array], jax.Array], tuple[Any, dict[str, Any]]],
    batches: BatchSource,
    workdir: str,
    config: LoopConfig,
    fingerprint: dict[str, Any],
    evaluate: Callable[[Any], dict[str, float]] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    run_config: dict[str, Any] | None = None,
    on_step_end: Callable[[int], None] | None = None,
    feed: str = "host",
) -> FitResult:
    """Trains from scratch or from the latest checkpoint in `workdir` up to `num_steps`.

    Args:
      init_state: key -> initial state pytree (traced once, placed replicated).
      train_step: pure (state, batch, key) -> (state, scalar metrics); `batch` holds the
        global batch sharded over the mesh axis `data`; `key` is `fold_in(seed key, step)`.
      batches: the process-local batch iterator; its position is checkpointed.
      workdir: where `checkpoints/` and `metrics.jsonl` live.
      config: step counts and intervals.
      fingerprint: identifies the run's model (e.g. {"task": ..., "model": ...}); a
        checkpoint written with another fingerprint or state layout is refused.
      evaluate: state -> metrics, run every `eval_every` steps and at the end.
      mesh: defaults to all devices.
      run_config: the resolved experiment config, written to `workdir/config.json` once the
        workdir is known to be this run's (a foreign checkpoint leaves it untouched).
      on_step_end: called with the number of completed steps after each step (tests use it
        to deliver a signal at a chosen point).
      feed: "host" (each batch gathered on the host and sent), "device" (the whole split on
        the devices, batches gathered inside the step; needs a `BatchIterator`) or "auto"
        (see `capjax.train.feeds.make_feed`). The batches, and so the run, are the same.

    Raises:
      TrainingInterrupted: after checkpointing, when SIGTERM or SIGINT arrived.
      TrainingDiverged: a metric became NaN/Inf.
      ValueError: the workdir's checkpoint belongs to another model, or an unknown `feed`.
    """
    check_feed(feed)
    mesh = mesh_lib.make_mesh() if mesh is None else mesh
    os.makedirs(workdir, exist_ok=True)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    base_key = jax.random.key(config.seed)

    rep = mesh_lib.replicated(mesh)
    abstract = jax.eval_shape(init_state, base_key)
    state_shardings = jax.tree.map(lambda _: rep, abstract)
    expected = dict(fingerprint, **state_fingerprint(abstract))

    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    resumed_from = checkpointer.latest_step()
    _check_same_checkpoint_everywhere(resumed_from, checkpointer.directory)
    if resumed_from is not None:
        state, meta = checkpointer.restore(abstract_on(abstract, rep), expected)
        batches.load_state_dict(meta["data"])
        step = int(meta["step"])
    else:
        state = run_once(init_state, base_key, out_shardings=state_shardings)
        step = 0
    if run_config is not None and _is_lead_process():
        write_json(os.path.join(workdir, "config.json"), run_config)

    # After the restore (a refused checkpoint costs no upload); the feed reads the data
    # position from `batches` at every step, so the restored one holds.
    feeder = make_feed(batches, mesh, feed)

    def keyed_step(state, *inputs_and_step):
        *inputs, step = inputs_and_step
        return train_step(state, feeder.batch_from(*inputs), jax.random.fold_in(base_key, step))

    compiled_step = jax.jit(
        keyed_step,
        in_shardings=(state_shardings, *feeder.input_shardings, rep),
        out_shardings=(state_shardings, rep),
        donate_argnums=0,
    )

    def save(at_step: int):
        meta = {"step": at_step, "data": batches.state_dict(), "fingerprint": expected}
        checkpointer.save(at_step, state, meta)

    last_saved = resumed_from
    pending: list[dict[str, jax.Array]] = []
    last_metrics: dict[str, float] = {}
    images = 0
    tick = time.perf_counter()
    progress = tqdm(
        total=config.num_steps,
        initial=min(step, config.num_steps),
        desc=config.description,
        disable=not _is_lead_process(),
        dynamic_ncols=True,
    )
    try:
        with _SignalCatcher() as signals:
            while step < config.num_steps:
                inputs = feeder.next_inputs()
                images += feeder.images_per_step
                state, metrics = compiled_step(state, *inputs, jnp.asarray(step, jnp.int32))
                pending.append(metrics)
                step += 1
                progress.update(1)
                if on_step_end is not None:
                    on_step_end(step)

                stopping = signals.check(step) is not None
                due_log = step % config.log_every == 0 or step == config.num_steps
                due_ckpt = step % config.checkpoint_every == 0 or step == config.num_steps
                if pending and (due_log or due_ckpt or stopping):
                    last_metrics = _host_metrics(pending)
                    pending.clear()
                    _check_finite(last_metrics, step, last_saved)
                    elapsed = time.perf_counter() - tick
                    last_metrics["images_per_s"] = images / max(elapsed, 1e-9)
                    images, tick = 0, time.perf_counter()
                    epoch = step / max(batches.steps_per_epoch, 1)
                    append_jsonl(
                        metrics_path,
                        {"split": "train", "step": step, "epoch": round(epoch, 4), **last_metrics},
                    )
                    progress.set_postfix(
                        {k: f"{v:.4g}" for k, v in last_metrics.items()}, refresh=False
                    )
                if due_ckpt or stopping:
                    save(step)
                    last_saved = step
                if stopping:
                    checkpointer.wait()
                    raise TrainingInterrupted(step, signals.signum, workdir)
                if evaluate is not None and config.eval_every and step % config.eval_every == 0:
                    if step != config.num_steps:  # the final evaluation is the caller's
                        append_jsonl(
                            metrics_path, {"split": "test", "step": step, **evaluate(state)}
                        )
    finally:
        progress.close()
        checkpointer.close()
    return FitResult(state=state, step=step, resumed_from=resumed_from, metrics=last_metrics)
