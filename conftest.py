"""Run every chapter of the book as a test, straight from its jupytext text file.

Chapters are MyST-markdown notebooks ``chapters/NN_slug.md`` without outputs. nbval only collects
``.ipynb`` files, so this plugin adds a collector for chapters:

* :class:`ChapterFile` is nbval's own ``IPyNbFile`` collector; it only changes how the notebook is
  *loaded* — ``jupytext.read`` instead of ``nbformat.read`` — and nbval does the rest: one kernel per
  chapter, started in the chapter's folder, one test item per code cell (``chapters/NN_slug.md::Cell k``,
  ``k`` counting code cells from 0), cell timeouts, ``# NBVAL_SKIP`` and ``raises-exception`` tags.
* Chapters are never imported as Python modules (they are ``.md``; pytest's Python collector only takes
  ``test_*.py``). An ``.ipynb`` twin of a chapter (from jupytext pairing) is ignored so it is not run twice.
* Before every exercise's ``solution`` cell a probe cell is inserted (:mod:`glide_edu.book.student`): it runs
  the exercise's bare stub and its checker in a copy of the chapter's namespace and requires the checker's
  friendly ``ExerciseError`` — so running the book also proves that no exercise passes unsolved.
* ``GLIDE_EDU_PROFILE`` is set to ``fast`` for the whole run unless the caller already set it; kernels
  inherit the environment, so every chapter runs with the fast profile under ``pytest``.
* After the run, a short summary lists each chapter's execution time (kernel start + all cells).

The options that make plain ``pytest`` run the book (``--nbval-lax --nbval-current-env
--nbval-cell-timeout``, ``testpaths``) live in ``[tool.pytest.ini_options]`` of ``pyproject.toml``.
This file is self-contained so ``tests/test_harness.py`` can copy it into a scratch project with
``pytester.makeconftest`` and test the harness on tiny chapters.
"""

from __future__ import annotations

import fnmatch
import os
from collections import defaultdict
from pathlib import Path
from unittest import mock

import jupytext
import nbformat
import nbval.plugin
import pytest

CHAPTER_DIR = "chapters"
CHAPTER_GLOB = "[0-9][0-9]_*.md"
PROFILE_VAR = "GLIDE_EDU_PROFILE"

# chapter node id -> seconds spent in setup/call/teardown of its cells, and its worst outcome
_chapter_seconds: dict[str, float] = defaultdict(float)
_chapter_failed: dict[str, bool] = defaultdict(bool)


def is_chapter(path: Path) -> bool:
    """True for ``chapters/NN_slug.md``."""
    return path.parent.name == CHAPTER_DIR and fnmatch.fnmatch(path.name, CHAPTER_GLOB)


def pytest_configure(config: pytest.Config) -> None:
    # The kernels nbval starts inherit this process's environment.
    os.environ.setdefault(PROFILE_VAR, "fast")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # A jupytext-paired ``chapters/NN_slug.ipynb`` is the same chapter as its ``.md``: run it once.
    if collection_path.suffix == ".ipynb" and is_chapter(collection_path.with_suffix(".md")):
        if collection_path.with_suffix(".md").exists():
            return True
    return None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if is_chapter(file_path):
        return ChapterFile.from_parent(parent, path=file_path)
    return None


class _NotebookReader:
    """Stands in for the ``nbformat`` module inside ``nbval.plugin`` while one chapter is collected."""

    def __init__(self, notebook: nbformat.NotebookNode):
        self._notebook = notebook

    def read(self, *args, **kwargs) -> nbformat.NotebookNode:
        return self._notebook

    def __getattr__(self, name: str):
        return getattr(nbformat, name)


class ChapterCell(nbval.plugin.IPyNbCell):
    """One code cell of a chapter: nbval's cell item, with a report location pytest prints cleanly."""

    def reportinfo(self):
        # nbval describes a cell as "<file>::Cell k"; pytest's verbose lines then turn the file's "." into
        # "::" ("01_x::md"). "Cell k of <file>" keeps both the cell and the chapter file in failure titles.
        return self.path, None, f"Cell {self.cell_num} of {self.parent.nodeid}"


class ChapterFile(nbval.plugin.IPyNbFile):
    """nbval's notebook collector, reading a jupytext text notebook instead of an ``.ipynb``."""

    def collect(self):
        from glide_edu.book.audit import with_figure_audit
        from glide_edu.book.student import with_stub_probes

        notebook = with_figure_audit(with_stub_probes(jupytext.read(self.path), self.path.name))
        # nbval's collect() loads the notebook with ``nbformat.read(path)``, then makes one item per code
        # cell. Hand it our notebook instead: the patch touches only nbval's module and lasts for the
        # collection of this one file (pytest consumes collect() at once, so a list is fine).
        with mock.patch.object(nbval.plugin, "nbformat", _NotebookReader(notebook)):
            cells = list(super().collect())
        return [
            ChapterCell.from_parent(self, name=c.name, cell_num=c.cell_num, cell=c.cell, options=c.options)
            for c in cells
        ]


def _chapter_of(nodeid: str) -> str | None:
    file_part = nodeid.split("::", 1)[0]
    return file_part if is_chapter(Path(file_part)) else None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    chapter = _chapter_of(report.nodeid)
    if chapter is not None:
        _chapter_seconds[chapter] += report.duration
        _chapter_failed[chapter] |= report.failed


def pytest_terminal_summary(terminalreporter) -> None:
    if not _chapter_seconds:
        return
    terminalreporter.section("chapter execution times")
    width = max(len(name) for name in _chapter_seconds)
    for name, seconds in sorted(_chapter_seconds.items()):
        status = "FAILED" if _chapter_failed[name] else "ok"
        terminalreporter.write_line(f"{name:<{width}}  {seconds:7.1f} s  {status}")
    total = sum(_chapter_seconds.values())
    terminalreporter.write_line(f"{'total':<{width}}  {total:7.1f} s")
