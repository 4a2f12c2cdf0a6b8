"""`python -m capjax.bench attacks`, shrunk: the README's max-pool line runs."""

from capjax.bench import attacks as bench_attacks


def test_tiled_max_pool_line_runs(capsys):
    bench_attacks.run(
        ["--model", "maxpool_cnn", "--batch", "4", "--attacks", "apgd3", "--repeats", "1"]
        + ["--tiled-max-pool"]
    )
    out = capsys.readouterr().out
    assert "model=maxpool_cnn (through attacks.tiled_max_pool)" in out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("|")]
    row = next(cells for cells in rows if cells[1].strip() == "apgd")
    assert float(row[5].replace(",", "")) > 0  # images/s
