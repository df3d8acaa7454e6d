"""The student edition of the book, made from the one source, and the proof that no exercise passes unsolved.

Every exercise of a chapter has the same three parts (checked here, so a new chapter cannot drift):

1. a markdown cell whose ```` ```python ```` block is the **stub** the reader starts from (``...`` bodies or
   placeholders);
2. right after it, the code cell tagged ``solution`` — the worked answer the book executes;
3. right after that, the **checker** cell (``assert check_…(answer)``), which raises
   :class:`glide_edu.checks.ExerciseError` with a hint when the answer is wrong.

:func:`student_notebook` replaces each solution by its stub (tag ``exercise``); :func:`put_back` restores the
solutions, and the round trip is exact. :func:`with_stub_probes` inserts before every solution a cell that
runs the stub and then the checker in a copy of the chapter's namespace and requires the checker's friendly
``ExerciseError`` — the chapter runner (``conftest.py``) adds these probes, so executing the book under
``pytest`` also proves that every checker refuses the bare stub with a message, not a traceback.

``python -m glide_edu.book student --out DIR`` (``make student``) writes the student edition.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOLUTION_TAG = "solution"
EXERCISE_TAG = "exercise"
PROBE_TAG = "stub-probe"
_STUB = re.compile(r"```python\n(.*?)```", re.S)


@dataclass(frozen=True)
class Exercise:
    """One exercise: the index of its solution cell, the stub, the solution and the checker cell's source."""

    cell: int
    stub: str
    solution: str
    checker: str


def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def exercises(notebook: Any, name: str = "chapter") -> list[Exercise]:
    """The exercises of a notebook, in order; a solution cell without its stub or checker is an error."""
    found = []
    cells = notebook.cells
    for i, cell in enumerate(cells):
        if SOLUTION_TAG not in _tags(cell):
            continue
        where = f"{name}: the solution cell at index {i}"
        if i == 0 or cells[i - 1].cell_type != "markdown":
            raise ValueError(f"{where} must follow the markdown cell that shows its stub in a ```python block")
        stubs = _STUB.findall(cells[i - 1].source)
        if len(stubs) != 1:
            raise ValueError(f"{where}: the markdown before it has {len(stubs)} ```python blocks; give exactly one "
                             "(the stub)")
        if i + 1 >= len(cells) or cells[i + 1].cell_type != "code" or "check" not in cells[i + 1].source:
            raise ValueError(f"{where} must be followed by its checker cell (assert check_…)")
        found.append(Exercise(i, stubs[0].rstrip("\n"), cell.source, cells[i + 1].source))
    return found


def student_notebook(notebook: Any, name: str = "chapter") -> Any:
    """A copy with every solution cell's source replaced by its stub and its tag ``solution`` → ``exercise``."""
    student = copy.deepcopy(notebook)
    for ex in exercises(notebook, name):
        cell = student.cells[ex.cell]
        cell.source = ex.stub
        cell.metadata["tags"] = [EXERCISE_TAG if t == SOLUTION_TAG else t for t in _tags(cell)]
    return student


def put_back(student: Any, original: Any, name: str = "chapter") -> Any:
    """The student edition with the solutions of ``original`` put back (equal to ``original``)."""
    book = copy.deepcopy(student)
    for ex in exercises(original, name):
        cell = book.cells[ex.cell]
        if EXERCISE_TAG not in _tags(cell):
            raise ValueError(f"{name}: cell {ex.cell} of the student edition is not an exercise cell")
        cell.source = ex.solution
        cell.metadata["tags"] = [SOLUTION_TAG if t == EXERCISE_TAG else t for t in _tags(cell)]
    return book


def stub_fails_kindly(stub: str, checker: str, namespace: dict[str, Any]) -> str:
    """Run ``stub`` then ``checker`` in a copy of ``namespace``; return the checker's ExerciseError message.

    Raises AssertionError when the checker passes the bare stub (an exercise that passes unsolved) or fails
    with anything but an ExerciseError (the student would see a traceback instead of a hint)."""
    from glide_edu.checks import ExerciseError

    scratch = dict(namespace)  # the chapter's names; the stub's definitions stay in the copy
    exec(compile(stub, "<stub>", "exec"), scratch)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(checker, "<checker cell>", "exec"), scratch)
    except ExerciseError as err:
        return str(err)
    except Exception as err:  # noqa: BLE001 — any other failure is what this probe exists to catch
        raise AssertionError(f"on the bare stub the checker cell raised {type(err).__name__}: {err} — a student "
                             "would see a traceback, not a hint; make the checker fail kindly") from err
    raise AssertionError("the checker cell passed on the bare stub: this exercise can be passed unsolved")


def with_stub_probes(notebook: Any, name: str = "chapter") -> Any:
    """A copy with a probe cell (tag ``stub-probe``) before every solution: :func:`stub_fails_kindly`."""
    import nbformat

    probed = copy.deepcopy(notebook)
    for ex in reversed(exercises(notebook, name)):
        source = ("from glide_edu.book.student import stub_fails_kindly as _stub_fails_kindly\n"
                  f"print('stub refused:', _stub_fails_kindly({ex.stub!r}, {ex.checker!r}, globals()))")
        probed.cells.insert(ex.cell, nbformat.v4.new_code_cell(source, metadata={"tags": [PROBE_TAG]}))
    return probed


def write_student_edition(chapters: str | Path, out: str | Path) -> list[Path]:
    """Write ``out/NN_slug.md`` for every chapter in ``chapters`` (jupytext MyST, like the sources)."""
    import jupytext

    out = Path(out)
    if out.resolve() == Path(chapters).resolve():
        raise ValueError(f"--out {out} is the chapters folder itself: the student edition would overwrite the "
                         "solutions; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(Path(chapters).glob("[0-9][0-9]_*.md")):
        notebook = jupytext.read(path)
        target = out / path.name
        jupytext.write(student_notebook(notebook, path.name), target, fmt="md:myst")
        written.append(target)
    if not written:
        raise FileNotFoundError(f"no chapters (NN_slug.md) in {chapters}; give the book's chapters folder")
    return written
