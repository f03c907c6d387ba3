"""The tree's layers: imports flow downward only (docs/architecture.md, "Layers").

Every import counts, at module level, inside a function or under TYPE_CHECKING: a
module that needs a higher layer's name is in the wrong layer, however it imports it.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Bottom to top. A module may import its own group and any group below it; the
#: stores (Redis state, the database, the providers) may not import each other, the
#: top's groups (the CLI and other commands, the web process, the schedules) may.
LAYERS: list[tuple[str, list[str]]] = [
    ("base", ["switchyard.base"]),
    ("brokers", ["switchyard.brokers"]),
    ("stores", ["state", "store", "integrations"]),
    ("hooks", ["middleware"]),
    ("runtime", ["switchyard.runtime"]),
    ("logic", ["processing"]),
    ("families", ["actors"]),
    ("ingress", ["switchyard.ingress"]),
    ("top", ["switchyard", "web", "schedules"]),
]
OURS = {"switchyard", "state", "store", "integrations", "middleware", "processing",
        "actors", "web", "schedules"}


def group_of(module: str) -> tuple[int, str]:
    """(layer index, group) of a dotted module name: its longest matching group."""
    best: tuple[int, str] | None = None
    for index, (_, groups) in enumerate(LAYERS):
        for group in groups:
            if (module == group or module.startswith(group + ".")) and (
                    best is None or len(group) > len(best[1])):
                best = (index, group)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and the page")
    return best


def source_modules() -> dict[str, Path]:
    found = {}
    for top in sorted(OURS - {"schedules"}):
        for path in (ROOT / top).rglob("*.py"):
            if "migrations" in path.parts:
                continue  # Alembic's scripts: loaded by Alembic, importing only the models
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    found["schedules"] = ROOT / "schedules.py"
    return found


def imported(path: Path, module: str) -> list[tuple[int, str]]:
    """Every module of ours that `path` imports (line, dotted name), wherever it does."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.append((node.lineno, base))
            # `from switchyard import boot`: the module named is switchyard.boot
            names += [(node.lineno, f"{base}.{alias.name}") for alias in node.names
                      if f"{base}.{alias.name}" in MODULES]
    return [(line, name) for line, name in names if name.split(".")[0] in OURS]


MODULES = source_modules()


def upward_imports() -> list[str]:
    found = []
    for module, path in sorted(MODULES.items()):
        layer, group = group_of(module)
        for line, name in imported(path, module):
            their_layer, their_group = group_of(name)
            apart = their_layer == layer and their_group != group and LAYERS[layer][0] != "top"
            if their_layer > layer or apart:
                found.append(f"{path.relative_to(ROOT)}:{line} ({LAYERS[layer][0]}) imports "
                             f"{name} ({LAYERS[their_layer][0]})")
    return found


def test_no_import_runs_upward_or_across_a_layer() -> None:
    assert MODULES, "no modules found"
    assert upward_imports() == []


def test_the_reader_finds_an_upward_import() -> None:
    """The check itself: a base module importing the top is caught."""
    layer, _ = group_of("switchyard.base.settings")
    top, _ = group_of("switchyard.boot")
    assert (layer, top) == (0, len(LAYERS) - 1)
    assert group_of("switchyard.ingress.bridge")[1] == "switchyard.ingress"
    assert group_of("switchyard.cli")[1] == "switchyard"


@pytest.mark.parametrize("module, absent", [
    ("state", ["pika", "switchyard.brokers", "sqlalchemy", "boto3"]),
    ("switchyard.base.sealing", ["pika", "switchyard.brokers"]),
    ("middleware.idempotency", ["pika", "sqlalchemy"]),
])
def test_a_lower_layer_loads_nothing_it_does_not_use(module: str, absent: list[str]) -> None:
    """Importing a Redis store does not load the RabbitMQ stack (nor the database)."""
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print(' '.join(sys.modules))"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert module in loaded
    assert [name for name in absent if name in loaded] == []


def test_every_module_is_on_the_architecture_page() -> None:
    """A newcomer finds each module where the page says its concern lives."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    missing = [str(path.relative_to(ROOT)) for module, path in MODULES.items()
               if path.name != "__init__.py" and module.startswith(("switchyard", "middleware"))
               and str(path.relative_to(ROOT)) not in page]
    assert missing == []


def test_every_path_the_architecture_page_names_exists() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"[\w./<>-]+\.py\b", page))
    assert named, "the page names no module"
    assert sorted(name for name in named if "<" not in name and not (ROOT / name).exists()) == []
