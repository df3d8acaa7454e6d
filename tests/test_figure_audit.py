"""The figure audit the test run wraps around every chapter: titles, axis labels, colour-blind-safe maps."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from glide_edu.book import audit  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_a_friendly_plot_has_no_problems() -> None:
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    ax.set(xlabel="step", ylabel="loss", title="training")
    im_fig, (a, b) = plt.subplots(1, 2)
    a.imshow(np.zeros((4, 4)), cmap="viridis")
    a.set_axis_off()
    mappable = b.imshow(np.zeros((4, 4)), cmap="RdBu")  # a picture with pixel axes needs no labels
    im_fig.colorbar(mappable)  # colour bars are not data axes
    im_fig.suptitle("pictures")
    assert audit.figure_problems(fig) == [] and audit.figure_problems(im_fig) == []


def test_missing_title_labels_and_rainbow_maps_are_named() -> None:
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    ax.set_xlabel("s")
    problems = audit.figure_problems(fig)
    assert any("no title" in p for p in problems) and any("no y label" in p for p in problems)
    fig2, ax2 = plt.subplots()
    ax2.scatter([0, 1], [0, 1], c=[0.0, 1.0], cmap="jet")
    ax2.set(xlabel="x", ylabel="y", title="points")
    assert any("'jet' is not colour-blind safe" in p for p in audit.figure_problems(fig2))


def test_installed_audit_sees_rendered_figures_and_asserts(monkeypatch) -> None:
    monkeypatch.setattr(audit, "PROBLEMS", [])
    audit.install()
    audit.install()  # idempotent
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fig.savefig(io.BytesIO(), format="png")  # what the inline backend does when a cell shows a figure
    assert len(audit.PROBLEMS) == 2
    with pytest.raises(AssertionError, match="unfriendly figures:\n- a figure has no title"):
        audit.assert_friendly()
    audit.PROBLEMS.clear()
    audit.assert_friendly()


def test_chapters_get_the_audit_installed_first_and_asserted_last() -> None:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("x = 1")])
    audited = audit.with_figure_audit(nb)
    assert len(audited.cells) == 3 and audited.cells[-1].metadata["tags"] == [audit.AUDIT_TAG]
    assert audited.cells[1].source.startswith("from glide_edu.book import audit") and "x = 1" in audited.cells[1].source
    assert "assert_friendly" in audited.cells[-1].source
    assert nb.cells[1].source == "x = 1" and len(nb.cells) == 2  # the chapter itself is untouched
    prose = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("only prose")])
    assert len(audit.with_figure_audit(prose).cells) == 1
