"""capjax's modules import downwards only: main -> tasks -> train / eval -> defenses ->
attacks / models -> data -> core.

Every import of a capjax module, at the top of a file or inside a function, is read from the
source and checked against the layer order below. The only arrows allowed across train and
eval come from the task runners still in `capjax/train/` (`TASK_RUNNERS_IN_TRAIN`), which
issue #18 moves to `capjax/tasks/`; the set may only shrink: a new wrong-way import fails,
and so does an entry that is no longer needed.
"""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Package (or top-level module) -> layer; a module may import its own layer and below.
LAYERS = {
    "capjax.core": 0,
    "capjax.cpu_devices": 0,
    "capjax.run_once": 0,
    "capjax.data": 1,
    "capjax.attacks": 2,
    "capjax.models": 2,
    "capjax.defenses": 3,
    "capjax.train": 4,
    "capjax.eval": 4,
    "capjax.config_defaults": 5,
    "capjax.bench": 6,
    "capjax.main": 6,
}

# Same-layer arrows that must not exist either: training and evaluation stay independent,
# and only task runners (which train, then evaluate) use both.
FORBIDDEN_SIDEWAYS = {("capjax.eval", "capjax.train"), ("capjax.train", "capjax.eval")}

# Task runners that still live in train/ and evaluate through eval. Issue #18 moves them to
# capjax/tasks/, a layer above both; the set may only shrink.
TASK_RUNNERS_IN_TRAIN = {
    "capjax.train.cafd",
    "capjax.train.capgan",
    "capjax.train.classifier",
    "capjax.train.demo",
    "capjax.train.eval_task",
    "capjax.train.load_defense",
    "capjax.train.purifier_task",
}


def layer_of(module: str) -> tuple[str, int]:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it to LAYERS.")


def module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
    return rel.removesuffix(".__init__")


def capjax_imports(path: str) -> set[str]:
    """The capjax modules `path` imports (`from capjax import x` counts as capjax.x)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("capjax")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "capjax":
                found |= {f"capjax.{a.name}" for a in node.names}
            elif node.module.startswith("capjax."):
                found.add(node.module)
    return found - {"capjax"}


def arrows() -> list[tuple[str, str]]:
    out = []
    for folder, _, files in os.walk(os.path.join(ROOT, "capjax")):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                out += [(module_name(path), imported) for imported in capjax_imports(path)]
    return sorted(out)


def wrong_way() -> set[tuple[str, str]]:
    bad = set()
    for importer, imported in arrows():
        (src_pkg, src), (dst_pkg, dst) = layer_of(importer), layer_of(imported)
        runner = importer in TASK_RUNNERS_IN_TRAIN and dst_pkg == "capjax.eval"
        if dst > src or ((src_pkg, dst_pkg) in FORBIDDEN_SIDEWAYS and not runner):
            bad.add((importer, imported))
    return bad


def test_every_module_is_in_a_layer():
    for importer, imported in arrows():
        layer_of(importer), layer_of(imported)


def test_no_import_points_up_the_layers_or_across_train_and_eval():
    bad = sorted(wrong_way())
    assert not bad, f"imports against the layer order (see the module docstring): {bad}"


def test_the_task_runners_left_in_train_still_need_the_exception():
    evaluating = {a for a, b in arrows() if b.startswith("capjax.eval")}
    done = TASK_RUNNERS_IN_TRAIN - evaluating
    assert not done, f"no longer import eval, so remove them from TASK_RUNNERS_IN_TRAIN: {done}"


def test_the_bottom_layer_imports_no_other_capjax_package():
    for importer, imported in arrows():
        if layer_of(importer)[1] == 0:
            assert layer_of(imported)[1] == 0, (importer, imported)
