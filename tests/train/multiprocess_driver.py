"""One process of the smoke classifier run that `test_multiprocess.py` launches (not a test).

    python tests/train/multiprocess_driver.py CONFIG WORKDIR RECORD_DIR [SIGTERM_AT] \
        [--config.x=y ...]

It joins a multi-process run through capjax's own environment path
(`maybe_initialize_distributed`: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID),
runs the config's task exactly as `python -m capjax.main` does, and records, without touching
the library, in RECORD_DIR/process<i>.json and .npz:
- a hash of every global training batch as the devices hold it (gathered from all processes),
- the final parameters and batch statistics,
- the files this process opened for writing inside WORKDIR (through a Python audit hook; orbax
  writes array data from C++, which the hook does not see).
With SIGTERM_AT=k (a number), the last process sends itself SIGTERM after step k, as a
preempted host would; like `capjax.main`, the driver then exits with 128 + the signal number.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import sys
import time

import numpy as np


def load_config(spec: str, overrides: list[str]):
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("experiment_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    for item in overrides:
        name, _, value = item.removeprefix("--config.").partition("=")
        section = config
        *parents, leaf = name.split(".")
        for part in parents:
            section = section[part]
        section[leaf] = type(section[leaf])(value)
    return config


def main() -> None:
    config_spec, workdir, record_dir, *rest = sys.argv[1:]
    sigterm_at = int(rest.pop(0)) if rest and rest[0].isdigit() else None
    overrides = rest
    workdir = os.path.abspath(workdir)
    written: set[str] = set()

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND

    def audit(event, args):
        if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path, mode, flags = args
        if (mode and mode[0] in "wax") or (mode is None and flags & write_flags):
            path = os.path.abspath(os.fsdecode(path))
            if path.startswith(workdir + os.sep):
                written.add(os.path.relpath(path, workdir))

    sys.addaudithook(audit)

    from capjax.core import mesh as mesh_lib

    mesh_lib.maybe_initialize_distributed()

    import jax
    from jax.experimental import multihost_utils

    from capjax.tasks import registry as tasks
    from capjax.train import classifier
    from capjax.train.loop import TrainingInterrupted

    batch_hashes: list[str] = []
    original_shard_batch = mesh_lib.shard_batch

    def recording_shard_batch(local_batch, mesh):
        batch = original_shard_batch(local_batch, mesh)
        whole = multihost_utils.process_allgather(batch, tiled=True)  # the global batch
        digest = hashlib.sha256()
        for name in sorted(whole):
            digest.update(np.ascontiguousarray(whole[name]).tobytes())
        batch_hashes.append(digest.hexdigest()[:16])
        return batch

    results = {}
    original_fit = classifier.fit

    def preempt_last_process(step):
        if step == sigterm_at and jax.process_index() == jax.process_count() - 1:
            os.kill(os.getpid(), signal.SIGTERM)
            # JAX's preemption notifier polls; give it time to tell the other processes, so
            # that the agreed stopping step comes soon after.
            time.sleep(2.0)

    def recording_fit(**kwargs):
        if sigterm_at is not None:
            kwargs["on_step_end"] = preempt_last_process
        result = original_fit(**kwargs)
        results["fit"] = result
        return result

    mesh_lib.shard_batch = recording_shard_batch
    classifier.fit = recording_fit
    index = jax.process_index()
    record = {
        "process_index": index,
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "cpu_collectives": jax.config.jax_cpu_collectives_implementation,
    }
    exit_code = 0
    try:
        tasks.run_task(load_config(config_spec, overrides), workdir)
    except TrainingInterrupted as e:
        record["interrupted_at"] = e.step
        exit_code = 128 + e.signum
    else:
        state = results["fit"].state
        leaves = jax.tree_util.tree_flatten_with_path((state.params, state.batch_stats))[0]
        arrays = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}
        os.makedirs(record_dir, exist_ok=True)
        np.savez(os.path.join(record_dir, f"process{index}.npz"), **arrays)
        record.update(step=results["fit"].step, resumed_from=results["fit"].resumed_from)
    record.update(batch_hashes=batch_hashes, written=sorted(written))
    os.makedirs(record_dir, exist_ok=True)
    with open(os.path.join(record_dir, f"process{index}.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
