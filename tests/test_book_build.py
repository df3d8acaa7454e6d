"""The book's build logic (tools/bookbuild.py) without building it: the table of contents by parts, the API pages,
the staging of sources, the folding of solutions and the removal of CDN links. Fast; needs no Sphinx (the
doctree tests need docutils, which the ``book`` extra brings, and are skipped without it)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bookbuild", ROOT / "tools" / "bookbuild.py")
bookbuild = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bookbuild)


def _toctrees(markdown: str) -> dict[str, list[str]]:
    """caption → documents of every ```{toctree} block."""
    trees = {}
    for block in re.findall(r"```\{toctree\}\n(.*?)```", markdown, flags=re.S):
        lines = block.strip().splitlines()
        caption = next(line.split(":", 2)[2].strip() for line in lines if line.startswith(":caption:"))
        trees[caption] = [line for line in lines if line and not line.startswith(":")]
    return trees


def test_chapters_are_grouped_by_the_parts_of_the_book():
    names = ["11_pretrained_glide.md", "01_forward_process.md", "05_classifier_guidance.md", "02_reverse_process.md"]
    assert _toctrees(bookbuild.toc_markdown(names)) == {
        "Part I. Diffusion from scratch": ["chapters/01_forward_process", "chapters/02_reverse_process"],
        "Part II. Guidance": ["chapters/05_classifier_guidance"],
        "Part III. GLIDE": ["chapters/11_pretrained_glide"],  # Part IV has no chapter yet: left out
        "Reference": ["api/index"],
    }


def test_every_chapter_present_has_a_part():
    chapters = bookbuild.chapter_files()
    assert chapters, "no chapters found"
    trees = _toctrees(bookbuild.toc_markdown(p.name for p in chapters))
    listed = [doc for caption, docs in trees.items() if caption.startswith("Part ") for doc in docs]
    assert listed == [f"chapters/{p.stem}" for p in chapters]


def test_a_chapter_outside_the_parts_or_a_stray_file_is_refused():
    with pytest.raises(ValueError, match="no part"):
        bookbuild.toc_markdown(["16_next.md"])
    with pytest.raises(ValueError, match="not a chapter"):
        bookbuild.chapter_number("notes.md")


def test_only_selected_chapters_are_staged():
    assert [p.name[:2] for p in bookbuild.chapter_files(only=[1, 5])] == ["01", "05"]


def test_api_reference_documents_the_library_but_not_the_book_helpers():
    modules = bookbuild.api_modules()
    assert {"glide_edu", "glide_edu.schedules", "glide_edu.diffusion", "glide_edu.nn.unet"} <= set(modules)
    assert not [m for m in modules if m.startswith(("glide_edu.book", "glide_edu.assets")) or m.endswith("__main__")]
    pages = bookbuild.api_pages(["glide_edu", "glide_edu.schedules", "glide_edu.nn.unet"])
    assert ".. automodule:: glide_edu.schedules" in pages["api/glide_edu.schedules.md"]
    assert "{eval-rst}" in pages["api/glide_edu.schedules.md"]  # autodoc emits reST, not MyST
    index = _toctrees(pages["api/index.md"])
    assert index == {"Core modules": ["glide_edu", "glide_edu.schedules"], "glide_edu.nn": ["glide_edu.nn.unet"]}


def test_staging_fills_the_index_and_keeps_unchanged_files(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    (book / "index.md").write_text(f"# Book\n\n{bookbuild.TOC_PLACEHOLDER}\n")
    chapter = tmp_path / "03_l_simple.md"
    chapter.write_text("# Chapter 3\n")
    files = bookbuild.staged_sources([chapter], book_dir=book, with_api=False)
    assert set(files) == {"index.md", "chapters/03_l_simple.md"}
    index = files["index.md"].decode()
    assert "chapters/03_l_simple" in index and bookbuild.TOC_PLACEHOLDER not in index

    dest = tmp_path / "src"
    (dest / "chapters").mkdir(parents=True)
    (dest / "chapters" / "99_removed.md").write_text("stale")
    assert sorted(bookbuild.sync_tree(files, dest)) == ["chapters/03_l_simple.md", "index.md"]
    assert not (dest / "chapters" / "99_removed.md").exists()
    assert bookbuild.sync_tree(files, dest) == []  # nothing rewritten: Sphinx rereads nothing

    (book / "index.md").write_text("# Book without a table of contents\n")
    with pytest.raises(ValueError, match="parts-toc"):
        bookbuild.staged_sources([chapter], book_dir=book, with_api=False)


def test_the_real_index_has_the_placeholder():
    assert bookbuild.TOC_PLACEHOLDER in (bookbuild.BOOK_DIR / "index.md").read_text()


def _cell(tags, hide_mode=None):
    nodes = pytest.importorskip("docutils.nodes", reason="docutils comes with the book extra: pip install -e .[book]")
    cell = nodes.container(nb_element="cell_code", cell_metadata={"tags": tags}, classes=["cell"])
    if hide_mode:
        cell["hide_mode"] = hide_mode
    return cell


def test_solution_cells_are_folded_and_others_untouched():
    doc = pytest.importorskip("docutils.utils").new_document("chapter")
    solution, hidden_output, plain = _cell(["solution"]), _cell(["solution"], "output"), _cell(["key-figure"])
    doc.extend([solution, hidden_output, plain])
    bookbuild.fold_solutions(None, doc)
    assert solution["hide_mode"] == "input" and hidden_output["hide_mode"] == "input+output"
    assert (solution["prompt_show"], solution["prompt_hide"]) == bookbuild.SOLUTION_PROMPTS
    assert "solution" in solution["classes"]
    assert "hide_mode" not in plain and "prompt_show" not in plain


def test_cdn_stylesheets_are_dropped_from_html_outputs():
    nodes = pytest.importorskip("docutils.nodes", reason="docutils comes with the book extra")
    html = ('<link rel="stylesheet"\nhref="https://maxcdn.bootstrapcdn.com/font-awesome/4.4.0/css/font-awesome.min.css">'
            '\n<div class="animation"><i class="fa fa-play"></i></div>')
    doc = pytest.importorskip("docutils.utils").new_document("chapter")
    doc.append(nodes.raw(html, html, format="html"))
    bookbuild.drop_cdn_stylesheets(None, doc)
    (out,) = list(doc.findall(nodes.raw))
    assert "maxcdn" not in out.astext() and '<i class="fa fa-play">' in out.astext()


def _npm_tarball(path: Path, files: dict[str, str]) -> None:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_vendored_assets_come_from_cached_tarballs_without_npm(tmp_path, monkeypatch):
    monkeypatch.setattr(bookbuild.shutil, "which", lambda name: None)  # no npm: the cache must suffice
    _npm_tarball(tmp_path / "mathjax-3.2.2.tgz", {
        "package/LICENSE": "Apache", "package/es5/tex-svg-full.js": "mj", "package/es5/tex-chtml.js": "unused",
        "package/es5/input/tex/extensions/ams.js": "ams", "package/es5/core.js.map": "map", "package/README.md": "",
    })
    _npm_tarball(tmp_path / "jupyter-widgets-html-manager-1.0.15.tgz", {
        "package/dist/embed.js": "embed", "package/dist/embed-amd.js": "unused", "package/src/x.ts": "",
    })
    static = bookbuild.vendor_assets(tmp_path)
    served = sorted(p.relative_to(static).as_posix() for p in static.rglob("*") if p.is_file())
    assert served == ["mathjax/LICENSE", "mathjax/input/tex/extensions/ams.js", "mathjax/tex-svg-full.js",
                      "widgets/embed.js"]
    assert bookbuild.MATHJAX_PATH in served[2] and bookbuild.WIDGETS_JS in served[3]


def test_without_npm_or_cache_the_build_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(bookbuild.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="npm is not installed"):
        bookbuild.vendor_assets(tmp_path)
