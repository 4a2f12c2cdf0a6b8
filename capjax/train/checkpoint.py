"""Orbax checkpoints of a training state, with the metadata needed to resume exactly.

A checkpoint holds the state pytree (params, optimizer state, batch statistics, step) and a
JSON record: the data iterator's position and a fingerprint of the state's structure (every
leaf's path, shape and dtype) plus the model's name. Resuming compares fingerprints before
touching anything, so a workdir holding another model is refused with a message and never
overwritten.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from capjax.core.errors import ConfigError


def state_fingerprint(state: Any) -> dict[str, Any]:
    """{"structure": sha256 of every leaf's path/shape/dtype, "leaves": count}."""
    entries = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        shape = tuple(getattr(leaf, "shape", ()))
        dtype = str(getattr(leaf, "dtype", type(leaf).__name__))
        entries.append(f"{jax.tree_util.keystr(path)}:{shape}:{dtype}")
    digest = hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]
    return {"structure": digest, "leaves": len(entries)}


def abstract_on(abstract_state: Any, sharding: Any) -> Any:
    """`abstract_state` (from `jax.eval_shape`) with every leaf placed by `sharding`."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract_state
    )


def describe_state(state: Any, limit: int = 6) -> str:
    """A short human-readable list of leaf paths and shapes, for error messages."""
    rows = [
        f"{jax.tree_util.keystr(path)} {tuple(getattr(leaf, 'shape', ()))}"
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0][:limit]
    ]
    return "; ".join(rows)


class Checkpointer:
    """Saves and restores `(state, meta)` under `directory`, keeping the last `keep` steps.

    Saves are asynchronous (the train loop continues while orbax writes); `wait()` blocks
    until they are on disk. Only complete checkpoints are ever listed, so a run killed
    mid-save resumes from the previous one.
    """

    def __init__(self, directory: str, keep: int = 3, asynchronous: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=asynchronous
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )

    def read_meta(self, step: int | None = None) -> dict[str, Any] | None:
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def restore(self, abstract_state: Any, expected: dict[str, Any], step: int | None = None):
        """Restores (state, meta) from `step` (default: latest) against `abstract_state`.

        Args:
          abstract_state: a pytree of `jax.ShapeDtypeStruct` (with shardings) or arrays
            giving the structure, shapes, dtypes and placement to restore into.
          expected: the fingerprint fields the run expects (e.g. model name and
            `state_fingerprint(abstract_state)`); any difference raises ValueError.

        Raises:
          ValueError: the checkpoint belongs to a different model or state layout.
        """
        step = self.latest_step() if step is None else step
        meta = self.read_meta(step)
        found = meta.get("fingerprint", {}) if meta else {}
        mismatched = {k: (found.get(k), v) for k, v in expected.items() if found.get(k) != v}
        if mismatched:
            details = ", ".join(
                f"{k}: checkpoint has {a!r}, config wants {b!r}" for k, (a, b) in mismatched.items()
            )
            raise ConfigError(
                f"The checkpoint in {self.directory} (step {step}) does not match this run "
                f"({details}). Refusing to resume or overwrite it: use another --workdir, or "
                f"run with the configuration that wrote it (saved beside it as config.json)."
            )
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], dict(restored["meta"])

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
