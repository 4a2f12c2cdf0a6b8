"""Two CPU processes joined by `jax.distributed` train exactly like one process.

Three runs of the smoke classifier (tiny CNN, 2 epochs of 4 steps, 2 devices in all):
- one process with 2 CPU devices (the reference);
- two processes with 1 CPU device each, through capjax's environment path
  (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID), where the second process
  gets SIGTERM after step 1, as a preempted host would;
- the same two processes again, resuming from the checkpoint both processes agreed on.

Why 2 devices, and why bit-for-bit equality. Each device runs the same program on the same
32 images in both layouts, so the runs can differ only where the devices' partial results
are combined: one process adds them in XLA's own all-reduce, two processes in gloo's
(`jax_cpu_collectives_implementation`, jax's default on CPU). With two partial sums that is
one addition, a + b == b + a exactly, so the two layouts do the same arithmetic and the
parameters must match exactly. With 4 devices the two all-reduces add in different orders,
and training amplifies those last-bit differences: measured on a 2-core machine (jax 0.10.2,
these 8 steps), the largest parameter difference was
- 0 between two runs of the same 1-process layout (the runs are deterministic);
- 0 between 1 process x 2 devices and 2 processes x 1 device (the layout tested here);
- 1.1e-4 between 1 process x 4 devices and 1 process x 2 devices (the same data, only the
  reduction order differs: the honest bound for any comparison across reduction orders);
- 1.6e-4 to 6.7e-4 between 2 processes x 2 devices and 1 process x 4 devices, a relative
  difference of up to 17% on small biases. A tolerance for such runs would be a figure of
  these 8 steps on one machine, not a property of the code, so this test compares the
  layout where the reduction order cannot differ, and asks for equality.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from capjax.train.checkpoint import Checkpointer

# One worker runs the module, so the three runs of the `runs` fixture happen once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("multiprocess")]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER = os.path.join(ROOT, "tests", "train", "multiprocess_driver.py")
CONFIG = "configs/classifier_cifar.py:smoke,model=tiny"
OVERRIDES = ["--config.train.epochs=2", "--config.train.checkpoint_every_steps=2"]
STEPS = 8  # 256 synthetic training images, global batch 64, 2 epochs
SIGTERM_AT = 1  # process 1 is "preempted" after this step
TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(local_devices: int, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JAX_", "TPU_")) and k not in ("COORDINATOR_ADDRESS",)
    }
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=" ".join(
            [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
            + [f"--xla_force_host_platform_device_count={local_devices}"]
        ),
        PYTHONPATH=os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        **extra,
    )
    return env


def _start(workdir, record_dir, env, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, DRIVER, CONFIG, str(workdir), str(record_dir), *extra, *OVERRIDES],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _start_pair(workdir, record_dir, *extra: str) -> list[subprocess.Popen]:
    address = f"localhost:{_free_port()}"
    return [
        _start(
            workdir,
            record_dir,
            _env(1, JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)),
            *extra,
        )
        for i in range(2)
    ]


def _finish(procs: list[subprocess.Popen]) -> list[tuple[int, str]]:
    """Waits for every process; on a timeout kills those still running (and only those)."""
    outcomes = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=TIMEOUT_S)
            outcomes.append((proc.returncode, out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outcomes


def _records(record_dir, count: int) -> list[dict]:
    return [json.loads((record_dir / f"process{i}.json").read_text()) for i in range(count)]


def _params(record_dir, index: int = 0) -> dict[str, np.ndarray]:
    with np.load(record_dir / f"process{index}.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("multiprocess")
    single = _start(base / "single", base / "rec_single", _env(2))
    first = _start_pair(base / "multi", base / "rec_interrupted", str(SIGTERM_AT))
    interrupted = _finish(first)
    resumed = (
        _finish(_start_pair(base / "multi", base / "rec_resumed"))
        if all(code == 128 + signal.SIGTERM for code, _ in interrupted)
        else []
    )
    reference = _finish([single])
    return {
        "base": base,
        "reference": reference,
        "interrupted": interrupted,
        "resumed": resumed,
    }


def _check_exit(outcomes, expected: int, what: str):
    assert outcomes, f"{what}: not run (the interrupted pair did not exit with 143)"
    for i, (code, out) in enumerate(outcomes):
        assert code == expected, (
            f"{what}, process {i}: exit {code}, wanted {expected}\n{out[-3000:]}"
        )


def test_two_processes_preempt_resume_and_match_one_process(runs):
    base = runs["base"]
    _check_exit(runs["reference"], 0, "single process")
    _check_exit(runs["interrupted"], 128 + signal.SIGTERM, "two processes, SIGTERM to process 1")
    _check_exit(runs["resumed"], 0, "two processes, resumed")

    (reference,) = _records(base / "rec_single", 1)
    interrupted = _records(base / "rec_interrupted", 2)
    resumed = _records(base / "rec_resumed", 2)
    for record in interrupted + resumed:
        assert record["process_count"] == 2 and record["local_device_count"] == 1
        assert record["device_count"] == reference["device_count"] == 2
        assert record["cpu_collectives"] == "gloo"

    # Both processes stopped at the same step, agreed through JAX's preemption service,
    # and the resumed run started exactly there. The agreed step may be the one the signal
    # came after, when the notice reaches the coordinator before either process reports a
    # later step (seen once on a fresh clone), or a later one.
    stop = interrupted[0]["interrupted_at"]
    assert interrupted[1]["interrupted_at"] == stop and SIGTERM_AT <= stop < STEPS
    assert [r["resumed_from"] for r in resumed] == [stop, stop]
    assert [r["step"] for r in resumed] == [STEPS, STEPS] and reference["step"] == STEPS

    # The same global batches in the same order as one process saw them (hashes of the
    # global batch gathered from the devices), before and after the interruption.
    assert len(reference["batch_hashes"]) == STEPS
    for i in range(2):
        seen = interrupted[i]["batch_hashes"] + resumed[i]["batch_hashes"]
        assert seen == reference["batch_hashes"], f"process {i}"

    # The same parameters and batch statistics, bit for bit (see the module docstring).
    expected = _params(base / "rec_single")
    for i in range(2):
        got = _params(base / "rec_resumed", i)
        assert got.keys() == expected.keys()
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)

    # The test accuracy is counted once per image, not once per process.
    single_results = json.loads((base / "single" / "results.json").read_text())
    multi_results = json.loads((base / "multi" / "results.json").read_text())
    assert multi_results["num_test"] == single_results["num_test"] == 128
    assert abs(multi_results["test_accuracy"] - single_results["test_accuracy"]) <= 1 / 128


def test_only_process_zero_writes_run_files(runs):
    base = runs["base"]
    _check_exit(runs["resumed"], 0, "two processes, resumed")
    for phase in ("rec_interrupted", "rec_resumed"):
        lead, other = _records(base / phase, 2)
        # Process 1 writes only its own array metadata inside orbax's (coordinated) save.
        assert other["written"], phase
        assert all(
            path.startswith("checkpoints/") and path.endswith("/array_metadatas/process_1")
            for path in other["written"]
        ), (phase, other["written"])
        top_level = {p.removesuffix(".tmp") for p in lead["written"] if "/" not in p}
        assert {"config.json", "metrics.jsonl"} <= top_level, phase
    assert "results.json.tmp" in _records(base / "rec_resumed", 2)[0]["written"]

    records = [json.loads(line) for line in open(base / "multi" / "metrics.jsonl")]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == STEPS
    assert [r["step"] for r in records if r["split"] == "test"] == [STEPS]


def test_checkpoints_are_written_once_and_restore(runs):
    base = runs["base"]
    _check_exit(runs["resumed"], 0, "two processes, resumed")
    stop = _records(base / "rec_interrupted", 2)[0]["interrupted_at"]
    directory = base / "multi" / "checkpoints"
    assert not [p for p in os.listdir(directory) if "tmp" in p]
    steps = sorted(int(p) for p in os.listdir(directory))
    assert steps == sorted({2, stop, 4, 6, 8})[-3:]  # keep_checkpoints=3

    # The last checkpoint, written by both processes together, restores in one process
    # (8 simulated devices here) to exactly the state the two processes ended with.
    from capjax.train.classifier import restore_classifier

    config = _load_config()
    _, variables = restore_classifier(config, str(base / "multi"), 10, (32, 32, 3))
    restored = jax.tree_util.tree_flatten_with_path(
        (variables["params"], variables["batch_stats"])
    )[0]
    final = _params(base / "rec_resumed")
    assert len(restored) == len(final)
    for path, leaf in restored:
        np.testing.assert_array_equal(np.asarray(leaf), final[jax.tree_util.keystr(path)])
    checkpointer = Checkpointer(str(directory))
    try:
        assert checkpointer.read_meta()["data"] == {"epoch": 2, "step": 0}
    finally:
        checkpointer.close()


def _load_config():
    sys.path.insert(0, os.path.dirname(DRIVER))
    try:
        from multiprocess_driver import load_config
    finally:
        sys.path.pop(0)
    return load_config(os.path.join(ROOT, CONFIG), OVERRIDES)
