"""Every `python -m capjax.main ...` command in the README and the user guides parses, and
its run starts.

Each command line is read from README.md and the guides in `GUIDES` as printed
(continuation lines joined, trailing comments dropped; a command printed twice is checked
once), then made test-sized: the config gets its `:smoke` variant, every
workdir becomes a folder under tmp_path, and `--config.data.dir` names a tiny generated
image folder. Its flags are parsed exactly as `capjax.main` parses them
(`parse_command_line`), every `--config.x=value` must reach the config, and where the
command reads an image folder, the folder loads as its first stage would load it.
`test_readme_folder_command_runs_through_main` runs one real-data command to the end.
"""

from __future__ import annotations

import json
import os
import re
import shlex

import numpy as np
import pytest
from PIL import Image
from test_main import run_main

from capjax.main import parse_command_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = "python -m capjax.main"
CLASSES = ("cat", "dog", "frog", "ship")


# The README and the user guides it links to: every command printed there is a promise.
# (docs/cifar_cpu.md and docs/benchmarks.md are dated records of runs, not instructions.)
GUIDES = (
    "README.md",
    "docs/training.md",
    "docs/defenses.md",
    "docs/evaluation.md",
    "docs/attacks.md",
    "docs/scaling.md",
)


def readme_commands() -> list[list[str]]:
    """The argument lists of every `python -m capjax.main` command line in the README and
    the user guides."""
    text = ""
    for guide in GUIDES:
        with open(os.path.join(ROOT, guide), encoding="utf-8") as f:
            text += f.read() + "\n"
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if COMMAND not in line:
                continue
            line = line.split(COMMAND, 1)[1].split(" #", 1)[0]
            if shlex.split(line) not in commands:
                commands.append(shlex.split(line))
    return commands


def _write_folder(root) -> str:
    """CIFAR-shaped JPEGs, one colour per class: 32 training and 16 test images a class."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 32), ("test", 16)):
        for label, name in enumerate(CLASSES):
            os.makedirs(root / split / name)
            for i in range(count):
                pixels = np.full((32, 32, 3), 40 + 60 * label, np.uint8)
                pixels += rng.integers(0, 30, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i:04d}.jpg", quality=90)
    return str(root)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return _write_folder(tmp_path_factory.mktemp("readme_images"))


def test_the_readme_has_commands_to_check():
    configs = {arg for command in readme_commands() for arg in command if "--config=" in arg}
    assert len(readme_commands()) >= 8 and len(configs) >= 5, readme_commands()


def smoke_sized(args: list[str], tmp_path, image_folder: str) -> list[str]:
    """The command with `:smoke` added, workdirs under tmp_path and the tiny image folder."""
    out = []
    for arg in args:
        name, _, value = arg.partition("=")
        if name == "--config":
            path, _, variant = value.partition(":")
            value = f"{path}:{variant + ',' if variant else ''}smoke"
        elif name == "--config.data.dir":
            value = image_folder
        elif name == "--workdir" or name.endswith("workdir"):
            value = str(tmp_path / value.strip("/").replace("/", "_"))
        out.append(f"{name}={value}")
    return out


def _field(config, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


@pytest.mark.parametrize("args", readme_commands(), ids=lambda a: " ".join(a)[:80])
def test_readme_command_parses_and_starts(args, tmp_path, image_folder, monkeypatch):
    monkeypatch.chdir(ROOT)  # config paths in the README are relative to the repository
    argv = smoke_sized(args, tmp_path, image_folder)
    config, workdir = parse_command_line(argv)
    assert workdir.startswith(str(tmp_path))
    for arg in argv:
        name, _, value = arg.partition("=")
        if name.startswith("--config."):
            got = _field(config, name.removeprefix("--config."))
            assert str(got) == value or got == type(got)(value), (name, got, value)

    if config.data.source == "folder":
        # The run's first stage: the image folder, decoded and cached beside the run.
        from capjax.data import load_from_config

        dataset = load_from_config(config, workdir)
        assert dataset.num_classes == len(CLASSES)
        assert dataset.train_images.shape == (len(CLASSES) * 32, 32, 32, 3)
        assert os.listdir(os.path.join(workdir, "data_cache"))


def test_readme_folder_command_runs_through_main(tmp_path, image_folder):
    """The classifier on the offline image-folder copy, as the README prints it, end to end
    through `python -m capjax.main` (smoke-sized: the tiny CNN, one short epoch)."""
    (command,) = [
        c
        for c in readme_commands()
        if any("classifier_cifar.py" in a for a in c)
        and any(a.startswith("--config.data.dir=") for a in c)
    ]
    argv = smoke_sized(command, tmp_path, image_folder)
    argv = [a.replace(".py:", ".py:model=tiny,") if a.startswith("--config=") else a for a in argv]
    proc = run_main(*argv, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (workdir,) = [a.partition("=")[2] for a in argv if a.startswith("--workdir=")]
    results = json.loads(open(os.path.join(workdir, "results.json")).read())
    assert results["num_test"] == len(CLASSES) * 16
    saved = json.loads(open(os.path.join(workdir, "config.json")).read())
    assert saved["data"]["dir"] == image_folder and saved["data"]["source"] == "folder"


def _unset_fields(config, prefix=""):
    """(dotted name, type) of every field whose value is None."""
    for key, value in config.items(preserve_field_references=True):
        if hasattr(value, "items"):
            yield from _unset_fields(value, f"{prefix}{key}.")
        elif value is None:
            yield prefix + key, type(None)
        elif hasattr(value, "get_type") and value.get() is None:
            yield prefix + key, value.get_type()


SAMPLE_VALUES = {str: ("some/path", "some/path"), tuple: ("(0.5,0.25)", (0.5, 0.25))}


@pytest.mark.parametrize(
    "spec",
    [
        f"configs/{name}{variant}"
        for name in sorted(os.listdir(os.path.join(ROOT, "configs")))
        if name.endswith(".py")
        for variant in ("", ":smoke")
    ],
)
def test_every_unset_field_can_be_set_from_the_command_line(spec, tmp_path, monkeypatch):
    """A field that defaults to None (a path, a run to reuse) takes `--config.x=value`:
    ml_collections refuses overrides of a bare None, so such fields are typed placeholders."""
    monkeypatch.chdir(ROOT)
    config, _ = parse_command_line([f"--config={spec}", f"--workdir={tmp_path}"])
    unset = dict(_unset_fields(config))
    assert set(unset.values()) <= set(SAMPLE_VALUES), unset  # NoneType: not settable
    overrides = [f"--config.{name}={SAMPLE_VALUES[kind][0]}" for name, kind in unset.items()]
    config, _ = parse_command_line([f"--config={spec}", f"--workdir={tmp_path}", *overrides])
    for name, kind in unset.items():
        assert _field(config, name) == SAMPLE_VALUES[kind][1], name
