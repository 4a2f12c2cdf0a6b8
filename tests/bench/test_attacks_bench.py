"""`python -m capjax.bench attacks`, shrunk: the README's max-pool line runs."""

from capjax.bench import attack_speed as bench_attacks


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


def test_eager_line_calls_the_attack_outside_jit_at_the_given_eps(capsys, monkeypatch):
    """The docstring's `--eager --eps` line, shrunk: the attack gets eps/255 and runs outside
    jit (its model callable is a concrete Partial, not a tracer)."""
    seen = []
    original = bench_attacks.eager_timings

    def recording(fn, options, *args):
        seen.append(options["eps"])
        return original(fn, options, *args)

    monkeypatch.setattr(bench_attacks, "eager_timings", recording)
    bench_attacks.run(
        ["--model", "maxpool_cnn", "--batch", "4", "--attacks", "apgd_t3", "--repeats", "1"]
        + ["--tiled-max-pool", "--eager", "--eps", "0.05"]
    )
    out = capsys.readouterr().out
    assert "eps=0.05/255 called eagerly (--eager)" in out
    assert seen == [0.05 / 255]
    rows = [line.split("|") for line in out.splitlines() if line.startswith("|")]
    row = next(cells for cells in rows if cells[1].strip() == "apgd_t")
    assert float(row[5].replace(",", "")) > 0  # images/s
