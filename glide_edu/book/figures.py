"""Slides-ready figures: each chapter's key figure as PNG and SVG, by one command.

Every chapter tags one code cell ``key-figure`` (the picture an instructor would put on a slide).
``python -m glide_edu.book figures --out DIR`` (``make figures``) executes each chapter (in its folder, in the
profile given, default fast) up to the tagged cell, with the inline backend set to emit PNG *and* SVG, and
writes the tagged cell's figure as ``DIR/NN_slug.png`` and ``DIR/NN_slug.svg``.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

KEY_FIGURE_TAG = "key-figure"
FORMATS_CELL = "%config InlineBackend.figure_formats = ['png', 'svg']"


def key_figure_cell(notebook: Any, name: str = "chapter") -> int:
    """Index of the one cell tagged ``key-figure`` (an error names the chapter when there is none or several)."""
    tagged = [i for i, c in enumerate(notebook.cells) if KEY_FIGURE_TAG in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"{name}: {len(tagged)} cells are tagged {KEY_FIGURE_TAG!r}; tag exactly one code cell "
                         "(the chapter's slide figure)")
    if notebook.cells[tagged[0]].cell_type != "code":
        raise ValueError(f"{name}: the {KEY_FIGURE_TAG!r} cell must be a code cell that draws a figure")
    return tagged[0]


def export_key_figure(path: str | Path, out: str | Path, profile: str = "fast", timeout: int = 600) -> list[Path]:
    """Execute the chapter at ``path``; write its key figure as ``out/<stem>.png`` and ``.svg``; return them."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    path, out = Path(path), Path(out)
    notebook = jupytext.read(path)
    index = key_figure_cell(notebook, path.name) + 1  # after the inserted formats cell
    notebook.cells.insert(0, nbformat.v4.new_code_cell(FORMATS_CELL))
    del notebook.cells[index + 1:]  # the cells up to the figure are all it needs (and no widget waits for a view)
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute(
        env={**os.environ, "GLIDE_EDU_PROFILE": profile})  # the kernel's environment; ours stays as it is
    images = [o for o in notebook.cells[index].get("outputs", []) if "image/png" in o.get("data", {})]
    if not images:
        raise ValueError(f"{path.name}: the {KEY_FIGURE_TAG!r} cell drew no figure")
    data = images[-1]["data"]  # the cell's last figure
    out.mkdir(parents=True, exist_ok=True)
    png, svg = out / f"{path.stem}.png", out / f"{path.stem}.svg"
    png.write_bytes(base64.b64decode(data["image/png"]))
    written = [png]
    if "image/svg+xml" in data:
        svg.write_text(data["image/svg+xml"], encoding="utf-8")
        written.append(svg)
    return written


def export_all(chapters: str | Path, out: str | Path, profile: str = "fast", only: list[str] | None = None
               ) -> list[Path]:
    """:func:`export_key_figure` for every chapter (or those whose number is in ``only``), with progress."""
    paths = sorted(Path(chapters).glob("[0-9][0-9]_*.md"))
    if only:
        paths = [p for p in paths if p.name[:2] in only]
    if not paths:
        raise FileNotFoundError(f"no chapters (NN_slug.md) in {chapters}" + (f" numbered {only}" if only else ""))
    written = []
    for p in paths:
        start = time.perf_counter()
        files = export_key_figure(p, out, profile)
        print(f"{p.name}: {', '.join(f.name for f in files)} ({time.perf_counter() - start:.0f} s)", flush=True)
        written += files
    return written
