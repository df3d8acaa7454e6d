"""`make book`: the executed chapters as a static HTML book that works offline.

Run as a script (``python tools/bookbuild.py``), this module

1. stages the book's sources in ``build/book/src``: ``book/index.md`` with a table of contents by the book's
   parts (generated from the chapters present in ``chapters/``), a copy of every chapter (the chapters are
   never modified), and one API-reference page per ``glide_edu`` module (Sphinx autodoc);
2. vendors the two JavaScript libraries a page needs, MathJax 3 and the ipywidgets HTML manager, from the npm
   registry (``npm pack``, once, cached in ``build/book/vendor``), so that no page loads anything from a CDN;
3. runs Sphinx with ``book/conf.py`` (MyST-NB executes every chapter in the fast profile, failing the build
   on a cell error) into ``build/book/html``.

Loaded by Sphinx as the extension ``bookbuild`` (see ``book/conf.py``), it folds every exercise's solution:
a code cell tagged ``solution`` is shown as a closed "Show solution" box (MyST-NB's own hide-input
``<details>``, which needs no JavaScript), while the exercise's stub, a plain ```python block in the text,
stays visible.

Only the standard library is imported at module level, so the staging and table-of-contents logic can be
unit-tested without the ``book`` extra (tests/test_book_site.py).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK_DIR = ROOT / "book"  # conf.py and the hand-written pages
CHAPTER_DIR = ROOT / "chapters"
CHAPTER_GLOB = "[0-9][0-9]_*.md"
BUILD_DIR = ROOT / "build" / "book"
SRC_DIR = BUILD_DIR / "src"  # staged sources (generated; never edit)
HTML_DIR = BUILD_DIR / "html"
VENDOR_DIR = BUILD_DIR / "vendor"  # npm tarballs (cache) and their unpacked files
STATIC_VENDOR_DIR = VENDOR_DIR / "static"  # added to Sphinx's html_static_path by book/conf.py

# The book's parts (shared/BOOK_PLAN.md): title, first and last chapter number.
PARTS: tuple[tuple[str, int, int], ...] = (
    ("I. Diffusion from scratch", 1, 4),
    ("II. Guidance", 5, 6),
    ("III. GLIDE", 7, 12),
    ("IV. Beyond", 13, 15),
)
TOC_PLACEHOLDER = "<!-- parts-toc -->"

# npm package spec, folder of the package to serve, folder under _static/ it is served from, files of that
# folder left out (unused bundles: 20 MB). MathJax 3 (its es5/ components: the one combined component the
# book loads, plus what it loads on demand) renders the math; the HTML manager's standalone bundle renders the
# embedded widget state. The package's LICENSE is served with it.
NPM_ASSETS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("mathjax@^3.2", "es5", "mathjax", ("tex-chtml*.js", "tex-mml-*.js", "mml-*.js", "tex-svg.js", "node-main.js")),
    ("@jupyter-widgets/html-manager@^1.0", "dist", "widgets", ("embed-amd.js", "libembed-amd.js")),
)
MATHJAX_PATH = "mathjax/tex-svg-full.js"  # SVG output: no web fonts, which Chromium refuses over file://
WIDGETS_JS = "widgets/embed.js"  # html-manager's standalone bundle (base widgets, no require.js, no CDN)

API_PACKAGE = "glide_edu"
# Left out of the API reference: chapter-only code (glide_edu.book, see its docstring), the data package,
# and command-line entry points.
API_SKIP = ("glide_edu.book", "glide_edu.book.*", "glide_edu.assets", "glide_edu.assets.*", "*.__main__")

SOLUTION_TAG = "solution"
SOLUTION_PROMPTS = ("Show solution", "Hide solution")


# ---------------------------------------------------------------------------------------------------- contents


def chapter_number(name: str) -> int:
    """``"05_classifier_guidance.md"`` → 5."""
    if not fnmatch.fnmatch(name, CHAPTER_GLOB):
        raise ValueError(f"{name!r} is not a chapter file (chapters/NN_slug.md)")
    return int(name[:2])


def part_of(number: int) -> str:
    for title, first, last in PARTS:
        if first <= number <= last:
            return title
    raise ValueError(f"chapter {number} belongs to no part of the book; add it to PARTS in {__file__}")


def toc_markdown(chapter_names: Iterable[str]) -> str:
    """MyST toctrees, one per part that has chapters, then the API reference.

    ``chapter_names`` are file names such as ``01_forward_process.md``; parts without a chapter are left out.
    """
    by_part: dict[str, list[str]] = {title: [] for title, _, _ in PARTS}
    for name in sorted(chapter_names, key=chapter_number):
        by_part[part_of(chapter_number(name))].append(f"chapters/{name.removesuffix('.md')}")
    blocks = [_toctree(f"Part {title}", docs) for title, docs in by_part.items() if docs]
    blocks.append(_toctree("Reference", ["api/index"]))
    return "\n".join(blocks)


def _toctree(caption: str, docs: list[str]) -> str:
    return f"```{{toctree}}\n:caption: {caption}\n:maxdepth: 1\n\n" + "\n".join(docs) + "\n```\n"


def api_modules(package: str = API_PACKAGE) -> list[str]:
    """Every module of ``package`` (itself included) that the API reference documents, sorted."""
    import importlib

    pkg = importlib.import_module(package)
    names = [package] + [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}.")]
    return sorted(n for n in names if not any(fnmatch.fnmatch(n, pattern) for pattern in API_SKIP))


def api_pages(modules: list[str]) -> dict[str, str]:
    """Relative path → text: ``api/index.md`` (grouped by package) and one autodoc page per module."""
    pages = {}
    for module in modules:
        # autodoc writes reStructuredText, so its directive must run inside eval-rst (not as a MyST directive)
        pages[f"api/{module}.md"] = (
            f"# `{module}`\n\n"
            f"```{{eval-rst}}\n.. automodule:: {module}\n   :members:\n   :show-inheritance:\n```\n"
        )
    groups: dict[str, list[str]] = {}
    for module in modules:
        parts = module.split(".")
        group = ".".join(parts[:2]) if len(parts) > 2 else API_PACKAGE
        groups.setdefault(group, []).append(module)
    lines = [
        "# API reference\n",
        f"Generated from the docstrings of the `{API_PACKAGE}` package, the library the chapters import "
        "(chapter-only helpers in `glide_edu.book` are left out). Each page shows a module's functions "
        "and classes with links to their source.\n",
    ]
    for group in sorted(groups, key=lambda g: (g != API_PACKAGE, g)):
        caption = "Core modules" if group == API_PACKAGE else f"`{group}`"
        lines.append("```{toctree}\n:maxdepth: 1\n:caption: " + caption.replace("`", "") + "\n")
        lines += [module for module in groups[group]]
        lines.append("```\n")
    pages["api/index.md"] = "\n".join(lines)
    return pages


def chapter_files(chapter_dir: Path = CHAPTER_DIR, only: Iterable[int] | None = None) -> list[Path]:
    """The chapters present, optionally only those with the given numbers."""
    wanted = set(only) if only is not None else None
    return [p for p in sorted(chapter_dir.glob(CHAPTER_GLOB)) if wanted is None or chapter_number(p.name) in wanted]


def staged_sources(chapters: list[Path], book_dir: Path = BOOK_DIR, with_api: bool = True) -> dict[str, bytes]:
    """Relative path → content of every source file the book is built from."""
    files: dict[str, bytes] = {}
    for path in sorted(book_dir.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        if path.name == "index.md":
            if TOC_PLACEHOLDER not in text:
                raise ValueError(f"{path} has no {TOC_PLACEHOLDER} line for the table of contents")
            text = text.replace(TOC_PLACEHOLDER, toc_markdown(p.name for p in chapters))
        files[path.name] = text.encode()
    for path in chapters:
        files[f"chapters/{path.name}"] = path.read_bytes()
    if with_api:
        files.update({rel: text.encode() for rel, text in api_pages(api_modules()).items()})
    return files


def sync_tree(files: dict[str, bytes], dest: Path) -> list[str]:
    """Make ``dest`` hold exactly ``files``; unchanged files keep their time stamps (Sphinx rereads only the
    changed ones). Returns the paths written."""
    written = []
    for rel, content in files.items():
        target = dest / rel
        if not target.is_file() or target.read_bytes() != content:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            written.append(rel)
    for path in sorted(dest.rglob("*"), reverse=True):
        rel = path.relative_to(dest).as_posix()
        if path.is_file() and rel not in files:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return written


# ------------------------------------------------------------------------------------------------------ vendor


def vendor_assets(vendor_dir: Path = VENDOR_DIR) -> Path:
    """Unpack MathJax and the widget manager under ``vendor_dir/static``; ``npm pack`` only the missing ones."""
    static = vendor_dir / "static"
    for spec, folder, served_as, unused in NPM_ASSETS:
        target = static / served_as
        if target.is_dir() and any(target.iterdir()):
            continue
        stem = spec.rsplit("@", 1)[0].lstrip("@").replace("/", "-")
        tarballs = sorted(vendor_dir.glob(f"{stem}-[0-9]*.tgz"))
        if not tarballs:
            npm = shutil.which("npm")
            if npm is None:
                raise SystemExit(f"make book needs {spec} from the npm registry, but npm is not installed: "
                                 f"`apt-get install npm`, or copy {stem}-*.tgz into {vendor_dir}")
            vendor_dir.mkdir(parents=True, exist_ok=True)
            subprocess.run([npm, "pack", spec, "--pack-destination", str(vendor_dir), "--loglevel=error"],
                           check=True, stdout=subprocess.DEVNULL)
            tarballs = sorted(vendor_dir.glob(f"{stem}-[0-9]*.tgz"))
        _unpack(tarballs[-1], f"package/{folder}/", target, unused)
    return static


def _unpack(tarball: Path, prefix: str, target: Path, unused: tuple[str, ...] = ()) -> None:
    """Extract ``prefix`` of an npm tarball as ``target`` (less source maps and the ``unused`` top-level files),
    with the package's LICENSE."""

    def wanted(name: str) -> bool:
        if name == "package/LICENSE":
            return True
        rel = name[len(prefix):]
        return (name.startswith(prefix) and not name.endswith(".map")
                and not ("/" not in rel and any(fnmatch.fnmatch(rel, pattern) for pattern in unused)))

    with tempfile.TemporaryDirectory(dir=tarball.parent) as tmp, tarfile.open(tarball) as tar:
        tar.extractall(tmp, members=[m for m in tar.getmembers() if wanted(m.name)], filter="data")
        if (Path(tmp) / "package" / "LICENSE").is_file():
            shutil.move(str(Path(tmp) / "package" / "LICENSE"), Path(tmp) / prefix / "LICENSE")
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / prefix), target)


# ------------------------------------------------------------------------------------------------------- build


def build(only: Iterable[int] | None = None, incremental: bool = False, strict: bool = True,
          sphinx_args: list[str] | None = None) -> int:
    chapters = chapter_files(only=only)
    if not chapters:
        raise SystemExit(f"no chapters selected in {CHAPTER_DIR}")
    start = time.perf_counter()
    vendor_assets()
    sync_tree(staged_sources(chapters), SRC_DIR)
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-c", str(BOOK_DIR), "-d", str(BUILD_DIR / "doctrees"),
           "--keep-going", str(SRC_DIR), str(HTML_DIR)]
    if strict:
        cmd.insert(3, "-W")  # a warning (broken reference, bad docstring markup, unknown output) fails the build
    if not incremental:
        cmd.insert(3, "-E")  # re-read (so re-execute) every chapter: the library may have changed
    env = {**os.environ, "GLIDE_EDU_PROFILE": os.environ.get("GLIDE_EDU_PROFILE", "fast")}
    rc = subprocess.run(cmd + list(sphinx_args or []), env=env).returncode
    pages = sum(1 for p in HTML_DIR.rglob("*.html") if "_static" not in p.parts) if HTML_DIR.is_dir() else 0
    status = "built" if rc == 0 else f"FAILED (sphinx exit {rc})"
    print(f"book {status}: {len(chapters)} chapters, {pages} pages in {HTML_DIR.relative_to(ROOT)} "
          f"({time.perf_counter() - start:.0f} s, profile {env['GLIDE_EDU_PROFILE']}); "
          f"open {(HTML_DIR / 'index.html').relative_to(ROOT)} in a browser (no network needed)")
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapters", default=os.environ.get("BOOK_CHAPTERS", ""),
                        help="only these chapter numbers, e.g. '1 5' (default: every chapter; env BOOK_CHAPTERS)")
    parser.add_argument("--incremental", action="store_true",
                        help="reuse the last build's environment: execute only chapters whose text changed")
    parser.add_argument("--lenient", action="store_true", help="do not turn Sphinx warnings into errors")
    parser.add_argument("sphinx_args", nargs="*", help="extra sphinx-build arguments (after --)")
    args = parser.parse_args(argv)
    only = [int(n) for n in args.chapters.replace(",", " ").split()] or None
    return build(only=only, incremental=args.incremental, strict=not args.lenient, sphinx_args=args.sphinx_args)


# ------------------------------------------------------------------------------------------ Sphinx extension


def fold_solutions(app, doctree) -> None:
    """``doctree-read``: give every code cell tagged ``solution`` MyST-NB's hide-input mode with our prompts.

    MyST-NB's ``HideInputCells`` post-transform then wraps the cell's source in a closed ``<details>``.
    """
    from docutils import nodes

    for node in doctree.findall(nodes.container):
        if node.get("nb_element") != "cell_code":
            continue
        if SOLUTION_TAG not in (node.get("cell_metadata") or {}).get("tags", []):
            continue
        current = node.get("hide_mode")
        node["hide_mode"] = {None: "input", "output": "input+output"}.get(current, current)
        node["prompt_show"], node["prompt_hide"] = SOLUTION_PROMPTS
        node["classes"].append("solution")


# Stylesheets that cell outputs pull from a CDN, dropped from the HTML: matplotlib's jshtml animations link Font
# Awesome 4 for their buttons; the theme's own Font Awesome (served from _static) draws the same icons.
CDN_STYLESHEET = re.compile(r"<link\b[^>]*\bhref=[\"']https?://[^\"']*font-?awesome[^\"']*[\"'][^>]*>", re.IGNORECASE)


def drop_cdn_stylesheets(app, doctree) -> None:
    """``doctree-read``: remove CDN stylesheet links from raw-HTML cell outputs (the book must work offline)."""
    from docutils import nodes

    for node in list(doctree.findall(nodes.raw)):
        if "html" in node.get("format", "").split() and CDN_STYLESHEET.search(node.astext()):
            text = CDN_STYLESHEET.sub("", node.astext())
            node.replace_self(nodes.raw(text, text, format=node["format"], classes=node.get("classes", [])))


def setup(app):
    app.connect("doctree-read", fold_solutions)
    app.connect("doctree-read", drop_cdn_stylesheets)
    # MathJax on every page, not only on pages with equations: the navigation shows chapter titles with math.
    app.set_html_assets_policy("always")
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    sys.exit(main())
