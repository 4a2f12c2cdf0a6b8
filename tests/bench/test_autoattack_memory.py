"""`python -m capjax.bench autoattack_memory` at a tiny size: it runs and reports figures; and
the command lists every benchmark module."""

from __future__ import annotations

import json

from capjax.bench import run_benchmark


def test_reports_wall_robust_accuracy_and_peak_memory(tmp_path, capsys):
    path = tmp_path / "memory.json"
    run_benchmark(
        ["autoattack_memory", "--images", "8", "--batch-size", "4", "--short", "--json", str(path)]
    )
    result = json.loads(path.read_text())
    assert "peak_rss_gb:" in capsys.readouterr().out
    assert result["images"] == 8 and result["batch_size"] == 4
    assert 0 < result["peak_rss_gb_before"] <= result["peak_rss_gb"]
    robust = list(result["robust_accuracy"].values())
    assert list(result["robust_accuracy"]) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    assert robust == sorted(robust, reverse=True)  # each component keeps or breaks more


def test_every_benchmark_module_is_listed_in_the_command():
    """`python -m capjax.bench NAME` lists and accepts only `BENCHMARKS`: a module with a
    `run(argv)` that is not there cannot be run from the command line."""
    import os

    from capjax.bench import MODULES
    from capjax.bench.__main__ import BENCHMARKS

    folder = os.path.dirname(os.path.abspath(run_benchmark.__code__.co_filename))
    runnable = set()
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            if "\ndef run(argv" in f.read():
                runnable.add(name[:-3])
    listed = {MODULES.get(name, name) for name in BENCHMARKS}
    assert runnable == listed, (runnable - listed, listed - runnable)
