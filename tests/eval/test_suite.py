"""The suite on a real (tiny) classifier: threat models agree where they must, gradient
masking is exposed by BPDA, resumption recomputes nothing finished, and the per-example
ensemble rule."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capjax.eval import attack_specs, sanity, suite
from capjax.eval.defense import Defense
from capjax.eval.suite import Row, RowResult, SuiteResult, run_suite
from capjax.train import mesh as mesh_lib

PGD = {"name": "pgd", "eps": 2 / 255, "step_size": 1 / 255, "steps": 3}
GRADIENT_ROWS = {
    "whitebox": {"threat": "whitebox", "attack": PGD},
    "end_to_end": {"threat": "end_to_end", "attack": PGD},
    "bpda": {"threat": "bpda", "attack": PGD},
}


def quantize(x, key):
    """Rounds to the uint8 grid with a zero gradient everywhere (shattered gradients)."""
    return jax.lax.stop_gradient(jnp.round(x * 255) / 255)


def run(rows, defense, toy, workdir, batch_size=64, **kwargs):
    return run_suite(
        rows,
        defense=defense,
        images=toy.images,
        labels=toy.labels,
        batch_size=batch_size,
        workdir=str(workdir),
        seed=0,
        progress=False,
        **kwargs,
    )


def test_identity_purifier_changes_nothing(toy, bare, tmp_path):
    identity = Defense("identity", toy.classifier, purify=lambda x, key: x)
    without = run(GRADIENT_ROWS, bare, toy, tmp_path / "bare")
    with_identity = run(GRADIENT_ROWS, identity, toy, tmp_path / "identity")
    for row in GRADIENT_ROWS:
        np.testing.assert_array_equal(without.rows[row].correct, with_identity.rows[row].correct)
        np.testing.assert_array_equal(
            without.rows[row].clean_correct, with_identity.rows[row].clean_correct
        )
    np.testing.assert_array_equal(
        with_identity.rows["bpda"].correct, with_identity.rows["end_to_end"].correct
    )
    # A real attack at 2/255: clean accuracy high, PGD-3 takes a large bite but not all.
    acc = with_identity.accuracy
    assert with_identity.rows["bpda"].clean_accuracy >= 0.9
    assert 0.1 <= acc["end_to_end"] <= 0.8 and acc["whitebox"] == acc["end_to_end"]
    # a sound evaluation of a deterministic, differentiable defense: no flag fires
    report = sanity.run_sanity_checks(
        with_identity,
        GRADIENT_ROWS,
        identity,
        toy.images,
        toy.labels,
        jax.random.key(0),
        batch_size=64,
    )
    assert report.flags == [] and report.checks == list(sanity.CHECKS)
    assert report.measured == {
        "zero_gradient_fraction": 0.0,
        "purify_differs": False,
        "logits_differ": False,
    }


def test_bpda_breaks_a_gradient_shattering_purifier(toy, tmp_path):
    defense = Defense("quantize", toy.classifier, purify=quantize)
    pgd = {**PGD, "eps": 4 / 255, "steps": 5}
    rows = {
        "end_to_end": {"threat": "end_to_end", "attack": pgd},
        "bpda": {"threat": "bpda", "attack": pgd},
    }
    result = run(rows, defense, toy, tmp_path)
    assert result.accuracy["end_to_end"] >= 0.85  # masked: the attack only has its random start
    assert result.accuracy["bpda"] <= result.accuracy["end_to_end"] - 0.5
    report = sanity.run_sanity_checks(
        result, rows, defense, toy.images, toy.labels, jax.random.key(0), batch_size=64
    )
    assert report.measured["zero_gradient_fraction"] == 1.0
    assert "zero_gradients" in report.names()
    assert "random_defense" not in report.names()


def test_random_defense_is_flagged(toy, bare):
    def noise(x, key):
        return jnp.clip(x + 0.02 * jax.random.normal(key, x.shape), 0, 1)

    defense = Defense("noise", toy.classifier, purify=noise)
    mesh = mesh_lib.make_mesh()
    measured = sanity.measure_randomness(
        defense, toy.images, toy.labels, jax.random.key(0), batch_size=64, mesh=mesh
    )
    assert measured == {"purify_differs": True, "logits_differ": True}
    rows = suite.parse_rows({"pgd": {"threat": "bpda", "attack": PGD}})
    flag = sanity.check_random(measured, rows)
    assert flag.name == "random_defense" and "evaluate with EOT" in flag.message
    assert "No bpda_eot" in flag.message
    with_eot = suite.parse_rows({"eot": {"threat": "bpda_eot", "attack": PGD}})
    assert "No bpda_eot" not in sanity.check_random(measured, with_eot).message
    assert sanity.check_random({"purify_differs": False, "logits_differ": False}, rows) is None


def test_resume_recomputes_only_missing_rows(toy, bare, tmp_path, monkeypatch, capsys):
    rows = {
        "clean": {"threat": "clean"},
        "fgsm": {"threat": "undefended", "attack": {"name": "fgsm", "eps": 2 / 255}},
    }
    # batch 48 over 64 examples: the second batch is padded
    first = run(rows, bare, toy, tmp_path, batch_size=48)
    assert first.rows["fgsm"].correct.shape == (64,)
    stored = json.loads((tmp_path / "rows" / "fgsm.json").read_text())
    assert stored["accuracy"] == first.accuracy["fgsm"] and stored["settings"]["seed"] == 0
    (tmp_path / "rows" / "fgsm.npz").unlink()

    made = []
    real_make_attack = attack_specs.make_attack

    def counting_make_attack(spec):
        made.append(spec["name"])
        return real_make_attack(spec)

    monkeypatch.setattr(suite.attack_specs, "make_attack", counting_make_attack)
    capsys.readouterr()
    second = run(rows, bare, toy, tmp_path, batch_size=48)
    assert made == ["fgsm"]
    assert "row clean: done, loaded" in capsys.readouterr().out
    assert second.rows["clean"].loaded and not second.rows["fgsm"].loaded
    for row in rows:
        np.testing.assert_array_equal(first.rows[row].correct, second.rows[row].correct)
    # Changed settings are recomputed, and said so.
    changed = {**rows, "fgsm": {**rows["fgsm"], "attack": {"name": "fgsm", "eps": 3 / 255}}}
    run(changed, bare, toy, tmp_path, batch_size=48)
    assert made == ["fgsm", "fgsm"]
    assert "row fgsm: stored settings differ (attack); recomputing" in capsys.readouterr().out


def _fake(correct: dict[str, list[int]], clean: dict[str, list[int]] | None = None):
    rows = suite.parse_rows(
        {k: {"threat": "whitebox", "attack": {"name": "fgsm", "eps": 0.01}} for k in correct}
    )
    clean = clean or {}
    results = {
        k: RowResult(rows[k], np.array(v, bool), np.array(clean.get(k, [1] * len(v)), bool), 1.0)
        for k, v in correct.items()
    }
    return SuiteResult(results, len(next(iter(correct.values()))))


def test_ensemble_is_per_example_not_min_over_rows():
    result = _fake({"a": [1, 1, 0, 1], "b": [1, 0, 1, 1]})
    assert result.accuracy == {"a": 0.75, "b": 0.75}
    assert result.ensemble(["a", "b"]) == 0.5  # min over rows would say 0.75
    assert result.worst_case_by_threat() == {"whitebox": 0.5}
    # a clean-misclassified example that the attack happened to flip back is not robust
    flipped = _fake({"a": [1, 1, 0, 1]}, clean={"a": [1, 0, 1, 1]})
    assert flipped.accuracy["a"] == 0.75 and flipped.ensemble(["a"]) == 0.5
    with pytest.raises(ValueError, match="Unknown row"):
        result.ensemble(["c"])


def test_rows_are_validated_before_anything_runs(toy, bare, tmp_path):
    with pytest.raises(ValueError, match=r"Row 'x': Unknown option\(s\) \['epsilon'\]"):
        run(
            {
                "ok": {"threat": "clean"},
                "x": {"threat": "whitebox", "attack": {"name": "fgsm", "epsilon": 0.1}},
            },
            bare,
            toy,
            tmp_path,
        )
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['thread'\]"):
        run({"x": {"thread": "clean"}}, bare, toy, tmp_path)
    with pytest.raises(ValueError, match="multiple of the number of devices"):
        run({"x": {"threat": "clean"}}, bare, toy, tmp_path, batch_size=60)
    assert not (tmp_path / "rows").exists()
    assert isinstance(suite.parse_rows({"c": {"threat": "clean"}})["c"], Row)
