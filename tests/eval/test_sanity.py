"""Each sanity check fires on a case built to trip it and stays quiet on a sound one."""

import numpy as np
import pytest
from eval_fakes import fake_result

from capjax.eval import sanity


def fgsm(eps=8 / 255):
    return {"name": "fgsm", "eps": eps}


def pgd(eps=8 / 255, steps=10):
    return {"name": "pgd", "eps": eps, "step_size": eps / 4, "steps": steps}


def test_tolerance_is_two_standard_errors_or_one_point():
    assert sanity.default_tolerance(0.5, 0.5, 100) == pytest.approx(2 * np.sqrt(0.5 / 100))
    assert sanity.default_tolerance(1.0, 1.0, 100) == 0.01


def test_single_step_beats_iterative():
    rows = {
        "fgsm": {"threat": "whitebox", "attack": fgsm()},
        "pgd": {"threat": "whitebox", "attack": pgd()},
        "pgd other eps": {"threat": "whitebox", "attack": pgd(4 / 255)},
        "pgd other threat": {"threat": "bpda", "attack": pgd()},
    }
    acc = {"fgsm": 0.30, "pgd": 0.60, "pgd other eps": 0.9, "pgd other threat": 0.9}
    flag = sanity.check_single_step(fake_result(rows, acc))
    assert flag.name == "single_step_beats_iterative" and flag.rows == ("fgsm", "pgd")
    assert "masked or obfuscated gradients" in flag.message
    # sound: PGD below FGSM; within tolerance (2 SE of 100 examples ~ 0.13) is not a flag
    assert sanity.check_single_step(fake_result(rows, {**acc, "pgd": 0.2})) is None
    assert sanity.check_single_step(fake_result(rows, {**acc, "pgd": 0.40})) is None
    assert sanity.check_single_step(fake_result(rows, {**acc, "pgd": 0.40}), 0.05) is not None
    # a targeted PGD is allowed to leave accuracy higher: it only aims at one class
    targeted = {
        "fgsm": rows["fgsm"],
        "pgd_t": {"threat": "whitebox", "attack": {**pgd(), "target": "random"}},
    }
    assert sanity.check_single_step(fake_result(targeted, {"fgsm": 0.3, "pgd_t": 0.9})) is None


def test_weaker_access_beats_stronger():
    rows = {
        "transfer": {"threat": "transfer", "attack": pgd()},
        "graybox": {"threat": "graybox", "attack": pgd()},
        "whitebox": {"threat": "whitebox", "attack": pgd()},
        "e2e": {"threat": "end_to_end", "attack": pgd()},
    }
    # gray-box below white-box is expected (whitebox ignores the purifier): no flag
    sound = {"transfer": 0.8, "graybox": 0.3, "whitebox": 0.6, "e2e": 0.1}
    assert sanity.check_weaker_access(fake_result(rows, sound)) is None
    flag = sanity.check_weaker_access(fake_result(rows, {**sound, "e2e": 0.6}))
    assert (
        flag.rows == ("graybox", "e2e") and "gradient masking or a weak white-box" in flag.message
    )
    flag = sanity.check_weaker_access(fake_result(rows, {**sound, "transfer": 0.4}))
    assert flag.rows == ("transfer", "whitebox")
    score = {
        "square": {"threat": "score_based", "attack": {"name": "square", "eps": 8 / 255}},
        "e2e": rows["e2e"],
    }
    assert sanity.check_weaker_access(fake_result(score, {"square": 0.2, "e2e": 0.7})).rows == (
        "square",
        "e2e",
    )


def test_accuracy_rising_with_eps_or_steps():
    rows = {
        "pgd 4": {"threat": "bpda", "attack": pgd(4 / 255)},
        "pgd 8": {"threat": "bpda", "attack": pgd(8 / 255)},
        "pgd 8 x40": {"threat": "bpda", "attack": pgd(8 / 255, 40)},
    }
    sound = {"pgd 4": 0.6, "pgd 8": 0.3, "pgd 8 x40": 0.25}
    assert sanity.check_monotone(fake_result(rows, sound)) is None
    flag = sanity.check_monotone(fake_result(rows, {**sound, "pgd 8": 0.8, "pgd 8 x40": 0.75}))
    assert flag.rows == ("pgd 4", "pgd 8") and "eps 8/255 vs 4/255" in flag.message
    flag = sanity.check_monotone(fake_result(rows, {**sound, "pgd 8 x40": 0.6}))
    assert flag.rows == ("pgd 8", "pgd 8 x40") and "40 vs 10 steps" in flag.message


def test_unbounded_attack_must_always_succeed():
    rows = {
        "cw": {"threat": "undefended", "attack": {"name": "cw"}},
        "ddn wb": {"threat": "whitebox", "attack": {"name": "ddn"}},
    }
    clean = {"cw": np.arange(100) < 90, "ddn wb": np.ones(100, bool)}
    # 10 clean-misclassified examples that stay misclassified: 100% success on the rest
    assert sanity.check_unbounded(fake_result(rows, {"cw": 0.0, "ddn wb": 0.5}, clean)) is None
    flag = sanity.check_unbounded(fake_result(rows, {"cw": 0.05, "ddn wb": 0.5}, clean))
    assert flag.rows == ("cw",) and "5 of 90 survived" in flag.message  # whitebox not checked
