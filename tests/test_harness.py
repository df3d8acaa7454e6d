"""The chapter harness (top-level conftest.py) on tiny throw-away chapters.

Each test builds a scratch project with ``pytester``: the repository's ``conftest.py``, the repository's
``[tool.pytest.ini_options]`` table, and a ``chapters/`` folder; then runs pytest on it in a subprocess
(so real kernels start, as under ``make test``).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

HEADER = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""


def chapter(*cells: str) -> str:
    """A MyST chapter: a title, then one code cell per argument."""
    body = "".join(f"```{{code-cell}} ipython3\n{textwrap.dedent(c).strip()}\n```\n\n" for c in cells)
    return HEADER + "\n# A tiny chapter\n\nSome prose.\n\n" + body


def pytest_ini_table() -> str:
    """The repository's ``[tool.pytest.ini_options]`` table, verbatim."""
    text = (REPO / "pyproject.toml").read_text()
    start = text.index("[tool.pytest.ini_options]")
    end = text.find("\n[", start + 1)
    return text[start:] if end == -1 else text[start : end + 1]


@pytest.fixture
def book(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("GLIDE_EDU_PROFILE", raising=False)  # the harness must set it itself
    pytester.makeconftest((REPO / "conftest.py").read_text())
    (pytester.path / "pyproject.toml").write_text(pytest_ini_table())
    (pytester.path / "chapters").mkdir()
    return pytester


def write(book: pytest.Pytester, name: str, text: str) -> None:
    (book.path / "chapters" / name).write_text(text)


def test_passing_chapter_runs_every_cell_in_its_folder_with_fast_profile(book: pytest.Pytester) -> None:
    write(book, "marker.txt", "here")
    write(
        book,
        "01_pass.md",
        chapter(
            "import os\nfrom pathlib import Path\nx = 2",
            "assert Path('marker.txt').read_text() == 'here'  # kernel cwd is the chapter's folder",
            "assert os.environ['GLIDE_EDU_PROFILE'] == 'fast'",
            "assert x * 3 == 6  # cells share one kernel",
        ),
    )
    result = book.runpytest_subprocess("-v")
    result.assert_outcomes(passed=5)  # the four cells and the figure audit's closing cell
    result.stdout.fnmatch_lines(
        [
            "*chapters/01_pass.md::Cell 3 PASSED*",
            "*chapter execution times*",
            "chapters/01_pass.md * s  ok",
        ]
    )


def test_user_profile_is_kept(book: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIDE_EDU_PROFILE", "full")
    write(book, "01_profile.md", chapter("import os\nassert os.environ['GLIDE_EDU_PROFILE'] == 'full'"))
    book.runpytest_subprocess().assert_outcomes(passed=2)


def test_failing_cell_fails_the_run_and_names_chapter_and_cell(book: pytest.Pytester) -> None:
    write(book, "02_fail.md", chapter("y = 1", "assert 1 == 2", "z = 3"))
    result = book.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ Cell 1 of chapters/02_fail.md _*",
            "*Notebook cell execution failed*",
            "*Cell 1: Cell execution caused an exception*",
            "*assert 1 == 2*",
            "*AssertionError*",
            "*chapter execution times*",
            "chapters/02_fail.md * s  FAILED",
            "FAILED chapters/02_fail.md::Cell 1*",
        ]
    )


def test_only_numbered_chapters_are_collected_and_never_imported(book: pytest.Pytester) -> None:
    write(book, "03_a.md", chapter("raise SystemExit('must not run at collection')", "pass"))
    write(book, "notes.md", chapter("pass"))  # not NN_slug.md: not a chapter
    write(book, "04_b.ipynb", "not json: would break nbval if collected")
    write(book, "04_b.md", chapter("pass"))  # its .ipynb twin is skipped
    (book.path / "README.md").write_text(chapter("pass"))
    result = book.runpytest_subprocess("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    collected = [line for line in result.stdout.lines if "::" in line]
    assert collected == ["chapters/03_a.md::Cell 0", "chapters/03_a.md::Cell 1", "chapters/03_a.md::Cell 2",
                         "chapters/04_b.md::Cell 0", "chapters/04_b.md::Cell 1"]  # each with the audit's last cell


def test_no_chapters_and_no_tests_is_not_success(book: pytest.Pytester) -> None:
    # `make test` relies on this exit status to refuse an empty run.
    assert book.runpytest_subprocess().ret == pytest.ExitCode.NO_TESTS_COLLECTED
