"""The suite on a real (tiny) classifier: threat models agree where they must, gradient
masking is exposed by BPDA, resumption recomputes nothing finished, and the per-example
ensemble rule."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capjax import attack_specs
from capjax.core import mesh as mesh_lib
from capjax.core.errors import ConfigError
from capjax.eval import sanity, suite
from capjax.eval.defense import Defense
from capjax.eval.suite import Row, RowResult, SuiteResult, run_suite

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


def test_a_row_may_run_on_the_first_examples_only(toy, bare, tmp_path):
    rows = {
        "fgsm": {"threat": "undefended", "attack": {"name": "fgsm", "eps": 2 / 255}},
        "fgsm_24": {
            "threat": "undefended",
            "attack": {"name": "fgsm", "eps": 2 / 255},
            "num_examples": 24,
        },
    }
    result = run(rows, bare, toy, tmp_path, batch_size=16)
    assert result.num_examples == 64
    assert result.rows["fgsm"].num_examples == 64 and result.rows["fgsm_24"].num_examples == 24
    # the same attack and keys on the first 24 examples: the same outcomes there
    np.testing.assert_array_equal(result.rows["fgsm_24"].correct, result.rows["fgsm"].correct[:24])
    # the worst case is taken over the examples both rows ran on
    both = result.rows["fgsm"].robust[:24] & result.rows["fgsm_24"].robust
    assert result.ensemble(["fgsm", "fgsm_24"]) == float(np.mean(both))
    stored = json.loads((tmp_path / "rows" / "fgsm_24.json").read_text())
    assert stored["settings"]["num_examples"] == 24
    again = run(rows, bare, toy, tmp_path, batch_size=16)
    assert again.rows["fgsm_24"].loaded
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="num_examples must be a positive int"):
            suite.parse_rows({"x": {"threat": "clean", "num_examples": bad}})


def test_sanity_compares_rows_on_the_examples_both_ran_on():
    rows = suite.parse_rows(
        {
            "fgsm": {"threat": "whitebox", "attack": {"name": "fgsm", "eps": 0.01}},
            "pgd": {
                "threat": "whitebox",
                "attack": {"name": "pgd", "eps": 0.01, "step_size": 0.005, "steps": 5},
                "num_examples": 100,
            },
        }
    )
    # On the 100 examples both ran on FGSM leaves all correct and PGD 60: as it should be.
    # FGSM's 10% overall is below PGD's 60% only through the 900 that PGD never ran on.
    fgsm = np.r_[np.ones(100, bool), np.zeros(900, bool)]
    pgd = np.r_[np.ones(60, bool), np.zeros(40, bool)]
    result = SuiteResult(
        {
            "fgsm": RowResult(rows["fgsm"], fgsm, np.ones(1000, bool), 1.0),
            "pgd": RowResult(rows["pgd"], pgd, np.ones(100, bool), 1.0),
        },
        1000,
    )
    assert sanity.check_single_step(result) is None
    # and it does fire when FGSM does worse on the examples both ran on
    result.rows["fgsm"] = RowResult(rows["fgsm"], ~fgsm, np.ones(1000, bool), 1.0)
    assert sanity.check_single_step(result) is not None


def test_whitebox_examples_are_shared_by_defenses_on_one_classifier(toy, tmp_path, monkeypatch):
    rows = {"whitebox": {"threat": "whitebox", "attack": PGD}}
    on_f = {"classifier": toy.classifier, "classifier_fingerprint": "f0"}
    first = Defense("quantize", purify=quantize, fingerprint="a", **on_f)
    second = Defense("identity", purify=lambda x, key: x, fingerprint="b", **on_f)
    traced = []
    real_make_attack = attack_specs.make_attack

    def counting_make_attack(spec):
        attack = real_make_attack(spec)

        def counted(*args):
            traced.append(spec["name"])
            return attack(*args)

        return counted

    monkeypatch.setattr(suite.attack_specs, "make_attack", counting_make_attack)
    store = {}
    a = run(rows, first, toy, tmp_path / "a", batch_size=32, adversarial_store=store)
    assert traced == ["pgd"] and len(store) == 1
    b = run(rows, second, toy, tmp_path / "b", batch_size=32, adversarial_store=store)
    assert traced == ["pgd"]  # the second defense scored the stored x_adv
    # ... and got exactly what attacking f again gives (a row's numbers never depend on
    # the store: classifier-only rows always run as attack, then score)
    alone = run(rows, second, toy, tmp_path / "alone", batch_size=32)
    assert traced == ["pgd", "pgd"]
    np.testing.assert_array_equal(b.rows["whitebox"].correct, alone.rows["whitebox"].correct)
    assert a.rows["whitebox"].num_examples == 64
    # another classifier does not reuse them
    other = Defense("other f", toy.classifier, classifier_fingerprint="f1")
    run(rows, other, toy, tmp_path / "c", batch_size=32, adversarial_store=store)
    assert traced == ["pgd", "pgd", "pgd"] and len(store) == 2


def test_autoattack_rows_gather_outside_jit_and_agree_with_the_full_batch_run(toy, tmp_path):
    aa = {
        "name": "autoattack",
        "eps": 4 / 255,
        "version": "custom",
        "attacks_to_run": ["apgd-ce", "apgd-t"],
        "options": {"apgd-ce": {"steps": 5}, "apgd-t": {"steps": 3, "num_target_classes": 2}},
    }
    rows = {
        "whitebox_aa": {"threat": "whitebox", "attack": aa},
        "end_to_end_aa": {"threat": "end_to_end", "attack": aa, "num_examples": 32},
    }
    assert suite.runs_eagerly(suite.parse_rows(rows)["end_to_end_aa"])
    identity = Defense("identity", toy.classifier, purify=lambda x, key: x)
    result = run(rows, identity, toy, tmp_path, batch_size=32)
    # through an identity purifier, end to end is the white-box attack (same spec, same keys)
    np.testing.assert_array_equal(
        result.rows["end_to_end_aa"].correct, result.rows["whitebox_aa"].correct[:32]
    )
    # the full-batch mode under jit (every component on every example) agrees per example
    attack = attack_specs.make_attack(aa)
    x = jnp.asarray(toy.images[:32], jnp.float32) / 255
    y = jnp.asarray(toy.labels[:32])
    attack_key = jax.random.split(
        jax.random.fold_in(suite.row_key(0, result.rows["whitebox_aa"].row), 0), 3
    )[0]
    x_adv = jax.jit(lambda x, y, k: attack(toy.classifier, x, y, k))(x, y, attack_key)
    full_batch = np.asarray(jnp.argmax(toy.classifier(x_adv), -1) == y)
    np.testing.assert_array_equal(result.rows["end_to_end_aa"].correct, full_batch)
    assert 0.0 < result.rows["whitebox_aa"].accuracy < result.rows["whitebox_aa"].clean_accuracy


def test_an_after_row_attacks_the_survivors_only_and_keeps_the_worst_case(
    toy, bare, tmp_path, monkeypatch
):
    fgsm = {"name": "fgsm", "eps": 2 / 255}
    rows = {
        "fgsm": {"threat": "undefended", "attack": fgsm},
        "pgd_after": {"threat": "undefended", "attack": PGD, "after": "fgsm"},
        "pgd": {"threat": "undefended", "attack": PGD},
    }
    attacked = []
    real_compute = suite.compute_row

    def counting_compute(row, **kwargs):
        attacked.append((row.row_id, len(kwargs["labels"])))
        return real_compute(row, **kwargs)

    monkeypatch.setattr(suite, "compute_row", counting_compute)
    result = run(rows, bare, toy, tmp_path, batch_size=16)
    first, after, alone = (result.rows[k] for k in ("fgsm", "pgd_after", "pgd"))
    survivors = int(first.robust.sum())
    assert 0 < survivors < 64
    assert attacked == [("fgsm", 64), ("pgd_after", survivors), ("pgd", 64)]
    # robust only where both attacks fail; FGSM's outcome kept where it already broke
    assert after.num_examples == 64 and not np.any(after.robust & ~first.robust)
    assert result.ensemble(["pgd_after"]) == result.ensemble(["fgsm", "pgd_after"])
    assert after.robust_accuracy <= min(first.robust_accuracy, alone.robust_accuracy + 0.1)
    np.testing.assert_array_equal(after.correct[~first.robust], first.correct[~first.robust])
    stored = json.loads((tmp_path / "rows" / "pgd_after.json").read_text())
    assert stored["settings"]["after"]["row"] == "fgsm"
    # resumed: loaded while the earlier row is unchanged, recomputed once it changes
    attacked.clear()
    assert run(rows, bare, toy, tmp_path, batch_size=16).rows["pgd_after"].loaded
    assert attacked == []
    changed = {**rows, "fgsm": {**rows["fgsm"], "attack": {**fgsm, "eps": 1 / 255}}}
    run(changed, bare, toy, tmp_path, batch_size=16)
    assert [r for r, _ in attacked] == ["fgsm", "pgd_after"]


def test_after_must_name_an_earlier_attack_row_of_the_same_threat():
    pgd = {"threat": "whitebox", "attack": PGD}
    for rows in (
        {"a": {**pgd, "after": "b"}, "b": pgd},  # not earlier
        {"a": {"threat": "clean"}, "b": {**pgd, "after": "a"}},  # not an attack row
        {"a": {"threat": "end_to_end", "attack": PGD}, "b": {**pgd, "after": "a"}},
        {"a": pgd, "b": {"threat": "clean", "after": "a"}},
        {"a": pgd, "b": {**pgd, "after": ["a"]}},
    ):
        with pytest.raises(ValueError, match="'after' must name an earlier attack row"):
            suite.parse_rows(rows)
    assert suite.parse_rows({"a": pgd, "b": {**pgd, "after": "a"}})["b"].after == "a"


def test_early_stop_rows_run_outside_jit_and_keep_every_verdict(toy, tmp_path):
    pgd = {"name": "pgd", "eps": 2 / 255, "step_size": 0.5 / 255, "steps": 25}
    early = dict(pgd, early_stop=True)
    rows = {
        "end_to_end": {"threat": "end_to_end", "attack": pgd},
        "bpda": {"threat": "bpda", "attack": pgd},
        "end_to_end_early": {"threat": "end_to_end", "attack": early},
        "bpda_early": {"threat": "bpda", "attack": early},
    }
    parsed = suite.parse_rows(rows)
    assert suite.runs_eagerly(parsed["bpda_early"]) and not suite.runs_eagerly(parsed["bpda"])
    identity = Defense("identity", toy.classifier, purify=lambda x, key: x)
    result = run(rows, identity, toy, tmp_path, batch_size=32)
    for row in ("end_to_end", "bpda"):
        np.testing.assert_array_equal(result.rows[f"{row}_early"].correct, result.rows[row].correct)
    assert 0.0 < result.rows["bpda_early"].accuracy < result.rows["bpda_early"].clean_accuracy
    # Where the attacked model is not the scored one, stopping early would change the row.
    for threat in ("whitebox", "transfer"):
        with pytest.raises(ConfigError, match="early_stop"):
            suite.parse_rows({"x": {"threat": threat, "attack": early}}, identity, identity)
    approximated = Defense(
        "approximated", toy.classifier, quantize, differentiable_purify=lambda x, key: x
    )
    with pytest.raises(ConfigError, match="differentiable stand-in"):
        suite.parse_rows({"x": {"threat": "end_to_end", "attack": early}}, approximated)
