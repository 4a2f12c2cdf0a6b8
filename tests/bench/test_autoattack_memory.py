"""`python -m capjax.bench autoattack_memory` at a tiny size: it runs and reports figures."""

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
