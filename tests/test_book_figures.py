"""make figures: one key figure per chapter, exported as PNG and SVG from the executed chapter."""

from __future__ import annotations

import os
from pathlib import Path

import jupytext
import nbformat
import pytest

from glide_edu.book.figures import KEY_FIGURE_TAG, export_key_figure, key_figure_cell

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.md"))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_chapter_tags_one_figure_cell(path: Path) -> None:
    nb = jupytext.read(path)
    cell = nb.cells[key_figure_cell(nb, path.name)]
    assert "plt.show()" in cell.source or "show_images(" in cell.source, f"{path.name}: the key cell draws nothing"


def _chapter(tmp_path: Path, *cells: nbformat.NotebookNode) -> Path:
    nb = nbformat.v4.new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "99_tiny.md"
    jupytext.write(nb, path, fmt="md:myst")
    return path


def test_the_key_figure_is_written_as_png_and_svg(tmp_path: Path) -> None:
    draw = ("import matplotlib.pyplot as plt\nimport os\nplt.plot([0, 1], [0, 1])\n"
            "plt.title(os.environ['GLIDE_EDU_PROFILE'])\nplt.show()\n"
            "open('profile_seen.txt', 'w').write(os.environ['GLIDE_EDU_PROFILE'])")
    path = _chapter(tmp_path, nbformat.v4.new_code_cell("x = 1"),
                    nbformat.v4.new_code_cell(draw, metadata={"tags": [KEY_FIGURE_TAG]}))
    before = os.environ.get("GLIDE_EDU_PROFILE")
    png, svg = export_key_figure(path, tmp_path / "out", profile="full")
    assert (tmp_path / "profile_seen.txt").read_text() == "full"  # the kernel ran the asked profile
    assert os.environ.get("GLIDE_EDU_PROFILE") == before  # and the caller's environment is untouched
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    text = svg.read_text()
    assert text.lstrip().startswith(("<?xml", "<svg")) and "</svg>" in text


def test_missing_or_empty_key_figures_are_named(tmp_path: Path) -> None:
    path = _chapter(tmp_path, nbformat.v4.new_code_cell("x = 1"))
    with pytest.raises(ValueError, match="0 cells are tagged 'key-figure'"):
        export_key_figure(path, tmp_path / "out")
    path = _chapter(tmp_path, nbformat.v4.new_code_cell("x = 1", metadata={"tags": [KEY_FIGURE_TAG]}))
    with pytest.raises(ValueError, match="drew no figure"):
        export_key_figure(path, tmp_path / "out")
