"""The `demo` task: the whole story at small scale on the built-in synthetic data.

    python -m capjax.main --config=configs/demo.py --workdir=/tmp/capjax_demo

Stages (each resumable, in its own folder of the workdir):
1. `classifier/`: a tiny CNN;
2. `cafd/`: a CAFD purifier for it, trained on the first `purifier_train_examples` images;
3. `capgan/`: a CAP-GAN purifier for it, likewise;
4. `eval_<defense>/`: the suite of `config.eval.rows` (clean, white-box, end to end, BPDA)
   for no defense, CAFD and CAP-GAN, with sanity checks;
then one table over all three in `report.md` and `accuracy.png` in the workdir, also printed.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np

from capjax.eval.defense import Defense, keyed, weights_fingerprint
from capjax.eval.evaluate import evaluate_defense, plain_rows
from capjax.train import cafd as cafd_task
from capjax.train import capgan as capgan_task
from capjax.train import classifier as classifier_lib
from capjax.train import mesh as mesh_lib
from capjax.train.checkpoint import write_json


def _with_target(config: ml_collections.ConfigDict, target_dir: str, stage):
    """A stage's config that protects the demo's classifier (no retraining of its own)."""
    stage = ml_collections.ConfigDict(stage.to_dict())
    stage.seed = config.seed
    stage.data = ml_collections.ConfigDict(config.data.to_dict())
    stage.data.num_train = config.purifier_train_examples
    stage.target.model = config.classifier.model
    stage.target.train = config.classifier.train
    stage.target.workdir = target_dir
    return stage


DEFAULT_TITLE = "capjax demo: a tiny CNN on synthetic shapes, undefended and purified"


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains the classifier and both purifiers, evaluates all three, prints the table."""
    mesh = mesh_lib.make_mesh()
    classifier_config = ml_collections.ConfigDict(
        {
            "task": "classifier",
            "seed": config.seed,
            "data": config.data,
            "model": config.classifier.model,
            "train": config.classifier.train,
        }
    )
    target_dir = os.path.join(workdir, "classifier")
    dataset = classifier_lib.load_data(config, workdir)
    trainer, result, _ = classifier_lib.train_classifier(
        classifier_config, target_dir, dataset, mesh
    )
    logits_fn = trainer.logits_fn(result.state.variables)

    purifier_data = dataset.take(num_train=config.purifier_train_examples)
    cafd_trainer, cafd_result = cafd_task.train_cafd(
        _with_target(config, target_dir, config.cafd),
        os.path.join(workdir, "cafd"),
        purifier_data,
        mesh,
    )
    capgan_trainer, capgan_result = capgan_task.train_capgan(
        _with_target(config, target_dir, config.capgan),
        os.path.join(workdir, "capgan"),
        purifier_data,
        mesh,
    )
    f_weights = weights_fingerprint(result.state.variables)
    cafd_weights = cafd_result.state.denoiser_variables
    capgan_weights = capgan_result.state.generator_params["a2c"]
    defenses = {
        "none": Defense(name="no defense", classifier=logits_fn, fingerprint=f_weights),
        "cafd": Defense(
            name="CAFD",
            classifier=logits_fn,
            purify=keyed(cafd_trainer.purify(cafd_result.state)),
            fingerprint=f_weights + weights_fingerprint(cafd_weights),
        ),
        "capgan": Defense(
            name="CAP-GAN",
            classifier=logits_fn,
            purify=keyed(capgan_trainer.purify(capgan_result.state)),
            fingerprint=f_weights + weights_fingerprint(capgan_weights),
        ),
    }
    rows = plain_rows(config.eval.rows)
    results = {}
    for name, defense in defenses.items():
        extra = None
        if name == "capgan":
            extra = capgan_task.attention_figure(capgan_trainer, capgan_result.state)
        results[name] = evaluate_defense(
            defense=defense,
            dataset=dataset,
            eval_config=config.eval,
            workdir=os.path.join(workdir, f"eval_{name}"),
            seed=config.seed,
            mesh=mesh,
            title=f"demo: {defense.name}",
            figure_extra=extra,
            rows=rows,
        )
    summary = {
        "task": "demo",
        "title": config.get("title") or DEFAULT_TITLE,
        "dataset": dataset.name,
        "num_examples": min(config.eval.num_examples, len(dataset.test_labels)),
        "rows": {row_id: row.get("label") or row_id for row_id, row in rows.items()},
        "accuracy": {name: r["accuracy"] for name, r in results.items()},
        "flags": {
            name: [f["name"] for f in r.get("sanity", {}).get("flags", [])]
            for name, r in results.items()
        },
    }
    if jax.process_index() == 0:
        write_summary(workdir, summary, {n: d.name for n, d in defenses.items()})
    return summary


def write_summary(workdir: str, summary: dict[str, Any], names: dict[str, str]) -> None:
    """`results.json`, `report.md` (rows x defenses) and `accuracy.png`; prints the table."""
    write_json(os.path.join(workdir, "results.json"), summary)
    rows = summary["rows"]
    header = "| threat model | " + " | ".join(names[n] for n in summary["accuracy"]) + " |"
    lines = [
        f"# {summary['title']}",
        "",
        f"{summary['num_examples']} test images of {summary['dataset']}; L-inf eps 8/255. "
        "Details, sanity checks and figures per defense in `eval_<defense>/report.md`.",
        "",
        header,
        "|---" * (len(summary["accuracy"]) + 1) + "|",
    ]
    for row_id, label in rows.items():
        cells = [f"{summary['accuracy'][n][row_id]:.1%}" for n in summary["accuracy"]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    flagged = {n: f for n, f in summary["flags"].items() if f}
    lines += [
        "",
        "Sanity flags: "
        + (", ".join(f"{names[n]}: {f}" for n, f in flagged.items()) if flagged else "none fired."),
    ]
    lines += ["", "![accuracy](accuracy.png)"]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(workdir, "report.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(rows), 3.2))
    width = 0.8 / len(summary["accuracy"])
    for i, (name, accuracy) in enumerate(summary["accuracy"].items()):
        xs = np.arange(len(rows)) + i * width
        ax.bar(xs, [100 * accuracy[r] for r in rows], width, label=names[name])
    ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2, list(rows.values()), fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "accuracy.png"), dpi=110)
    plt.close(fig)
