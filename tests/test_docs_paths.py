"""Every module the documentation cites exists: `diagnose/...py` and `diagnose/.../` paths, `path.py::NAME`
references, and dotted names `diagnose.x.y` (a module or package, or an attribute of the longest module
prefix that exists: `diagnose.engine.interventions.markdown_table`). Reads docs/*.md and README.md only;
nothing is imported (the check parses the modules' source)."""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
# a path is cited as `diagnose/a/b.py` (optionally `::NAME`) or `diagnose/a/`; not `tests/diagnose/...`
PATH = re.compile(r"(?<![\w./-])(diagnose/(?:[\w.]+/)*(?:[\w.]+\.py|))(?:::(\w+))?")
DOTTED = re.compile(r"(?<![\w./-])diagnose(?:\.[A-Za-z_]\w*)+")
PUBLIC = {"diagnose.watch"}  # the public function (lazy attribute of the package), also a word in prose


def _module_file(dotted: str) -> Path | None:
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=None)
def _defined_names(path: Path) -> frozenset[str]:
    """Top-level names a module defines or imports, and the strings in its `__all__`."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value is not None:
                names.update(e.value for e in getattr(node.value, "elts", []) if isinstance(e, ast.Constant))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(names)


def stale_citations(text: str) -> list[str]:
    """The citations in `text` that name no existing module, package or attribute, each with why."""
    stale = []
    for m in PATH.finditer(text):
        path, attr = ROOT / m.group(1), m.group(2)
        if not (path.is_dir() if m.group(1).endswith("/") else path.is_file()):
            stale.append(f"{m.group(0)}: no such {'folder' if m.group(1).endswith('/') else 'file'}")
        elif attr and attr not in _defined_names(path):
            stale.append(f"{m.group(0)}: {m.group(1)} defines no {attr}")
    for m in DOTTED.finditer(text):
        name = m.group(0)
        if name in PUBLIC:
            continue
        parts = name.split(".")
        # the longest prefix that is a module or package; what follows it may be one attribute of it
        depth = next(i for i in range(len(parts), 0, -1) if _module_file(".".join(parts[:i])))
        rest = parts[depth:]
        if len(rest) > 1:
            stale.append(f"{name}: no module {'.'.join(parts[:depth + 1])}")
        elif rest and rest[0] not in _defined_names(_module_file(".".join(parts[:depth]))):
            stale.append(f"{name}: {'.'.join(parts[:depth])} defines no {rest[0]}")
    return stale


def test_the_checker_tells_stale_from_current():
    old = "`diagnose/rules/causes.py`, `diagnose/offline/logs/`, `diagnose.rules.causes`, `diagnose.runs`"
    assert len(stale_citations(old)) == 4
    assert stale_citations("`diagnose/engine/interventions/__init__.py::NOPE`")
    current = ("`diagnose/core/rules/causes.py`, `diagnose/core/logs/`, `diagnose.core.rules.causes`, "
               "`diagnose.engine.interventions.markdown_table`, `diagnose/lab/runs.py::SettleCallback`, "
               "`diagnose.watch`, `diagnose.DiagnoseAlarm`, tag `diagnose/<probe>/<metric>`, `tests/diagnose/x.py`.")
    assert stale_citations(current) == []


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_cited_module_exists(page: Path):
    stale = stale_citations(page.read_text(encoding="utf-8"))
    assert not stale, "\n".join(stale)
