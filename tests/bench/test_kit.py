"""`python -m capjax.bench kit --quick`: every GPU-kit step runs at CPU-test size and the kit
writes its markdown and JSON, so the command is ready when a GPU is lent (issue #17)."""

import json
import os

from capjax.bench import kit


def test_quick_kit_runs_every_step_and_writes_both_files(tmp_path):
    out = str(tmp_path / "kit")
    kit.run(["--quick", "--out", out])
    with open(os.path.join(out, "kit.json"), encoding="utf-8") as f:
        payload = json.load(f)
    assert payload["quick"] is True
    assert list(payload["steps"]) == [s.name for s in kit.STEPS]
    for name, step in payload["steps"].items():
        assert step["error"] is None, (name, step["error"], step["output"][-2000:])
        assert step["tables"], name  # every benchmark printed at least one table
    throughput = payload["steps"]["pgd_throughput"]["tables"][0][0]
    assert "images/s" in " ".join(throughput)
    with open(os.path.join(out, "kit.md"), encoding="utf-8") as f:
        text = f.read()
    for step in kit.STEPS:
        assert f"## {step.name}:" in text and step.quick[0] in text


def test_only_picks_steps_and_unknown_names_are_refused(capsys):
    args = kit.parse(["--only", "feed,classifier_train"])
    assert args.steps == ["feed", "classifier_train"]
    try:
        kit.parse(["--only", "gpu_magic"])
    except SystemExit:
        pass
    else:
        raise AssertionError("an unknown step must be refused")
    assert "unknown step" in capsys.readouterr().err
