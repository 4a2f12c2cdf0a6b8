"""The launch scripts: syntax, --help, early and clear failures, and the commands they run.

No network: `gcloud` and `nvidia-smi` are fakes in a temporary directory on PATH that only
record how they were called; PATH holds nothing else but a few basic tools.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
SCRIPTS = ["tpu_vm.sh", "gpu_host.sh", "gpu_multihost.sh"]
BASH = shutil.which("bash")
TOOLS = "dirname basename tr grep awk git tar gzip mktemp rm cat hostname".split()

# Each fake writes one line per call to $FAKE_LOG (newlines inside arguments become "\n").
FAKE_GCLOUD = r"""#!@BASH@
call="$*"
printf '%s\n' "${call//$'\n'/\\n}" >> "$FAKE_LOG"
case "$*" in
  *" describe "*networkEndpoints*) printf '%s\n' "${FAKE_ENDPOINTS:-10.0.0.2}" ;;
  *" describe "*) [ -n "${FAKE_STATE:-}" ] || exit 1; printf '%s\n' "$FAKE_STATE" ;;
esac
exit 0
"""
FAKE_NVIDIA_SMI = r"""#!@BASH@
printf '%s\n' "nvidia-smi $*" >> "$FAKE_LOG"
echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"
echo "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-1)"
"""


@pytest.fixture
def sandbox(tmp_path):
    """(run, log): run(script, *args, fakes=(...), **env) with a PATH of basic tools only."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            os.symlink(found, bin_dir / tool)
    log = tmp_path / "calls.log"
    log.write_text("")

    def run(script, *args, fakes=(), **env):
        for name in fakes:
            text = {"gcloud": FAKE_GCLOUD, "nvidia-smi": FAKE_NVIDIA_SMI}[name]
            path = bin_dir / name
            path.write_text(text.replace("@BASH@", BASH))
            path.chmod(0o755)
        base = {"PATH": str(bin_dir), "HOME": str(tmp_path), "FAKE_LOG": str(log)}
        return subprocess.run(
            [BASH, os.path.join(LAUNCH, script), *args],
            env={**base, **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run, log


def calls(log) -> list[str]:
    return [line for line in log.read_text().splitlines() if line]


@pytest.mark.parametrize("script", SCRIPTS + ["common.sh"])
def test_syntax_and_executable(script):
    path = os.path.join(LAUNCH, script)
    assert subprocess.run([BASH, "-n", path]).returncode == 0
    if script != "common.sh":
        assert os.access(path, os.X_OK), f"{script} should be executable"
        with open(path, encoding="utf-8") as f:
            text = f.read()
        assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_clean():
    proc = subprocess.run(
        ["shellcheck", "-x", *SCRIPTS, "common.sh"], cwd=LAUNCH, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize(
    "script, words",
    [
        ("tpu_vm.sh", ["Usage:", "delete", "--dry-run", "ACCELERATOR_TYPE", "--worker", "gcsfuse"]),
        ("gpu_host.sh", ["Usage:", "--xla-perf", "latency_hiding", "MEM_FRACTION", "--dry-run"]),
        ("gpu_multihost.sh", ["Usage:", "COORDINATOR_ADDRESS", "NUM_PROCESSES", "PROCESS_ID"]),
    ],
)
def test_help(sandbox, script, words):
    run, log = sandbox
    proc = run(script, "--help")  # no gcloud, no nvidia-smi: help needs neither
    assert proc.returncode == 0, proc.stderr
    for word in words:
        assert word in proc.stdout, word
    assert calls(log) == []


def test_tpu_vm_without_gcloud(sandbox):
    run, log = sandbox
    proc = run("tpu_vm.sh", "--dry-run", PROJECT="p", ZONE="z", ACCELERATOR_TYPE="v4-8")
    assert proc.returncode == 2
    assert "'gcloud' is not on PATH" in proc.stderr and "Google Cloud CLI" in proc.stderr


def test_tpu_vm_missing_settings_fail_before_any_cloud_call(sandbox):
    run, log = sandbox
    proc = run("tpu_vm.sh", fakes=["gcloud"])
    assert proc.returncode == 2
    for name in ("PROJECT (--project)", "ZONE (--zone)", "ACCELERATOR_TYPE"):
        assert name in proc.stderr
    proc = run("tpu_vm.sh", "--project=p", fakes=["gcloud"], ACCELERATOR_TYPE="v4-8")
    assert proc.returncode == 2 and "missing settings: ZONE (--zone)." in proc.stderr
    proc = run("tpu_vm.sh", "frobnicate", fakes=["gcloud"])
    assert proc.returncode == 2 and "unknown command 'frobnicate'" in proc.stderr
    proc = run("tpu_vm.sh", "--accelerator-type=v9-8", fakes=["gcloud"], PROJECT="p", ZONE="z")
    assert proc.returncode == 2 and "no default RUNTIME_VERSION" in proc.stderr
    assert calls(log) == []


def test_tpu_vm_dry_run_prints_and_runs_nothing(sandbox):
    run, log = sandbox
    proc = run(
        "tpu_vm.sh",
        "--dry-run",
        "--config=configs/cafd_cifar.py:smoke",
        "--bucket=gs://my-bucket",
        "--",
        "--config.train.epochs=3",
        fakes=["gcloud"],
        PROJECT="my-proj",
        ZONE="us-west4-a",
        ACCELERATOR_TYPE="v5litepod-16",
        NAME="trial",
    )
    assert proc.returncode == 0, proc.stderr
    assert calls(log) == []  # nothing ran
    out = proc.stdout
    assert out.startswith("+ gcloud compute tpus tpu-vm describe trial ")
    assert (
        "+ gcloud compute tpus tpu-vm create trial --zone=us-west4-a --project=my-proj "
        "--accelerator-type=v5litepod-16 --version=v2-alpha-tpuv5-lite\n"
    ) in out
    assert "tpu-vm scp" in out and "--worker=all" in out
    assert "pip install -q -e . '\\''jax[tpu]'\\''" in out
    assert "gcsfuse --implicit-dirs my-bucket /gcs/my-bucket" in out
    assert (
        "CAPJAX_DISTRIBUTED=auto nohup ~/capjax_venv/bin/python -m capjax.main "
        "--config=configs/cafd_cifar.py:smoke --config.train.epochs=3 "
        "--workdir=/gcs/my-bucket/capjax/cafd_cifar-smoke"
    ) in out

    proc = run("tpu_vm.sh", "delete", "--dry-run", fakes=["gcloud"], PROJECT="p", ZONE="z")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "+ gcloud compute tpus tpu-vm delete capjax-tpu --zone=z --project=p --quiet\n"
    )
    assert calls(log) == []


def test_tpu_vm_creates_installs_and_runs_on_every_worker(sandbox):
    run, log = sandbox
    env = dict(PROJECT="p", ZONE="z", ACCELERATOR_TYPE="v4-8", SPOT="1", FOLLOW="0")
    proc = run("tpu_vm.sh", fakes=["gcloud"], **env)
    assert proc.returncode == 0, proc.stderr
    made = calls(log)
    verbs = [line.split()[3] for line in made if line.startswith("compute tpus tpu-vm")]
    assert verbs == ["describe", "create", "scp", "ssh", "describe", "ssh"], made
    assert made[1].endswith("--accelerator-type=v4-8 --version=tpu-ubuntu2204-base --spot")
    assert "--worker=all" in made[3] and "jax[tpu]" in made[3]
    assert "--worker=all" in made[5] and "capjax.main --config=configs/demo.py" in made[5]
    assert "one-worker TPU VM only" in proc.stderr


def test_tpu_vm_reuses_a_ready_vm_and_refuses_a_mismatched_one(sandbox):
    run, log = sandbox
    env = dict(PROJECT="p", ZONE="z", ACCELERATOR_TYPE="v4-8")
    proc = run("tpu_vm.sh", "up", fakes=["gcloud"], FAKE_STATE="READY\tv4-8", **env)
    assert proc.returncode == 0, proc.stderr
    assert "reusing TPU VM 'capjax-tpu'" in proc.stderr
    assert not [line for line in calls(log) if " create " in line]
    proc = run("tpu_vm.sh", "up", fakes=["gcloud"], FAKE_STATE="READY\tv4-32", **env)
    assert proc.returncode == 2 and "exists with accelerator type 'v4-32'" in proc.stderr
    proc = run("tpu_vm.sh", "up", fakes=["gcloud"], FAKE_STATE="PREEMPTED\tv4-8", **env)
    assert proc.returncode == 2 and "PREEMPTED, not READY" in proc.stderr


def test_tpu_vm_slice_needs_a_shared_workdir(sandbox):
    run, log = sandbox
    env = dict(PROJECT="p", ZONE="z", FAKE_ENDPOINTS="10.0.0.2;10.0.0.3;10.0.0.4;10.0.0.5")
    proc = run("tpu_vm.sh", "run", fakes=["gcloud"], **env)
    assert proc.returncode == 2
    assert "has 4 workers" in proc.stderr and "--bucket" in proc.stderr
    assert not [line for line in calls(log) if " ssh " in line]
    proc = run("tpu_vm.sh", "run", "--workdir=gs://b/run", fakes=["gcloud"], **env)
    assert proc.returncode == 2 and "use --bucket=BUCKET" in proc.stderr


def test_gpu_host_checks_nvidia_smi_then_runs_capjax(sandbox):
    run, log = sandbox
    proc = run("gpu_host.sh")
    assert proc.returncode == 2 and "'nvidia-smi' is not on PATH" in proc.stderr
    proc = run(
        "gpu_host.sh",
        "--dry-run",
        "--xla-perf",
        "--mem-fraction=0.9",
        "--config=configs/classifier_cifar.py:model=resnet18",
        "--",
        "--config.train.batch_size=512",
        fakes=["nvidia-smi"],
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 GPU(s)" in proc.stderr
    assert "+ export XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true\n" in proc.stdout
    assert "+ export XLA_PYTHON_CLIENT_MEM_FRACTION=0.9\n" in proc.stdout
    assert proc.stdout.endswith(
        "+ python3 -m capjax.main --config=configs/classifier_cifar.py:model=resnet18 "
        "--workdir=runs/classifier_cifar-model-resnet18 --config.train.batch_size=512\n"
    )
    proc = run("gpu_host.sh", "--mem-fraction=2", "--dry-run", fakes=["nvidia-smi"])
    assert proc.returncode == 2 and "MEM_FRACTION '2'" in proc.stderr


def test_gpu_multihost_validates_every_setting_first(sandbox):
    run, log = sandbox
    proc = run("gpu_multihost.sh", fakes=["nvidia-smi"])
    assert proc.returncode == 2
    for text in ("COORDINATOR_ADDRESS is not set", "NUM_PROCESSES is not set", "PROCESS_ID is not"):
        assert text in proc.stderr
    assert "WORKDIR (--workdir) is not set" in proc.stderr
    proc = run(
        "gpu_multihost.sh",
        "--workdir=/shared/run",
        fakes=["nvidia-smi"],
        COORDINATOR_ADDRESS="10.0.0.1",
        NUM_PROCESSES="0",
        PROCESS_ID="-1",
    )
    assert proc.returncode == 2
    assert "'10.0.0.1' must be host:port" in proc.stderr
    assert "NUM_PROCESSES '0' must be a whole number >= 1" in proc.stderr
    assert "PROCESS_ID '-1' must be a whole number" in proc.stderr
    proc = run(
        "gpu_multihost.sh",
        "--workdir=/shared/run",
        COORDINATOR_ADDRESS="10.0.0.1:1234",
        NUM_PROCESSES="2",
        PROCESS_ID="2",
    )
    assert proc.returncode == 2 and "PROCESS_ID 2 must be below NUM_PROCESSES (2)" in proc.stderr
    assert calls(log) == []  # nothing was looked at before the settings were right


def test_gpu_multihost_exports_what_capjax_reads(sandbox):
    run, log = sandbox
    proc = run(
        "gpu_multihost.sh",
        "--dry-run",
        "--coordinator=10.0.0.1:1234",
        "--num-processes=2",
        "--process-id=1",
        "--workdir=/shared/run",
        fakes=["nvidia-smi"],
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(
        "+ export JAX_COORDINATOR_ADDRESS=10.0.0.1:1234\n"
        "+ export JAX_NUM_PROCESSES=2\n"
        "+ export JAX_PROCESS_ID=1\n"
    )
    assert "capjax.main --config=configs/demo.py --workdir=/shared/run" in proc.stdout
    assert "process 1 of 2" in proc.stderr
    from capjax.core.mesh import distributed_settings

    exported = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2"}
    assert distributed_settings({**exported, "JAX_PROCESS_ID": "1"}) == {
        "coordinator_address": "10.0.0.1:1234",
        "num_processes": 2,
        "process_id": 1,
    }


def _capjax_main(tmp_path, *args, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    return subprocess.run(
        [sys.executable, "-m", "capjax.main", "--config=configs/demo.py:smoke", *args],
        cwd=ROOT,
        env={**clean, "JAX_PLATFORMS": "cpu", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_capjax_main_refuses_a_bucket_url_as_workdir(tmp_path):
    proc = _capjax_main(tmp_path, "--workdir=gs://bucket/run")
    assert proc.returncode == 2
    assert "Mount the bucket" in proc.stderr and "gcsfuse" in proc.stderr


def test_capjax_main_explains_incomplete_multiprocess_settings(tmp_path):
    proc = _capjax_main(
        tmp_path, f"--workdir={tmp_path}", JAX_COORDINATOR_ADDRESS="localhost:1", JAX_PROCESS_ID="0"
    )
    assert proc.returncode == 2
    assert "JAX_NUM_PROCESSES (or NUM_PROCESSES) is not" in proc.stderr
    assert not os.listdir(tmp_path)  # failed before creating anything
