"""The `demo` task: the whole story at small scale on the built-in synthetic data.

    python -m capjax.main --config=configs/demo.py --workdir=/tmp/capjax_demo

Stages (each resumable, in its own folder of the workdir):
1. `classifier/`: a tiny CNN;
2. `cafd/`: a CAFD purifier for it, run from `config.cafd`, the CAFD task's whole config
   (`config_defaults.demo_stage`: linked to the demo's data, seed and classifier; its
   `data.num_train` says how many training images it takes);
3. `capgan/`: a CAP-GAN purifier for it, likewise from `config.capgan`;
4. `eval_<defense>/`: the suite of `config.eval.rows` (clean, white-box, end to end, BPDA)
   for no defense, CAFD and CAP-GAN, with sanity checks;
then one table over all three in `report.md` and `accuracy.png` in the workdir, also printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import jax
import ml_collections

from capjax import data as data_lib
from capjax.core import mesh as mesh_lib
from capjax.eval.defense import Defense, keyed, weights_fingerprint
from capjax.eval.evaluate import evaluate_defense, plain_rows
from capjax.eval.summary import write_summary
from capjax.tasks import cafd_task, capgan_task, purifier_task
from capjax.train import classifier as classifier_lib


def stage_config(
    config: ml_collections.ConfigDict, name: str, target_dir: str
) -> ml_collections.ConfigDict:
    """`config[name]` as written, resolved, with `target.workdir` at the demo's classifier
    (the one value that depends on `--workdir`)."""
    stage = ml_collections.ConfigDict(config[name].to_dict())
    stage.target.workdir = target_dir
    return stage


# (config section and stage folder, task module, progress-bar title), trained in this order.
PURIFIER_STAGES = (("cafd", cafd_task, "CAFD denoiser"), ("capgan", capgan_task, "CAP-GAN"))

DEFAULT_TITLE = "capjax demo: a tiny CNN on synthetic shapes, undefended and purified"


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains the classifier and both purifiers, evaluates all three, prints the table."""
    mesh = mesh_lib.make_mesh()
    classifier_config = config.classifier  # the classifier task's whole config
    target_dir = os.path.join(workdir, "classifier")
    commit = git_commit()  # at the start: the code that runs, not what the tree holds later
    stages: list[dict[str, Any]] = []
    clock = time.perf_counter()

    def finished(stage: str, result=None) -> None:
        nonlocal clock
        now = time.perf_counter()
        info: dict[str, Any] = {"name": stage, "seconds": round(now - clock, 1)}
        if result is not None and result.resumed_from is not None:
            info["resumed"] = result.resumed_from >= result.step
        stages.append(info)
        clock = now

    for name, task, _ in PURIFIER_STAGES:  # before any training, so a typo loses no work
        task.validate(stage_config(config, name, target_dir))
    dataset = data_lib.load_from_config(config, workdir)
    finished("data")
    trainer, result, _ = classifier_lib.train_classifier(
        classifier_config, target_dir, dataset, mesh
    )
    finished("classifier", result)
    logits_fn = trainer.logits_fn(result.state.variables)

    trained = {}
    for name, task, title in PURIFIER_STAGES:
        stage = stage_config(config, name, target_dir)
        trained[name] = purifier_task.train_purifier(
            stage,
            os.path.join(workdir, name),
            dataset.take(num_train=stage.data.num_train),
            mesh,
            make_trainer=task.make_trainer,
            fingerprint=task.fingerprint(stage),
            title=title,
        )
        finished(name, trained[name][1])
    (cafd_trainer, cafd_result), (capgan_trainer, capgan_result) = trained.values()
    f_weights = weights_fingerprint(result.state.variables)
    cafd_weights = cafd_result.state.denoiser_variables
    capgan_weights = capgan_result.state.generator_params["a2c"]
    on_f = {"classifier": logits_fn, "classifier_fingerprint": f_weights}
    defenses = {
        "none": Defense(name="no defense", fingerprint=f_weights, **on_f),
        "cafd": Defense(
            name="CAFD",
            purify=keyed(cafd_trainer.purify(cafd_result.state)),
            fingerprint=f_weights + weights_fingerprint(cafd_weights),
            **on_f,
        ),
        "capgan": Defense(
            name="CAP-GAN",
            purify=keyed(capgan_trainer.purify(capgan_result.state)),
            fingerprint=f_weights + weights_fingerprint(capgan_weights),
            **on_f,
        ),
    }
    # The white-box rows attack f alone: one x_adv for all three defenses.
    adversarial_store: dict = {}
    rows = plain_rows(config.eval.rows)
    num_examples = min(config.eval.num_examples, len(dataset.test_labels))
    results, same_as = {}, {}
    for name, defense in defenses.items():
        extra = None
        if name == "cafd":
            extra = purifier_task.cam_figure(cafd_trainer, cafd_result.state)
        if name == "capgan":
            extra = capgan_task.attention_figure(capgan_trainer, capgan_result.state)
        defense_rows, same_as[name] = rows_for(defense, rows)
        results[name] = evaluate_defense(
            defense=defense,
            dataset=dataset,
            eval_config=config.eval,
            workdir=os.path.join(workdir, f"eval_{name}"),
            seed=config.seed,
            mesh=mesh,
            title=f"{config.get('title') or DEFAULT_TITLE}: {defense.name}",
            figure_extra=extra,
            rows=defense_rows,
            adversarial_store=adversarial_store,
        )
        finished(f"evaluation: {defense.name}")
    paper = config.get("paper")
    summary = {
        "task": "demo",
        "title": config.get("title") or DEFAULT_TITLE,
        "dataset": dataset.name,
        "num_examples": num_examples,
        "defenses": list(defenses),
        "names": {n: d.name for n, d in defenses.items()},
        "rows": list(rows),
        "labels": {row_id: row.get("label") or row_id for row_id, row in rows.items()},
        "row_examples": {
            row_id: min(row.get("num_examples") or num_examples, num_examples)
            for row_id, row in rows.items()
        },
        "accuracy": {name: r["accuracy"] for name, r in results.items()},
        "same_as": {name: s for name, s in same_as.items() if s},
        "paper": paper.to_dict() if paper is not None else {},
        "paper_notes": list(config.get("paper_notes") or []),
        "flags": {
            name: [f["name"] for f in r.get("sanity", {}).get("flags", [])]
            for name, r in results.items()
        },
        "stages": stages,
        "command": command_line(),
        "commit": commit,
    }
    if jax.process_index() == 0:
        print(write_summary(workdir, summary))
    return summary


def rows_for(
    defense: Defense, rows: dict[str, dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The rows to run for `defense`, and {skipped row: the row it equals}.

    Without a purifier an end-to-end or BPDA row is the white-box row with the same attack
    (same model, same keys: `capjax.eval.suite.row_key`), so it is not run twice. A row run
    "after" such a skipped row runs after its white-box twin instead, as a white-box row (the
    same model again).
    """
    if defense.purify is not None:
        return rows, {}

    def attack_key(row):  # `early_stop` leaves every verdict of such a row as it is
        attack = {k: v for k, v in dict(row.get("attack") or {}).items() if k != "early_stop"}
        return json.dumps(attack, sort_keys=True)

    kept, same = {}, {}
    whitebox = {
        attack_key(row): row_id
        for row_id, row in rows.items()
        if row["threat"] == "whitebox" and not row.get("after")
    }
    for row_id, row in rows.items():
        twin = whitebox.get(attack_key(row))
        if row.get("after") in same:
            kept[row_id] = {**row, "threat": "whitebox", "after": same[row["after"]]}
            continue
        if row["threat"] in ("end_to_end", "bpda") and twin is not None and not row.get("after"):
            twin_n = rows[twin].get("num_examples")
            if twin_n is None or twin_n >= (row.get("num_examples") or twin_n):
                same[row_id] = twin
                continue
        kept[row_id] = row
    return kept, same


def command_line() -> str:
    """The command that is running, as a user would type it."""
    args = list(sys.argv[1:])
    program = "python -m capjax.main" if sys.argv and sys.argv[0].endswith("main.py") else None
    return " ".join([program or os.path.basename(sys.argv[0] if sys.argv else "python"), *args])


def git_commit() -> str | None:
    """The capjax checkout's commit (with "+changes" when the tree differs), or None."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+changes" if dirty else "") if commit else None
