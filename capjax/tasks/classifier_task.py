"""The classifier task: train any zoo classifier on any data source, then test it.

`python -m capjax.main --config=configs/classifier_cifar.py:model=resnet18 --workdir=DIR`
lands here; the training itself is `capjax.train.classifier`.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections

from capjax.core.jsonio import write_json
from capjax.metrics import accuracy
from capjax.train.classifier import train_classifier
from capjax.train.loop import append_jsonl


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Task entry point: train, evaluate on the test split, write `results.json`."""
    trainer, result, dataset = train_classifier(config, workdir)
    acc = accuracy(
        trainer.logits_fn(result.state.variables),
        dataset.test_images,
        dataset.test_labels,
        batch_size=config.train.eval_batch_size,
        desc="test",
    )
    results = {
        "task": "classifier",
        "model": config.model.name,
        "dataset": dataset.name,
        "steps": result.step,
        "test_accuracy": acc,
        "num_test": int(len(dataset.test_labels)),
    }
    if trainer.adversarial is not None:  # AT: also the training attack on the test split
        logits_fn = trainer.logits_fn(result.state.variables)
        results["adversarial_training"] = trainer.adversarial.describe()
        results["test_adversarial_accuracy"] = accuracy(
            logits_fn,
            dataset.test_images,
            dataset.test_labels,
            batch_size=config.train.eval_batch_size,
            transform=trainer.adversarial.test_attack(logits_fn, jax.random.key(config.seed + 1)),
            desc="test PGD",
        )
    append_jsonl(
        os.path.join(workdir, "metrics.jsonl"),
        {"split": "test", "step": result.step, "accuracy": acc},
    )
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, "results.json"), results)
        print(
            f"{config.model.name} on {dataset.name}: test accuracy {acc:.4f} "
            f"({len(dataset.test_labels)} images, {result.step} steps)"
        )
    return results
