"""`python -m capjax.bench capgan --term-gradients`: each weighted generator term's gradient
norm, under the weights asked for (issue #16)."""

import os

from capjax.bench import capgan_step, measure

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_term_gradients_table_follows_the_weights(capsys):
    with measure.recording_tables() as tables:
        capgan_step.run(
            ["--size", "smoke", "--batch", "8", "--term-gradients", "--weights", "paper"]
        )
    out = capsys.readouterr().out
    assert "CAM 1000, semantic 1, alpha 0.7" in out
    rows = tables[0]
    factors = {row["term"]: float(row["factor in L_T"]) for row in rows}
    assert factors["g_cam_t"] == 300.0 and factors["g_semantic"] == 0.3  # (1 - alpha) x weight
    assert factors["g_cycle"] == 7.0  # alpha x 10
    assert all(float(row["gradient L2 norm"]) >= 0 for row in rows)


def test_term_gradients_on_a_finished_classifier_run(tmp_path, capsys, monkeypatch):
    """--target-workdir: the trained target and its run's own training images."""
    from capjax.main import parse_command_line
    from capjax.tasks.registry import run_task

    monkeypatch.chdir(ROOT)
    workdir = str(tmp_path / "clf")
    config, _ = parse_command_line(
        ["--config=configs/classifier_cifar.py:smoke,model=tiny", f"--workdir={workdir}"]
    )
    run_task(config, workdir)
    capsys.readouterr()
    with measure.recording_tables() as tables:
        capgan_step.run(
            ["--size", "smoke", "--batch", "8", "--term-gradients", "--target-workdir", workdir]
        )
    out = capsys.readouterr().out
    assert f"target tiny from {workdir} on its first 8 training images" in out
    norms = {row["term"]: float(row["gradient L2 norm"]) for row in tables[0]}
    assert norms["g_semantic"] > 0 and norms["g_cam_t"] > 0
