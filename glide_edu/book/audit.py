"""Friendly figures, checked while the chapters execute (the test run inserts the audit cells).

Every figure the book shows must have a **title** (the figure's or an axes'), **labelled axes** wherever an
axes draws data with its axis visible (picture grids with the axis off need none), and only
**colour-blind-safe colour maps** (no rainbow maps: ``jet``, ``rainbow``, ``hsv``, …; viridis, cividis, magma,
greys and the diverging ``RdBu`` family are fine).

:func:`install` wraps matplotlib's ``FigureCanvasBase.print_figure`` — the call every inline figure, saved file
and animation frame goes through — so each figure is checked as it is shown; :func:`assert_friendly` (the
chapter's last audit cell) fails with one line per problem. :func:`figure_problems` is the check itself.
"""

from __future__ import annotations

from typing import Any

UNSAFE_CMAPS = frozenset({"jet", "rainbow", "hsv", "gist_rainbow", "nipy_spectral", "gist_ncar", "prism", "flag",
                          "gist_stern", "brg", "turbo"})
AUDIT_TAG = "figure-audit"
PROBLEMS: list[str] = []
_installed = False


def _title(fig: Any) -> str:
    suptitle = getattr(fig, "_suptitle", None)
    if suptitle is not None and suptitle.get_text().strip():
        return suptitle.get_text().strip()
    for ax in fig.axes:
        for loc in ("center", "left", "right"):
            if ax.get_title(loc).strip():
                return ax.get_title(loc).strip()
    return ""


def _label(ax: Any, axis: str) -> str:
    return (ax.get_xlabel() if axis == "x" else ax.get_ylabel()).strip()


def _draws_data(ax: Any) -> bool:
    return bool(ax.lines or ax.collections or ax.images or
                any(p.get_visible() and p.get_label() != "_nolegend_" for p in ax.patches))


def figure_problems(fig: Any) -> list[str]:
    """What is unfriendly about a matplotlib figure (empty when nothing is)."""
    problems = []
    title = _title(fig)
    name = f"figure “{title[:50]}”" if title else "a figure"
    if not title and fig.axes:
        problems.append(f"{name} has no title (fig.suptitle or ax.set_title)")
    for i, ax in enumerate(fig.axes):
        if hasattr(ax, "_colorbar") or not ax.axison or not ax.get_visible() or not _draws_data(ax):
            continue
        if ax.name == "3d":
            continue
        missing = [axis for axis, shared in (("x", ax.get_shared_x_axes()), ("y", ax.get_shared_y_axes()))
                   if not any(_label(other, axis) for other in shared.get_siblings(ax))]  # outer labels count
        if missing and not ax.images:  # a picture shown with its pixel axes needs no "pixels" labels
            problems.append(f"{name}, axes {i} (“{ax.get_title()[:40]}”): no {' and '.join(missing)} label")
        for mappable in [*ax.images, *ax.collections]:
            cmap = getattr(mappable, "get_cmap", lambda: None)()
            if cmap is not None and cmap.name in UNSAFE_CMAPS and mappable.get_array() is not None:
                problems.append(f"{name}, axes {i}: colour map {cmap.name!r} is not colour-blind safe; use "
                                "viridis, cividis or magma (sequential) or RdBu (diverging)")
    return problems


def install() -> None:
    """Check every figure as it is rendered (idempotent); problems collect in :data:`PROBLEMS`."""
    global _installed
    if _installed:
        return
    from matplotlib.backend_bases import FigureCanvasBase

    original = FigureCanvasBase.print_figure

    def print_figure(self, *args: Any, **kwargs: Any):
        for problem in figure_problems(self.figure):
            if problem not in PROBLEMS:
                PROBLEMS.append(problem)
        return original(self, *args, **kwargs)

    FigureCanvasBase.print_figure = print_figure
    _installed = True


def assert_friendly() -> None:
    """Fail with one line per unfriendly figure shown since :func:`install`."""
    if PROBLEMS:
        raise AssertionError("unfriendly figures:\n" + "\n".join(f"- {p}" for p in PROBLEMS))
    print("figure audit: every figure has a title, labelled axes and a colour-blind-safe colour map")


def with_figure_audit(notebook: Any) -> Any:
    """A copy of a chapter notebook that installs the audit at the top of its first code cell (so the cells keep
    their numbers) and asserts it in an appended last cell tagged ``figure-audit``; the test run executes it, the
    book's sources never hold it."""
    import copy

    import nbformat

    audited = copy.deepcopy(notebook)
    first = next((c for c in audited.cells if c.cell_type == "code"), None)
    if first is None:
        return audited  # no code, no figures
    first.source = "from glide_edu.book import audit as _audit\n_audit.install()\n" + first.source
    audited.cells.append(nbformat.v4.new_code_cell("_audit.assert_friendly()", metadata={"tags": [AUDIT_TAG]}))
    return audited
