"""capjax's modules import downwards only: main -> tasks -> train / eval -> defenses ->
attacks / models -> data -> core.

Every import of a capjax module, at the top of a file or inside a function, is read from the
source and checked against the layer order below. train and eval sit side by side and never
import each other: only a task runner (`capjax/tasks/`), which trains and then evaluates,
uses both.
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
    "capjax.metrics": 2,
    "capjax.attack_specs": 2,
    "capjax.defenses": 3,
    "capjax.train": 4,
    "capjax.eval": 4,
    "capjax.tasks": 5,
    "capjax.config_defaults": 5,
    "capjax.bench": 6,
    "capjax.main": 6,
}

# Same-layer arrows that must not exist either: training and evaluation stay independent,
# and only task runners (which train, then evaluate) use both.
FORBIDDEN_SIDEWAYS = {("capjax.eval", "capjax.train"), ("capjax.train", "capjax.eval")}


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
        if dst > src or (src_pkg, dst_pkg) in FORBIDDEN_SIDEWAYS:
            bad.add((importer, imported))
    return bad


def test_every_module_is_in_a_layer():
    for importer, imported in arrows():
        layer_of(importer), layer_of(imported)


def test_no_import_points_up_the_layers_or_across_train_and_eval():
    bad = sorted(wrong_way())
    assert not bad, f"imports against the layer order (see the module docstring): {bad}"


def test_the_bottom_layer_imports_no_other_capjax_package():
    for importer, imported in arrows():
        if layer_of(importer)[1] == 0:
            assert layer_of(imported)[1] == 0, (importer, imported)


def test_no_two_modules_share_a_file_name():
    """A name says which module it is: no `capgan.py` in four packages, no two `registry.py`."""
    seen: dict[str, str] = {}
    clashes = []
    for folder, _, files in os.walk(os.path.join(ROOT, "capjax")):
        for name in files:
            if not name.endswith(".py") or name == "__init__.py":
                continue
            path = os.path.relpath(os.path.join(folder, name), ROOT)
            if name in seen:
                clashes.append((seen[name], path))
            seen.setdefault(name, path)
    assert not clashes, f"modules sharing a file name: {clashes}"
