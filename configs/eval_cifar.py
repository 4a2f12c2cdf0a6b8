"""Evaluate a trained defense on CIFAR-10 the way the papers did, and the way a reviewer would.

    python -m capjax.main --config=configs/eval_cifar.py:cafd_table1 \
        --config.defense=cafd --config.defense_workdir=runs/cafd --workdir=runs/eval_cafd

`defense`: none | adv_training | jpeg | tvm (each on a classifier run) | cafd | capgan |
hgd | apegan (each on its finished run). Suites (variants): `cafd_table1` (CAFD Table 1:
DDN, TI-DIM, PGD, targeted PGD, AutoAttack, stAdv on the classifier, then purified),
`capgan_table1` (black-box transfer: needs `surrogate_workdir`), `capgan_table2` (SPSA,
Square r=1/5, BPDA-I-40), `capgan_table3` (white-box), `capgan_table4` (end to end),
`adaptive` (end-to-end PGD-100 and AutoAttack, BPDA-I PGD-100, and BPDA+EOT for random
defenses), `eps_sweep` (PGD-20 accuracy against eps from 2/255 to 32/255, plotted);
`smoke` shrinks any of them to seconds. Every suite also runs the sanity checks
(`capjax.eval.sanity`) and shows them in report.md. `data.source=run` (the default) takes
the data section of the defense's run.

The paper's number for the chosen defense appears beside ours where the paper has one.
Cross-model defense (CAFD Table 2): `--config.classifier_workdir=<another classifier run>`.
"""

import ml_collections

from capjax.config_defaults import data_config
from capjax.eval import paper_suites

SUITE_OPTIONS = {"adaptive": {"eot_samples": 8}}


def get_config(arg=None):
    from capjax.config_defaults import check_variant, parse_variant

    variant = parse_variant(arg)
    check_variant(variant, set(paper_suites.SUITES) | {"smoke"}, "configs/eval_cifar.py")
    suites = [name for name in paper_suites.SUITES if name in variant] or ["cafd_table1"]
    defense = "cafd"  # the paper numbers follow --config.defense at run time
    rows, start = {}, 0
    for name in suites:
        part = paper_suites.suite(name, defense, **SUITE_OPTIONS.get(name, {}))
        rows.update(paper_suites.numbered(part, start))
        start += len(part)
    data = data_config("run")
    config = ml_collections.ConfigDict(
        {
            "task": "eval",
            "seed": 0,
            "data": data,
            "suite": "+".join(suites),
            "defense": defense,
            "defense_workdir": "",
            "classifier_workdir": "",
            "surrogate_workdir": "",
            "surrogate_defense_workdir": "",
            "defense_options": {
                "jpeg": {"quality": 75, "subsampling": "444"},
                "tvm": {"keep_prob": 0.5, "weight": 0.003},
            },
            "eval": {
                # All 10,000 test images: on 1,000 (standard error near 1.1 points) a 2-point
                # gap to a paper is noise. report.md prints each row's 95% interval;
                # --config.eval.num_examples=N for a quick run.
                "num_examples": 10_000,
                "batch_size": 200,
                "eot_samples": 8,
                "figure_examples": 6,
                "rows": rows,
            },
        }
    )
    if "smoke" in variant:
        config.eval.update(
            {"num_examples": 64, "batch_size": 64, "figure_examples": 4, "eot_samples": 2}
        )
        for row in config.eval.rows.values():
            attack = row["attack"]
            for field, small in (
                ("steps", 3),
                ("binary_search_steps", 1),
                ("num_pairs", 8),
                ("restarts", 1),
            ):
                if field in attack:
                    attack[field] = min(attack[field], small)
            if attack["name"] == "autoattack":
                attack.update({"name": "apgd", "steps": 3})
    return config
