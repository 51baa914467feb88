"""The library packages never depend on the test and demo doubles, and ``curation`` never imports Ray."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("curation", "pipelines", "training", "inference", "data_cards")
# `filmweaver demo` curates a synthetic film: the one library module allowed to reach for the doubles
DOUBLES_ALLOWED = {"pipelines/commands.py"}


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def library_files():
    for package in LIBRARY:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_library_does_not_import_the_test_doubles():
    offenders = [
        str(p.relative_to(ROOT))
        for p in library_files()
        if str(p.relative_to(ROOT)) not in DOUBLES_ALLOWED
        and any(m.split(".")[0] == "filmweaver_testing" for m in imported_modules(p))
    ]
    assert offenders == []


def test_curation_never_imports_ray():
    offenders = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "curation").rglob("*.py"))
        if any(m.split(".")[0] == "ray" for m in imported_modules(p))
    ]
    assert offenders == []
