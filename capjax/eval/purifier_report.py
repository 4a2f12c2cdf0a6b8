"""Accuracy of a purifier-defended classifier under the papers' threat models, and its report.

Threat models (all built from `logits_fn` and `purify`, docs/design.md principle 3):
- clean: the classifier alone, and classifier(purify(x));
- the papers' ("gray-box" in CAFD, "white-box" in CAP-GAN): PGD crafted against the
  classifier alone, then purified;
- end to end: PGD against classifier(purify(.)) with true gradients.
Every accuracy is recounted by a fresh forward pass of the model it is reported for.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from capjax import data as data_lib
from capjax.attacks.gradient import pgd
from capjax.attacks.wrappers import defended
from capjax.core.jsonio import write_json
from capjax.eval.summary import interval95
from capjax.metrics import accuracy


def evaluate_purifier(
    *,
    logits_fn: Callable[[jax.Array], jax.Array],
    purify: Callable[[jax.Array], jax.Array],
    dataset: data_lib.Dataset,
    eval_config: Any,
    mesh=None,
    cam_fn: Callable[[jax.Array], jax.Array] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Clean and PGD accuracies of `logits_fn` with and without `purify` on the test split.

    Args:
      logits_fn: the classifier, x in [0, 1] -> logits.
      purify: x -> x' in [0, 1].
      dataset: its first `eval_config.num_examples` test images are used.
      eval_config: `num_examples`, `batch_size`, `pgd` (`eps`, `step_size`, `steps`),
        `figure_examples`.
      cam_fn: optional x -> (N, H, W[, C]) class activation maps for the figure.

    Returns:
      {"accuracy": {row: value}, "settings": {...}, "examples": arrays for the figure}.
    """
    n = min(eval_config.num_examples, len(dataset.test_labels))
    images, labels = dataset.test_images[:n], dataset.test_labels[:n]
    p = eval_config.pgd
    key = jax.random.key(seed + 1)
    defended_fn = defended(logits_fn, purify)

    def pgd_against(fn):
        def attack(x, y):
            return pgd(
                fn,
                x,
                y,
                eps=p.eps,
                step_size=p.step_size,
                steps=p.steps,
                key=jax.random.fold_in(key, 0),
                validate=False,
            )

        return attack

    def acc(fn, transform=None, desc=None):
        return accuracy(
            fn,
            images,
            labels,
            batch_size=eval_config.batch_size,
            mesh=mesh,
            transform=transform,
            desc=desc,
        )

    against_classifier = pgd_against(logits_fn)
    rows = {
        "clean (no defense)": acc(logits_fn, desc="clean"),
        "clean (purified)": acc(defended_fn, desc="clean purified"),
        "PGD on classifier (no defense)": acc(logits_fn, against_classifier, "PGD"),
        "PGD on classifier, then purified": acc(defended_fn, against_classifier, "PGD purified"),
        "PGD end to end": acc(defended_fn, pgd_against(defended_fn), "PGD end to end"),
    }
    k = min(eval_config.figure_examples, n)
    x = data_lib.to_float(jnp.asarray(images[:k]))
    x_adv = against_classifier(x, jnp.asarray(labels[:k]))
    x_hat = purify(x_adv)
    examples = {"clean": x, "adversarial": x_adv, "purified": x_hat}
    if cam_fn is not None:
        examples.update({f"cam {name}": _as_map(cam_fn(v)) for name, v in list(examples.items())})
    return {
        "accuracy": rows,
        "settings": {
            "num_examples": n,
            "pgd": {"eps": p.eps, "step_size": p.step_size, "steps": p.steps, "norm": "linf"},
        },
        "examples": jax.device_get(examples),
    }


def _as_map(cams: jax.Array) -> jax.Array:
    """(N, H, W, C) class activation features -> (N, H, W) maps by summing channels."""
    cams = cams.sum(-1) if cams.ndim == 4 else cams
    low = cams.min(axis=(1, 2), keepdims=True)
    high = cams.max(axis=(1, 2), keepdims=True)
    return (cams - low) / jnp.maximum(high - low, 1e-12)


def write_purifier_report(
    workdir: str,
    results: dict[str, Any],
    *,
    title: str,
    paper: dict[str, float] | None = None,
    notes: list[str] | None = None,
) -> None:
    """Writes `results.json`, `report.md` and `figure.png` (process 0 only).

    `notes`: why the paper's numbers stand beside the rows or not, listed under the table.
    """
    if jax.process_index() != 0:
        return
    examples = results.pop("examples", None)
    if notes:
        results["paper_notes"] = list(notes)
    write_json(os.path.join(workdir, "results.json"), results)
    pgd_settings = results["settings"]["pgd"]
    lines = [
        f"# {title}: accuracy of the defended classifier",
        "",
        f"{results['settings']['num_examples']} test images of {results.get('dataset', '?')}; "
        f"PGD L-inf eps {pgd_settings['eps'] * 255:.3g}/255, step {pgd_settings['step_size']:g}, "
        f"{pgd_settings['steps']} iterations, random start.",
        "",
        "| threat model | accuracy | ± 95% |" + (" paper |" if paper else ""),
        "|---|---|---|" + ("---|" if paper else ""),
    ]
    n = results["settings"]["num_examples"]
    for row, value in results["accuracy"].items():
        extra = f" {paper[row]:.1%} |" if paper and row in paper else (" |" if paper else "")
        lines.append(f"| {row} | {value:.1%} | {interval95(value, n):.1%} |{extra}")
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    if examples is not None:
        save_figure(os.path.join(workdir, "figure.png"), examples, title)
        lines += ["", "![examples](figure.png)"]
    with open(os.path.join(workdir, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def save_figure(path: str, examples: dict[str, np.ndarray], title: str) -> None:
    """A grid like CAFD's Figure 4: one row per kind (images, then maps), one column per image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # device_get returns dicts in sorted key order; show images first, then their maps.
    order = ("clean", "adversarial", "purified")
    kinds = [k for k in order if k in examples] + [
        f"cam {k}" for k in order if f"cam {k}" in examples
    ]
    kinds += [k for k in examples if k not in kinds]
    cols = len(examples[kinds[0]])
    fig, axes = plt.subplots(
        len(kinds), cols, figsize=(1.6 * cols, 1.7 * len(kinds)), squeeze=False
    )
    for r, kind in enumerate(kinds):
        for c in range(cols):
            ax = axes[r][c]
            image = np.asarray(examples[kind][c], np.float32)
            ax.imshow(
                np.clip(image, 0, 1),
                cmap="jet" if image.ndim == 2 else None,
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(kind, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
