"""The student edition (``make student``): made from the chapters, exact round trip, stubs refused kindly.

That every checker refuses its bare stub *inside the executed chapter* is proved by the probe cells the
chapter runner inserts (conftest.py → ``with_stub_probes``); here the machinery itself is tested.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

from glide_edu.book.__main__ import main as book_main
from glide_edu.book.student import (
    EXERCISE_TAG,
    PROBE_TAG,
    SOLUTION_TAG,
    exercises,
    put_back,
    stub_fails_kindly,
    student_notebook,
    with_stub_probes,
)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.md"))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_chapter_has_checked_exercises_and_a_stub_for_each(path: Path) -> None:
    found = exercises(jupytext.read(path), path.name)
    assert len(found) >= 2, f"{path.name}: the book's template asks for at least two checked exercises"
    for ex in found:
        assert ex.stub.strip() and ex.stub.strip() != ex.solution.strip()
        assert "..." in ex.stub or "None" in ex.stub, f"{path.name}: a stub leaves placeholders, not an answer"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_student_edition_round_trips_to_the_chapter_exactly(path: Path, tmp_path: Path) -> None:
    original = jupytext.read(path)
    student = student_notebook(original, path.name)
    tagged = [c for c in student.cells if EXERCISE_TAG in c.metadata.get("tags", [])]
    assert len(tagged) == len(exercises(original)) and not any(
        SOLUTION_TAG in c.metadata.get("tags", []) for c in student.cells)
    for ex in exercises(original):  # no solution text reaches the student
        assert student.cells[ex.cell].source == ex.stub
    target = tmp_path / path.name
    jupytext.write(student, target, fmt="md:myst")
    restored = put_back(jupytext.read(target), original, path.name)
    assert jupytext.writes(restored, fmt="md:myst") == path.read_text(encoding="utf-8")


def _chapter(*cells: nbformat.NotebookNode) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=list(cells))


STUB_MD = "Write `double`.\n\n```python\ndef double(x):\n    ...  # return 2x\n```\n"


def _solution(source: str = "def double(x):\n    return 2 * x") -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(source, metadata={"tags": [SOLUTION_TAG]})


CHECKER = ("from glide_edu.checks import ExerciseError\n"
           "if double(3) != 6:\n    raise ExerciseError('double: got the wrong value; return 2 * x')\n"
           "assert True  # check_double")


def test_malformed_exercises_are_named() -> None:
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    with pytest.raises(ValueError, match="follow the markdown cell"):
        exercises(_chapter(code("x = 1"), _solution(), code(CHECKER)), "c.md")
    with pytest.raises(ValueError, match="has 0 ```python blocks"):
        exercises(_chapter(md("no stub here"), _solution(), code(CHECKER)), "c.md")
    with pytest.raises(ValueError, match="followed by its checker"):
        exercises(_chapter(md(STUB_MD), _solution(), code("print(double(2))")), "c.md")


def test_stub_probe_accepts_a_kind_refusal_and_rejects_the_rest() -> None:
    stub = "def double(x):\n    ...  # return 2x"
    assert "wrong value" in stub_fails_kindly(stub, CHECKER, {})
    with pytest.raises(AssertionError, match="passed on the bare stub"):  # a checker that cannot fail
        stub_fails_kindly(stub, "assert True  # check_nothing", {})
    with pytest.raises(AssertionError, match="raised TypeError"):  # a traceback instead of a hint
        stub_fails_kindly(stub, "double(3) + 1  # check_double", {})
    namespace = {"double": lambda x: 2 * x}
    stub_fails_kindly(stub, CHECKER, namespace)
    assert namespace["double"](3) == 6  # the chapter's own names are untouched by the probe


def test_probes_run_before_each_solution_and_refuse_the_stub() -> None:
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    chapter = _chapter(md(STUB_MD), _solution(), code(CHECKER))
    probed = with_stub_probes(chapter)
    assert [c.metadata.get("tags") for c in probed.cells] == [None, [PROBE_TAG], [SOLUTION_TAG], None]
    namespace: dict = {}
    for cell in probed.cells:
        if cell.cell_type == "code":
            exec(cell.source, namespace)  # the probe prints the refusal, then the solution passes
    assert namespace["double"](4) == 8


def test_make_student_writes_every_chapter_and_never_over_the_sources(tmp_path: Path, capsys) -> None:
    assert book_main(["student", "--out", str(tmp_path / "student"), "--chapters", str(ROOT / "chapters")]) == 0
    assert sorted(p.name for p in (tmp_path / "student").iterdir()) == [p.name for p in CHAPTERS]
    with pytest.raises(SystemExit):
        book_main(["student", "--out", str(ROOT / "chapters"), "--chapters", str(ROOT / "chapters")])
    assert "overwrite the solutions" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        book_main(["student", "--out", str(tmp_path / "x"), "--chapters", str(tmp_path)])


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapters_are_stored_as_jupytext_writes_them(path: Path) -> None:
    """The stored text is jupytext's own rendering of the notebook, so a save from JupyterLab (which writes
    through jupytext) gives the same bytes: opening a chapter must not modify it."""
    assert jupytext.writes(jupytext.read(path), fmt="md:myst") == path.read_text(encoding="utf-8"), (
        f"{path.name} is not in jupytext's canonical form; rewrite it with jupytext (read, then writes 'md:myst')")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapters_do_not_change_under_another_jupytext_release(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """jupytext stamps its own version into the header unless the notebook filters it out; a chapter that keeps
    the stamp is rewritten (a spurious diff) by every reader whose jupytext is newer than the writer's."""
    import jupytext.header

    monkeypatch.setattr(jupytext.header, "__version__", "99.0.0")
    assert jupytext.writes(jupytext.read(path), fmt="md:myst") == path.read_text(encoding="utf-8"), (
        f"{path.name} carries jupytext's version in its header; add "
        "'notebook_metadata_filter: -jupytext.text_representation.jupytext_version' under its 'jupytext:' key")
