"""End to end through `python -m capjax.main`: the demo and every `:smoke` config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m capjax.main ARGS` with main's own CPU set-up, as a user gets it: the
    suite's simulated device count is dropped; its other XLA flags stay."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = env.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in flags if "host_platform_device_count" not in f)
    return subprocess.run(
        [sys.executable, "-m", "capjax.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "config",
    [
        "configs/demo.py:classifier,smoke",
        "configs/classifier_cifar.py:smoke",
        # The SVHN config's own path (tfds swapped for synthetic data, no augmentation) with
        # the tiny CNN: its VGG-19 took 124 s here; tests/models covers VGG-19 itself.
        "configs/classifier_svhn.py:smoke,model=tiny",
        # The real-data CPU target's stage alone: the speedrun CNN at smoke widths.
        "configs/cifar_cpu.py:target,smoke",
    ],
)
def test_smoke_configs_run_through_main(config, tmp_path):
    proc = run_main(f"--config={config}", f"--workdir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0.0 <= results["test_accuracy"] <= 1.0 and results["steps"] > 0
    assert "test accuracy" in proc.stdout
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["task"] == "classifier"


def test_unknown_config_field_is_an_error(tmp_path):
    proc = run_main(
        "--config=configs/demo.py:smoke",
        "--config.classifier.train.epochz=3",
        f"--workdir={tmp_path}",
    )
    assert proc.returncode != 0
    assert "epochz" in proc.stderr


def test_override_and_bad_source_message(tmp_path):
    proc = run_main(
        "--config=configs/demo.py:smoke", "--config.data.source=imagenet", f"--workdir={tmp_path}"
    )
    assert proc.returncode == 2
    assert "Unknown data" in proc.stderr and "'imagenet'" in proc.stderr
    assert "synthetic" in proc.stderr


@pytest.mark.parametrize("error", ["config", "bug"])
def test_only_configuration_errors_lose_their_traceback(error, tmp_path, monkeypatch, capsys):
    """A ConfigError becomes one line and exit status 2; any other exception (a ValueError
    from a bug, say) propagates with its traceback."""
    from absl import flags

    from capjax import cpu_devices
    from capjax import main as main_lib
    from capjax.core.errors import ConfigError
    from capjax.tasks import registry as tasks

    def run_task(config, workdir):
        raise ConfigError("bad field") if error == "config" else ValueError("a bug")

    monkeypatch.setattr(tasks, "run_task", run_task)
    monkeypatch.setattr(cpu_devices, "configure_cpu_devices", lambda **_: None)
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["capjax.main", "--config=configs/demo.py:smoke"])
    flags.FLAGS(["capjax.main", "--config=configs/demo.py:smoke", f"--workdir={tmp_path}"])
    try:
        if error == "config":
            with pytest.raises(SystemExit) as exit_info:
                main_lib.main(["capjax.main"])
            assert exit_info.value.code == 2
            assert capsys.readouterr().err.startswith("capjax: bad field\n")
        else:
            with pytest.raises(ValueError, match="a bug"):
                main_lib.main(["capjax.main"])
    finally:
        flags.FLAGS.unparse_flags()


@pytest.mark.slow
def test_demo_trains_and_evaluates_three_defenses(tmp_path):
    proc = run_main("--config=configs/demo.py:smoke", f"--workdir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["accuracy"]) == {"none", "cafd", "capgan"}
    all_rows = {"clean", "whitebox_pgd", "end_to_end_pgd", "bpda_pgd"}
    for name, accuracy in results["accuracy"].items():
        # Without a purifier, end to end and BPDA are the white-box row: run once.
        expected = {"clean", "whitebox_pgd"} if name == "none" else all_rows
        assert set(accuracy) == expected, name
        assert all(0.0 <= value <= 1.0 for value in accuracy.values()), name
    assert results["same_as"] == {
        "none": {"end_to_end_pgd": "whitebox_pgd", "bpda_pgd": "whitebox_pgd"}
    }
    assert [s["name"] for s in results["stages"]][:4] == ["data", "classifier", "cafd", "capgan"]
    report = (tmp_path / "report.md").read_text()
    assert "| threat model | images | no defense | CAFD | CAP-GAN |" in report
    assert "| threat model | images | no defense | CAFD | CAP-GAN |" in proc.stdout
    for path in ("accuracy.png", "eval_capgan/examples.png", "eval_cafd/report.md"):
        assert (tmp_path / path).exists(), path
    for stage in ("classifier", "cafd", "capgan"):
        assert (tmp_path / stage / "checkpoints").is_dir(), stage
