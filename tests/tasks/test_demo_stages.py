"""The demo task's pure helpers: each purifier's training images, rows run per defense."""

import ml_collections

from capjax.eval.defense import Defense
from capjax.tasks import demo_task as demo

PGD = {"name": "pgd", "eps": 8 / 255, "step_size": 0.01, "steps": 2}
AA = {"name": "autoattack", "eps": 8 / 255}


def test_a_stage_may_train_on_its_own_number_of_images():
    config = ml_collections.ConfigDict(
        {"purifier_train_examples": 100, "cafd": {"train_examples": 0}, "capgan": {"x": 1}}
    )
    assert demo.train_examples(config, config.cafd) == 100
    assert demo.train_examples(config, config.capgan) == 100
    config.cafd.train_examples = 7
    assert demo.train_examples(config, config.cafd) == 7


def test_without_a_purifier_end_to_end_and_bpda_rows_are_the_whitebox_row():
    rows = {
        "clean": {"threat": "clean"},
        "whitebox_pgd": {"threat": "whitebox", "attack": PGD},
        "end_to_end_pgd": {"threat": "end_to_end", "attack": PGD},
        # early_stop leaves every verdict of these rows as it is
        "bpda_pgd": {"threat": "bpda", "attack": {**PGD, "early_stop": True}},
        "whitebox_aa": {"threat": "whitebox", "attack": AA},
        "end_to_end_aa": {"threat": "end_to_end", "attack": AA, "num_examples": 500},
        "end_to_end_other": {"threat": "end_to_end", "attack": {**PGD, "steps": 3}},
    }
    bare = Defense("none", classifier=lambda x: x)
    kept, same = demo.rows_for(bare, rows)
    assert same == {
        "end_to_end_pgd": "whitebox_pgd",
        "bpda_pgd": "whitebox_pgd",
        "end_to_end_aa": "whitebox_aa",  # on 500 of the white-box row's examples
    }
    assert list(kept) == ["clean", "whitebox_pgd", "whitebox_aa", "end_to_end_other"]
    purified = Defense("p", classifier=lambda x: x, purify=lambda x, key: x)
    assert demo.rows_for(purified, rows) == (rows, {})


def test_without_a_purifier_a_row_after_a_skipped_row_runs_after_its_whitebox_twin():
    rows = {
        "whitebox_pgd": {"threat": "whitebox", "attack": PGD},
        "whitebox_aa": {"threat": "whitebox", "attack": AA},
        "end_to_end_pgd": {"threat": "end_to_end", "attack": PGD},
        "end_to_end_aa": {"threat": "end_to_end", "attack": AA, "after": "end_to_end_pgd"},
    }
    kept, same = demo.rows_for(Defense("none", classifier=lambda x: x), rows)
    assert same == {"end_to_end_pgd": "whitebox_pgd"}
    assert kept["end_to_end_aa"] == {"threat": "whitebox", "attack": AA, "after": "whitebox_pgd"}
    assert list(kept) == ["whitebox_pgd", "whitebox_aa", "end_to_end_aa"]
