"""The layer rule of the README's module map: each module imports only from its own row or the rows above it.

The map is read from the README itself, so the table and the code cannot drift apart: a new module must be given a
row, and an import that reaches down a layer (e.g. a foundation importing a stage) fails here, lazy imports
inside functions included.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "reid_augment"


def module_map() -> dict[str, int]:
    """Module (dotted, below the package) -> its row in the README's table, top row 0. A sub-package written
    `name/` covers its modules."""
    text = (ROOT / "README.md").read_text()
    table = text.split("| layer | modules |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    layers = {}
    for number, row in enumerate(rows):
        modules = row.split("|")[2]
        for name in re.findall(r"`([a-z_]+/?)`", modules):
            layers[name.rstrip("/")] = number
    return layers


def modules() -> list[str]:
    return sorted(".".join(p.relative_to(PACKAGE).with_suffix("").parts) for p in PACKAGE.rglob("*.py")
                  if p.name != "__init__.py" or p.parent != PACKAGE)


def layer_of(module: str, layers: dict[str, int]) -> int | None:
    parts = module.removesuffix(".__init__").split(".")
    return layers.get(parts[0]) if len(parts) == 1 or parts[0] not in layers else layers[parts[0]]


def imports(module: str) -> set[str]:
    """The package modules `module` imports, anywhere in it (relative imports, resolved)."""
    path = PACKAGE / Path(*module.split(".")).with_suffix(".py")
    package = module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            if node.module:
                found.add(".".join([*base, *node.module.split(".")]))
            else:  # from . import x
                found.update(".".join([*base, alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reid_augment."):
            found.add(node.module.removeprefix("reid_augment."))
    return {name for name in found if name and name != "__init__"}


def test_every_module_has_a_row_in_the_readme_map():
    layers = module_map()
    missing = [m for m in modules() if layer_of(m, layers) is None]
    assert not missing, f"modules without a row in the README's module map: {missing}"


def violations(layers: dict[str, int], graph: dict[str, set[str]]) -> list[str]:
    """Imports that reach a row below the importer's."""
    wrong = []
    for module, targets in sorted(graph.items()):
        own = layer_of(module, layers)
        for target in sorted(targets):
            theirs = layer_of(target, layers)
            if theirs is not None and own is not None and theirs > own:
                wrong.append(f"{module} (row {own}) imports {target} (row {theirs})")
    return wrong


def test_each_module_imports_only_from_its_row_or_above():
    wrong = violations(module_map(), {m: imports(m) for m in modules()})
    assert not wrong, "\n".join(wrong)


def test_the_rule_catches_an_import_from_below():
    layers = {"errors": 0, "keypoints": 0, "train": 2, "reid": 3}
    assert violations(layers, {"errors": {"train"}, "train": {"errors"}}) == ["errors (row 0) imports train (row 2)"]
    assert violations(layers, {"reid.gate": {"reid.model", "errors"}}) == []  # A sub-package's row is its folder's.
    assert "keypoints" in imports("networks") or "config" in imports("networks")  # Real imports are read.
