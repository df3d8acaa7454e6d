"""The layout rules of docs/architecture.md, checked on the source tree."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "glide_edu"
MAX_LINES = 400


def _library_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if parts[0] in ("book", "checks") and len(parts) > 1 else "core"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return out


@pytest.mark.parametrize("path", _library_files(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_layers_import_downwards_only(path: Path) -> None:
    layer = _layer(path)
    imported = _imported_modules(path)
    if layer == "core":
        bad = sorted(m for m in imported if m.startswith(("glide_edu.book", "glide_edu.checks")))
        assert not bad, f"{path.name} is core code but imports {bad}; move the shared code into the core"
    if layer == "checks":
        bad = sorted(m for m in imported if m.startswith("glide_edu.book"))
        assert not bad, f"checkers import only the core, {path.name} imports {bad}"


def test_book_modules_import_other_chapters_only_for_their_results() -> None:
    for path in sorted((PACKAGE / "book").glob("ch*.py")):
        for module in _imported_modules(path):
            if module.startswith("glide_edu.book.ch") and module.count(".") == 3:
                name = module.rsplit(".", 1)[1]
                assert name.startswith("load_"), f"{path.name} imports {module}: only load_* of other chapters"


@pytest.mark.parametrize("path", _library_files(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_library_files_stay_small(path: Path) -> None:
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)} has {n} lines (> {MAX_LINES}); split it by job"


def test_one_definition_of_each_shared_helper() -> None:
    """Names that once existed twice with different meanings now exist once."""
    defined = Counter()
    for path in _library_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.col_offset == 0:
                defined[node.name] += 1
    for name in ("quantize_8bit", "diffusion_for", "default_cache_dir", "check_guidance_scale", "cache_root",
                 "atomic_write", "sha256_file", "initial_noise"):
        assert defined[name] <= 1, f"{name} is defined {defined[name]} times in the library; keep one"


def test_temporary_files_only_through_fileio() -> None:
    offenders = [p.name for p in _library_files() if p.name != "fileio.py" and "mkstemp(" in p.read_text()]
    assert not offenders, f"{offenders} hand-roll temp-file writes; use glide_edu.fileio.atomic_write"
