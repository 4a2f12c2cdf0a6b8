"""The demo task's stage configs and pure helpers: what each stage runs, rows per defense."""

import os

from capjax.eval.defense import Defense
from capjax.main import parse_command_line
from capjax.tasks import demo_task as demo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PGD = {"name": "pgd", "eps": 8 / 255, "step_size": 0.01, "steps": 2}
AA = {"name": "autoattack", "eps": 8 / 255}


def test_each_stage_is_its_tasks_whole_config_and_command_line_overrides_reach_it():
    """Nothing is completed at run time but the target's path: the config shows what each
    stage runs, and one override of the demo's data, seed or classifier reaches every stage."""
    config, _ = parse_command_line(
        [
            f"--config={ROOT}/configs/cifar_cpu.py:smoke",
            "--workdir=/run",
            "--config.data.dir=/elsewhere",
            "--config.seed=3",
            "--config.classifier.model.kwargs.widths=(8, 8, 8)",
            "--config.data.augment.flip=False",
            "--config.capgan.data.num_train=100",
        ]
    )
    assert (config.cafd.task, config.capgan.task) == ("cafd", "capgan")
    assert (config.cafd.data.num_train, config.capgan.data.num_train) == (256, 100)
    assert config.cafd.target.workdir is None
    for name in ("cafd", "capgan"):
        stage = demo.stage_config(config, name, "/run/classifier")
        assert stage.data.dir == "/elsewhere" and stage.seed == 3
        assert stage.data.augment.flip is False
        assert tuple(stage.target.model.kwargs.widths) == (8, 8, 8)
        assert stage.target.train.to_dict() == config.classifier.train.to_dict()
        assert stage.target.workdir == "/run/classifier"
        assert (
            stage.data.source == config.data.source
            and stage[name].to_dict() == config[name][name].to_dict()
        )
    assert config.data.num_train == 256  # the classifier's own count is untouched


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
