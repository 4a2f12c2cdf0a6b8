"""`python -m capjax.bench capgan --term-gradients`: each weighted generator term's gradient
norm, under the weights asked for (issue #16)."""

from capjax.bench import capgan_step, measure


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
