"""The papers' evaluation suites as plain rows, with the papers' numbers (configs build on these).

A row is a plain dict: {"threat": threat model, "attack": attack spec, "group": the table it
belongs to, "label": its column in that table, "paper": the paper's accuracy or -1, "order":
its position}. Rows are keyed by an id that names the file its per-example results are saved
under.

Settings not printed in the papers follow the sources named in `docs/sources.md`:
- CAP-GAN: eps 8/255 everywhere; PGD and BPDA step 2/255 with a random start (Madry et
  al.'s CIFAR-10 setting, which the paper's PGD_7 follows for its AT baseline); MI-FGSM 20
  steps of eps/20 with decay 1; CW-L2 as CAFD's scripts (100 steps, 4 searches); SPSA and
  Square with the budgets of Section IV-C where given (the SPSA batch of 2,048 read as
  queries, as cleverhans counts them: 1,024 +/- pairs, capjax's `num_pairs`; Square's
  1,000 queries are not in the paper). `paper_match.SUITE_NOTES` says so in every report.
- CAFD: the authors' attack scripts: PGD 40 steps of 0.01, DDN 100 steps, STA 100 steps
  (capjax's stAdv optimises with Adam, not L-BFGS), AutoAttack standard, TI-DIM with the
  authors' class defaults (40 steps of 0.01, decay 1, diversity 0.5, kernel 15, sigma 3),
  eps 8/255.
  FWA is left out (capjax.attacks has no exact Wasserstein projection; docs/attacks.md says why).
Accuracies are fractions; the CAFD paper prints error rates, turned here into 1 - error.
"""

from __future__ import annotations

import copy
from typing import Any

from capjax.core.errors import ConfigError
from capjax.eval import paper_match

EPS = 8 / 255


def _row(threat: str, attack: dict[str, Any], group: str, label: str, paper: float = -1.0):
    return {"threat": threat, "attack": attack, "group": group, "label": label, "paper": paper}


def capgan_attacks(*, cw: bool = True) -> dict[str, tuple[str, dict[str, Any]]]:
    """CAP-GAN's Tables I, III and IV columns: id -> (label, attack spec)."""
    attacks = {
        "clean": ("Clean", {"name": "none"}),
        "fgsm": ("FGSM", {"name": "fgsm", "eps": EPS}),
        "mifgsm20": ("MI-FGSM-20", {"name": "mifgsm", "eps": EPS, "steps": 20}),
        "pgd7": ("PGD-7", {"name": "pgd", "eps": EPS, "step_size": 2 / 255, "steps": 7}),
        "pgd40": ("PGD-40", {"name": "pgd", "eps": EPS, "step_size": 2 / 255, "steps": 40}),
        "cw": ("CW", {"name": "cw", "steps": 100, "binary_search_steps": 4}),
    }
    if not cw:
        attacks.pop("cw")
    return attacks


# The CAP-GAN paper's accuracies (%) per table, defense and column.
CAPGAN_PAPER = {
    "capgan_table1": {  # black-box transfer from a surrogate f'
        "capgan": [85.62, 82.73, 81.96, 84.22, 84.43, 84.78],
        "jpeg": [74.76, 59.53, 54.86, 67.1, 66.03, 71.06],
        "thermometer": [89.96, 83.25, 45.81, 71.17, 30.63, -1],
        "apegan": [84.15, 67.52, 61.54, 73.21, 72.32, 80.3],
        "hgd": [87.68, 82.35, 80.37, 84.55, 84.39, 85.36],
        "adv_training": [78.1, 77.1, 76.9, 77.49, 77.46, 78.36],
    },
    "capgan_table3": {  # white-box: attack f, then purify
        "none": [92.8, 28.81, 0.94, 0.56, 0.01, 0.28],
        "capgan": [85.62, 82.48, 81.45, 84.07, 83.93, 84.9],
        "jpeg": [74.76, 47.37, 34.33, 53.07, 50.7, 68.23],
        "thermometer": [89.96, 66.25, 20.01, 53.82, 10.74, -1],
        "apegan": [84.15, 49.53, 30.76, 54.94, 55.32, 72.07],
        "hgd": [87.68, 81.55, 78.95, 84.65, 84.77, 86.07],
    },
    "capgan_table4": {  # end to end: attack f(T(.)); no CW column
        "capgan": [85.62, 53.11, 19.24, 25.17, 6.58],
        "apegan": [84.15, 18.96, 1.13, 0.58, 0.02],
        "hgd": [87.68, 26.6, 0.63, 0.67, 0.01],
        "adv_training": [78.1, 58.46, 49.54, 48.09, 45.22],
    },
    "capgan_table2": {  # score-based and BPDA-I on the defended model
        "capgan": [79.28, 53.07, 43.6, 78.27],
        "jpeg": [74.9, 16.03, 7.35, 0.59],
        "apegan": [51.33, 33.57, 24.03, 0.09],
        "hgd": [31.26, 23.88, 14.26, 71.78],
    },
}

CAPGAN_TABLE_THREATS = {
    "capgan_table1": "transfer",
    "capgan_table3": "whitebox",
    "capgan_table4": "end_to_end",
}
CAPGAN_TABLE_TITLES = {
    "capgan_table1": "CAP-GAN Table I: black-box transfer (CIFAR-10)",
    "capgan_table2": "CAP-GAN Table II: score-based and BPDA-I (CIFAR-10)",
    "capgan_table3": "CAP-GAN Table III: white-box, attack f then purify (CIFAR-10)",
    "capgan_table4": "CAP-GAN Table IV: end to end (CIFAR-10)",
    "cafd_table1": "CAFD Table 1: attack the classifier, then purify (CIFAR-10)",
    "purifier": "The classifier alone and purified: clean, PGD on the classifier, end to end",
}


def _paper(table: str, defense: str, index: int) -> float:
    values = CAPGAN_PAPER.get(table, {}).get(defense)
    if values is None or index >= len(values) or values[index] < 0:
        return -1.0
    return values[index] / 100


def capgan_table(table: str, defense: str = "capgan", *, cw: bool = True) -> dict[str, dict]:
    """Rows of CAP-GAN's Table I, III or IV (`table` = "capgan_table1" etc.)."""
    threat = CAPGAN_TABLE_THREATS[table]
    rows = {}
    attacks = capgan_attacks(cw=cw and table != "capgan_table4")
    for i, (name, (label, spec)) in enumerate(attacks.items()):
        row_threat = "clean" if name == "clean" else threat
        rows[f"{threat}_{name}"] = _row(row_threat, spec, table, label, _paper(table, defense, i))
    return rows


def capgan_table2(defense: str = "capgan", *, spsa_pairs: int = 1024) -> dict[str, dict]:
    """CAP-GAN's Table II: SPSA, Square with 1 and 5 restarts, BPDA-I-40 (eps 8/255)."""
    table = "capgan_table2"
    specs = [
        (
            "score_based",
            "spsa",
            "SPSA",
            {"name": "spsa", "eps": EPS, "steps": 100, "num_pairs": spsa_pairs},
        ),
        (
            "score_based",
            "square1",
            "Square r=1",
            {"name": "square", "eps": EPS, "steps": 1000, "restarts": 1},
        ),
        (
            "score_based",
            "square5",
            "Square r=5",
            {"name": "square", "eps": EPS, "steps": 1000, "restarts": 5},
        ),
        (
            "bpda",
            "pgd40",
            "BPDA-I-40",
            {"name": "pgd", "eps": EPS, "step_size": 2 / 255, "steps": 40},
        ),
    ]
    return {
        f"{threat}_{name}": _row(threat, spec, table, label, _paper(table, defense, i))
        for i, (threat, name, label, spec) in enumerate(specs)
    }


# The CAFD paper's Table 1, CIFAR-10 error rates (%), columns as CAFD_ATTACKS.
CAFD_PAPER = {
    "none": [],
    "adv_training": [10.34, 18.07, 31.78, 31.77, 30.17, 30.61, 21.16, 20.69],
    "jpeg": [13.32, 16.10, 38.68, 51.41, 50.34, 58.84, 47.76, 47.35],
    "tvm": [9.65, 23.15, 39.46, 68.79, 56.71, 66.46, 30.76, 31.90],
    "apegan": [8.18, 11.75, 34.19, 78.08, 62.31, 76.65, 24.08, 21.40],
    "hgd": [7.64, 9.18, 35.50, 46.87, 31.18, 45.73, 19.96, 18.27],
    "cafd": [8.90, 9.24, 26.57, 12.79, 10.58, 11.80, 18.19, 17.17],
    "cafd_eq6": [8.95, 9.32, 29.85, 15.45, 12.67, 14.27, 19.03, 18.10],
}

CAFD_ATTACKS = [
    ("clean", "None", {"name": "none"}),
    ("ddn", "DDN_N", {"name": "ddn", "steps": 100, "gamma": 0.05}),
    # the authors' TI-DIM class defaults (CAFD ran the authors' code): 40 steps of 0.01
    ("ti_dim", "TI-DIM_N", {"name": "ti_dim", "eps": EPS, "steps": 40, "step_size": 0.01}),
    ("pgd_n", "PGD_N", {"name": "pgd", "eps": EPS, "step_size": 0.01, "steps": 40}),
    (
        "pgd_t",
        "PGD_T",
        {"name": "pgd", "eps": EPS, "step_size": 0.01, "steps": 40, "target": "random"},
    ),
    ("aa", "AA_N", {"name": "autoattack", "eps": EPS}),
    ("sta_n", "STA_N", {"name": "stadv", "steps": 100}),
    ("sta_t", "STA_T", {"name": "stadv", "steps": 100, "target": "random"}),
]


def cafd_table1(defense: str = "cafd") -> dict[str, dict]:
    """Rows of CAFD's Table 1 (CIFAR-10): attacks on the classifier, then purified."""
    errors = CAFD_PAPER.get(defense, [])
    rows = {}
    for i, (name, label, spec) in enumerate(CAFD_ATTACKS):
        paper = 1 - errors[i] / 100 if i < len(errors) else -1.0
        threat = "clean" if name == "clean" else "whitebox"
        rows[f"{threat}_{name}"] = _row(threat, spec, "cafd_table1", label, paper)
    return rows


# The rows `purifier_rows` gives the paper fields of a purifier task's `eval.paper`.
PURIFIER_PAPER_ROWS = {"clean": "clean", "pgd": "whitebox_pgd", "end_to_end": "end_to_end_pgd"}


def purifier_rows(pgd: Any) -> dict[str, dict]:
    """What a trained-purifier task (CAFD, HGD, APE-GAN) evaluates at its end.

    The classifier f alone and f(purify(.)), each clean and under PGD crafted against f
    (the papers' threat model, "gray-box" in CAFD, "white-box" in CAP-GAN), and PGD end to
    end through f(purify(.)) with true gradients.

    Args:
      pgd: {"eps", "step_size", "steps"} of the L-inf PGD (the config's `eval.pgd`).
    """
    spec = {"name": "pgd", "eps": pgd["eps"], "step_size": pgd["step_size"]}
    spec["steps"] = int(pgd["steps"])
    name = f"PGD-{spec['steps']}"
    none = {"name": "none"}
    return {  # plain rows in order (not `numbered`: they go to the suite, not into a config)
        "undefended_clean": _row("undefended", none, "purifier", "clean, no defense"),
        "clean": _row("clean", none, "purifier", "clean, purified"),
        "undefended_pgd": _row("undefended", spec, "purifier", f"{name}, no defense"),
        "whitebox_pgd": _row("whitebox", spec, "purifier", f"{name} on f, then purified"),
        "end_to_end_pgd": _row("end_to_end", spec, "purifier", f"{name} end to end"),
    }


def adaptive(*, eot_samples: int = 0) -> dict[str, dict]:
    """A careful reviewer's attacks: end-to-end AutoAttack and PGD, BPDA (+EOT) PGD-100."""
    pgd100 = {"name": "pgd", "eps": EPS, "step_size": 1 / 255, "steps": 100}
    rows = {
        "clean": _row("clean", {"name": "none"}, "adaptive", "Clean"),
        "end_to_end_pgd100": _row("end_to_end", pgd100, "adaptive", "PGD-100 end to end"),
        "end_to_end_aa": _row(
            "end_to_end", {"name": "autoattack", "eps": EPS}, "adaptive", "AutoAttack end to end"
        ),
        "bpda_pgd100": _row("bpda", pgd100, "adaptive", "BPDA-I PGD-100"),
    }
    if eot_samples:
        rows["bpda_eot_pgd100"] = _row("bpda_eot", pgd100, "adaptive", "BPDA+EOT PGD-100")
    return rows


def eps_sweep(
    threats: tuple[str, ...] = ("whitebox", "end_to_end"),
    eps_255: tuple[int, ...] = (2, 4, 8, 12, 16, 24, 32),
    steps: int = 20,
) -> dict[str, dict]:
    """PGD-`steps` accuracy against eps (in /255) for each threat model, for a plot."""
    rows = {"clean": _row("clean", {"name": "none"}, "eps_sweep", "Clean")}
    for threat in threats:
        for e in eps_255:
            spec = {
                "name": "pgd",
                "eps": e / 255,
                "step_size": max(e / 4, 0.5) / 255,
                "steps": steps,
            }
            rows[f"{threat}_pgd_eps{e}"] = _row(threat, spec, "eps_sweep", f"{threat} {e}/255")
    return rows


def suite(name: str, defense: str, **options) -> dict[str, dict]:
    """Rows of a named suite: capgan_table1..4, cafd_table1, adaptive, eps_sweep."""
    builders = {
        "capgan_table1": lambda: capgan_table("capgan_table1", defense, **options),
        "capgan_table2": lambda: capgan_table2(defense, **options),
        "capgan_table3": lambda: capgan_table("capgan_table3", defense, **options),
        "capgan_table4": lambda: capgan_table("capgan_table4", defense, **options),
        "cafd_table1": lambda: cafd_table1(defense),
        "adaptive": lambda: adaptive(**options),
        "eps_sweep": lambda: eps_sweep(**options),
    }
    if name not in builders:
        raise ConfigError(f"Unknown suite {name!r}; choose one of {sorted(builders)}.")
    return numbered(copy.deepcopy(builders[name]()))


def numbered(rows: dict[str, dict], start: int = 0) -> dict[str, dict]:
    """Adds each row's position as `order` (ConfigDicts sort their keys; tables need order)."""
    for i, row in enumerate(rows.values()):
        row["order"] = start + i
    return rows


def ordered(rows) -> list[str]:
    """Row ids by their `order` field (then by id)."""
    return sorted(rows, key=lambda k: (rows[k].get("order", 0), k))


SUITES = (
    "capgan_table1",
    "capgan_table2",
    "capgan_table3",
    "capgan_table4",
    "cafd_table1",
    "adaptive",
    "eps_sweep",
)


def capgan_default(defense: str = "capgan", *, cw: bool = False) -> dict[str, dict]:
    """What a CAP-GAN run evaluates at its end: Tables I, III, IV and BPDA-I-40."""
    rows = {}
    for table in ("capgan_table1", "capgan_table3", "capgan_table4"):
        rows.update(capgan_table(table, defense, cw=cw))
    rows.update({k: v for k, v in capgan_table2(defense).items() if k.startswith("bpda")})
    return numbered(rows)


# CAP-GAN's Tables V (alpha, T) and VI (loss terms): accuracies (%) of each model under
# black-box transfer (clean, MI-FGSM-20, PGD-7, PGD-40) and BPDA-I-40, by row id. Each entry:
# (the loss settings that define the model, its numbers). The alpha 0.7 / T 10 model with
# every term is Tables I-IV's CAP-GAN.
CAPGAN_ABLATION_ROWS = (
    "transfer_clean",
    "transfer_mifgsm20",
    "transfer_pgd7",
    "transfer_pgd40",
    "bpda_pgd40",
)
_ALL_TERMS = {
    **paper_match.CAPGAN_WEIGHTS,
    "combine": "alpha",
    "use_cam": True,
    "use_sem": True,
    "use_cycle": True,
}
_BEST = {**paper_match.CAPGAN_WEIGHTS, "alpha": 0.7, "temperature": 10.0, "combine": "alpha"}
CAPGAN_ABLATIONS = {
    "Table V, alpha 0.7, T 1": (
        {"alpha": 0.7, "temperature": 1.0, **_ALL_TERMS},
        [81.53, 78.47, 80.25, 80.24, 71.35],
    ),
    "Table V, alpha 0.7, T 5": (
        {"alpha": 0.7, "temperature": 5.0, **_ALL_TERMS},
        [84.81, 80.97, 83.39, 83.29, 79.19],
    ),
    "Table V, alpha 0.5, T 10": (
        {"alpha": 0.5, "temperature": 10.0, **_ALL_TERMS},
        [83.96, 80.94, 82.67, 82.67, 82.71],
    ),
    "Table V, alpha 0.9, T 10": (
        {"alpha": 0.9, "temperature": 10.0, **_ALL_TERMS},
        [85.3, 81.43, 83.76, 83.76, 63.19],
    ),
    "Table VI, L_pixel": (
        {**_BEST, "use_cam": False, "use_sem": False, "use_cycle": True},
        [90.5, 57.03, 77.7, 77.67, 0.34],
    ),
    "Table VI, L_pixel + L_cam": (
        {**_BEST, "use_cam": True, "use_sem": False, "use_cycle": True},
        [88.0, 50.9, 75.13, 75.05, 0.2],
    ),
    "Table VI, L_pixel + L_sem": (
        {**_BEST, "use_cam": False, "use_sem": True, "use_cycle": True},
        [83.53, 78.79, 81.64, 81.75, 38.71],
    ),
    "Table VI, CAP-GAN w/o Cyc": (
        {**_BEST, "use_cam": True, "use_sem": True, "use_cycle": False},
        [82.39, 78.58, 80.52, 80.67, 58.18],
    ),
}


def capgan_model(facts: dict[str, Any]) -> str | None:
    """The CAP-GAN paper's model for a run's loss (`paper_match.run_facts`): "capgan"
    (Tables I-IV), a `CAPGAN_ABLATIONS` name (Table V or VI), or None (no such model)."""
    if not paper_match.mismatches(paper_match.CAPGAN_LOSS, facts):
        return "capgan"
    for name, (setting, _) in CAPGAN_ABLATIONS.items():
        if not paper_match.mismatches(setting, facts):
            return name
    return None


def _reference(suites: str, defense: str) -> dict[str, tuple[str, dict]]:
    """{row id: (suite, reference row)} of the named paper suites for `defense`."""
    reference: dict[str, tuple[str, dict]] = {}
    for name in suites.split("+"):
        if name in SUITES:
            for row_id, row in suite(name, defense).items():
                reference.setdefault(row_id, (name, row))
    return reference


def attach_paper_numbers(
    rows: dict[str, dict], suites: str, defense: str, facts: dict[str, Any]
) -> tuple[dict[str, dict], list[str]]:
    """`rows` with each row's `paper` set where the run is in the paper's setting, and notes.

    A row gets the paper's number only when the dataset, the target, the defense variant and
    the row's attack all match the paper's (`capjax.eval.paper_match`); every other row gets
    -1 ("–" in report.md), and a note says why.

    Args:
      rows: plain row dicts of the suites named in `suites` ("capgan_table1+adaptive").
      defense: a `capjax.tasks.load_defense.DEFENSES` name.
      facts: `paper_match.run_facts` of the defense's run.

    Returns:
      (rows, notes): notes are sentences for report.md.
    """
    notes: list[str] = []
    key = defense
    if defense == "cafd" and facts.get("loss_form") == "eq6":
        key = "cafd_eq6"  # CAFD' (Eq. 6) has its own row in CAFD's Table 1
        notes.append("Paper numbers: CAFD' (Eq. 6), the run's loss form.")
    model = capgan_model(facts) if defense == "capgan" else "paper"
    reference = _reference(suites, key)
    blocked: dict[str, list[str]] = {}
    for row_id, row in rows.items():
        row["paper"] = -1.0
        if row_id not in reference:
            continue
        suite_name, ref = reference[row_id]
        expected = paper_match.suite_setting(suite_name, defense)
        why = paper_match.mismatches(expected, facts)
        if why:
            blocked.setdefault("; ".join(why), []).append(row_id)
        elif dict(row.get("attack") or {}) != dict(ref["attack"]):
            notes.append(
                f"No paper number for `{row_id}`: its attack {dict(row.get('attack') or {})} "
                f"differs from the paper's {ref['attack']}."
            )
        elif model in ("paper", "capgan"):
            row["paper"] = ref["paper"]
        else:
            row["paper"] = _capgan_ablation_number(model, row_id, row)
    for why, ids in blocked.items():
        notes.append(f"No paper numbers for {', '.join(f'`{i}`' for i in ids)}: {why}.")
    if model is None:
        differs = "; ".join(paper_match.mismatches(paper_match.CAPGAN_LOSS, facts))
        notes.append(
            "No CAP-GAN paper numbers: the run's loss settings (weights, alpha, T, terms) are "
            f"not a model of the paper's Tables I-VI (against Tables I-IV: {differs})."
        )
    elif model not in ("paper", "capgan"):
        notes.append(
            f"Paper numbers: CAP-GAN {model}, the run's loss settings (black-box transfer and "
            "BPDA-I-40 only; the paper reports no other column for this model)."
        )
    return rows, notes + paper_match.suite_notes(suites, defense)


def _capgan_ablation_number(model: str | None, row_id: str, row: dict) -> float:
    """A Table V/VI model's number for a row (its clean accuracy for every clean row), or -1."""
    if model is None:
        return -1.0
    values = dict(zip(CAPGAN_ABLATION_ROWS, CAPGAN_ABLATIONS[model][1], strict=True))
    if row.get("threat") == "clean":
        return values["transfer_clean"] / 100
    return values[row_id] / 100 if row_id in values else -1.0
