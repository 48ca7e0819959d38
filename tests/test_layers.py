"""The import graph's rules, read from the source (ast): a blueprint imports shared modules and
core, never another blueprint; core imports neither web nor jobs; no core module is a long one."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE_MODULE_MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: str) -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((ROOT / package).rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """Every module the file imports, at its top or inside a function (`from a import b`: a.b
    when a.b is a module, else a)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _is_blueprint(path: Path) -> bool:
    """A module that makes a Flask Blueprint at its top level."""
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            called = node.value.func
            if isinstance(called, ast.Name) and called.id == "Blueprint":
                return True
    return False


BLUEPRINTS = {name for name, path in _modules("web").items() if _is_blueprint(path)}


def test_the_blueprints_are_found():
    assert {"web.events", "web.orders", "web.pages", "web.admin", "web.openapi"} <= BLUEPRINTS
    assert not {"web", "web.common", "web.mappers", "web.purchase"} & BLUEPRINTS


def test_no_blueprint_imports_another():
    crossing = {
        name: sorted((_imports(_modules("web")[name]) & BLUEPRINTS) - {name})
        for name in sorted(BLUEPRINTS)
    }
    assert {name: found for name, found in crossing.items() if found} == {}


def test_core_imports_neither_web_nor_jobs():
    upward = {
        name: sorted(m for m in _imports(path) if m.split(".")[0] in ("web", "jobs"))
        for name, path in _modules("core").items()
    }
    assert {name: found for name, found in upward.items() if found} == {}


def test_no_core_module_is_over_400_lines():
    long = {
        name: lines
        for name, path in _modules("core").items()
        if (lines := len(path.read_text().splitlines())) > CORE_MODULE_MAX_LINES
    }
    assert long == {}
