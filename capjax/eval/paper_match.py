"""When a paper's number may stand beside a row: only when the run is in the paper's setting.

A number from the CAFD or CAP-GAN paper compares with one of capjax's rows only when the run
matches the setting the number was measured in: the dataset, the target classifier, the
defense variant (CAFD's Eq. 7 or Eq. 6; CAP-GAN's alpha, T and loss terms) and the attack.
Otherwise the row shows "–" and a note says why.

The setting is a flat dict of facts, `{"dataset": "cifar10", "target": "vgg19",
"loss_form": "eq7", ...}`; a paper's expected value may be a tuple of accepted values.
`run_facts` reads them from a run's config; `mismatches` compares.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# CAP-GAN's classifier is "ResNet" (Table III), its depth not stated.
CAPGAN_TARGETS = ("resnet18", "resnet34", "resnet50", "preact_resnet18")
# CAFD's Table 1 protects VGG-19 (Table 2: the same CAFD in front of ResNet-50 and WRN).
CAFD_TARGETS = ("vgg19",)
# The loss weights of every CAP-GAN table (U-GAT-IT's adversarial 1, cycle 10, identity 10,
# CAM 1000; the semantic term 1). A run with other weights (the CPU configs' CAM 1, semantic
# 10) is not a model of the paper.
CAPGAN_WEIGHTS = {
    "adversarial": 1.0,
    "cycle": 10.0,
    "identity": 10.0,
    "cam": 1000.0,
    "semantic": 1.0,
}
# The CAP-GAN setting of Tables I-IV (Table V: alpha 0.7 and T 10 are best; every term on).
CAPGAN_LOSS = {
    **CAPGAN_WEIGHTS,
    "alpha": 0.7,
    "temperature": 10.0,
    "combine": "alpha",
    "use_cam": True,
    "use_sem": True,
    "use_cycle": True,
}

# The settings each paper's tables were measured in, by table prefix.
CAFD_TABLE = {"dataset": "cifar10", "target": CAFD_TARGETS}
CAPGAN_TABLE = {"dataset": "cifar10", "target": CAPGAN_TARGETS}


def _read(config: Mapping[str, Any] | None, path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        if node is None or part not in node:
            return None
        node = node[part]
    return node


def dataset_of(data_config: Mapping[str, Any]) -> str | None:
    """The tfds name of a data section's dataset; None for synthetic data."""
    return None if data_config.get("source") == "synthetic" else data_config.get("name")


def run_facts(run_config: Mapping[str, Any] | None, dataset: str | None) -> dict[str, Any]:
    """The facts of a run that decide which paper number (if any) it compares with.

    Args:
      run_config: the defense's run config (a classifier, CAFD, CAP-GAN, HGD or APE-GAN
        run's `config.json`, as a dict), or None.
      dataset: the tfds name of the evaluation data (None for synthetic data).
    """
    config = run_config or {}
    task = config.get("task")
    target = _read(config, "model.name") if task == "classifier" else None
    target = target or _read(config, "target.model.name")
    facts: dict[str, Any] = {"dataset": dataset, "target": target}
    if task == "cafd":
        facts["loss_form"] = _read(config, "cafd.loss_form")
    if task == "capgan":
        loss = _read(config, "capgan.loss") or {}
        facts.update({key: loss.get(key) for key in CAPGAN_LOSS})
    if task in ("hgd", "apegan"):  # the attack its training examples came from
        facts["training_attack"] = _read(config, f"{task}.attack.name")
    pgd = _read(config, "eval.pgd")
    if pgd:  # the purifier tasks' evaluation attack
        facts["eval_pgd"] = pgd_fact(pgd["eps"], pgd["step_size"], pgd["steps"])
    return facts


def pgd_fact(eps: float, step_size: float, steps: int) -> str:
    """A PGD setting as a fact, e.g. "PGD-40, eps 8/255, step 0.01"."""
    return f"PGD-{int(steps)}, eps {eps * 255:.3g}/255, step {step_size:.4g}"


def purifier_setting(*, dataset: str, targets: tuple[str, ...], pgd, **variant) -> dict:
    """`eval.paper_setting` of a purifier task's config: the setting its `eval.paper`
    numbers were measured in (`variant`: e.g. loss_form="eq7", training_attack="pgd")."""
    return {
        "dataset": dataset,
        "target": tuple(targets),
        "eval_pgd": pgd_fact(pgd["eps"], pgd["step_size"], pgd["steps"]),
        **variant,
    }


def _accepts(expected: Any, value: Any) -> bool:
    if isinstance(expected, (tuple, list)):
        return value in expected
    if isinstance(expected, float) and isinstance(value, (int, float)):
        return abs(expected - value) < 1e-9
    return value == expected


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " or ".join(map(str, value))
    return "synthetic data" if value is None else str(value)


def mismatches(expected: Mapping[str, Any], facts: Mapping[str, Any]) -> list[str]:
    """Each fact where the run differs from the paper's setting, as "what: run vs paper"."""
    out = []
    for key, want in expected.items():
        have = facts.get(key)
        if not _accepts(want, have):
            out.append(f"{key} is {_show(have)}, the paper's is {_show(want)}")
    return out


def suite_setting(suite: str, defense: str = "") -> dict[str, Any]:
    """The setting of a paper suite's numbers (`paper_suites.SUITES`) for `defense`, or {}.

    Beyond the dataset and target: CAFD's Table 1 trained HGD and APE-GAN on non-targeted
    CW-L2 examples (its Section 4.2) and ran JPEG at quality 75 and TVM at weight 0.003 (its
    caption); CAP-GAN's baselines were "trained on PGD or CW examples as in the papers".
    """
    if suite.startswith("cafd_"):
        extra = {
            "hgd": {"training_attack": "cw"},
            "apegan": {"training_attack": "cw"},
            "jpeg": {"jpeg_quality": 75},
            "tvm": {"tvm_weight": 0.003},
        }
        return {**CAFD_TABLE, **extra.get(defense, {})}
    if suite.startswith("capgan_"):
        extra = {
            "hgd": {"training_attack": ("pgd", "cw")},
            "apegan": {"training_attack": ("pgd", "cw")},
        }
        return {**CAPGAN_TABLE, **extra.get(defense, {})}
    return {}


# Settings of a suite that differ from the paper's or that the paper does not state, said
# under every report of the suite ({suite: notes}; {(suite, defense): notes} for one defense).
SUITE_NOTES = {
    "capgan_table2": [
        "SPSA: 100 steps of 1,024 +/- direction pairs (2,048 queries) per step, reading the "
        "paper's SPSA batch of 2,048 as queries, as cleverhans counts them.",
        "Square: 1,000 queries per restart, a budget the paper does not state.",
    ],
    "cafd_table1": [
        "STA_N / STA_T: capjax's stAdv (Adam on the flow field, CW margin loss, 100 steps, "
        "tau 0.05), not the L-BFGS optimiser of the authors' STA code.",
        "TI-DIM_N: the authors' implementation defaults (40 steps of 0.01, decay 1, diversity "
        "probability 0.5, Gaussian kernel 15, sigma 3).",
    ],
}
DEFENSE_NOTES = {
    ("capgan", "jpeg"): [
        "JPEG: the CAP-GAN paper does not state its quality; this run uses the quality in "
        "`defense_options.jpeg` (default 75, CAFD's). The paper's JPEG clean accuracy "
        "(74.76%) suggests a lower quality than 75."
    ],
}


def suite_notes(suites: str, defense: str) -> list[str]:
    """`SUITE_NOTES` and `DEFENSE_NOTES` of the named suites ("capgan_table1+adaptive")."""
    notes: list[str] = []
    for suite in suites.split("+"):
        paper = suite.split("_", 1)[0]
        for note in SUITE_NOTES.get(suite, []) + DEFENSE_NOTES.get((paper, defense), []):
            if note not in notes:
                notes.append(note)
    return notes
