"""The rendered book (`make book`, build/book/html) as a reader opens it: every page from file://, offline.

One headless-Chromium visit per page (Debian's Chromium driven by Playwright, as in tests/test_browser.py), with
every request that is not file:, data: or blob: blocked and recorded. The visits are shared by the tests:

* no broken image or link: every <img> loaded (naturalWidth > 0), every local href/src names an existing file,
  no local file failed to load, nothing was asked of the network (no CDN at view time);
* math rendered: MathJax typeset every math element (no raw ``\\(``, ``\\[`` or ``$...$`` left, no TeX error);
* no error output: no traceback or error text in any cell output;
* chapters: solutions folded under a closed "Show solution", each widget shows its initial picture, the
  navigation has the book's parts and a link to the API reference.

Without Chromium or a built book the tests are skipped with a one-line hint; ``GLIDE_EDU_BUILD_BOOK=1`` builds
the book first (`make book`, several minutes) when it is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "build" / "book" / "html"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_HINT = "Chromium not found: `apt-get install chromium` (Debian/Ubuntu) to run the browser tests"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
BUILD_VAR = "GLIDE_EDU_BUILD_BOOK"
NOT_BUILT_HINT = f"no built book in build/book/html: run make book first (or set {BUILD_VAR}=1)"
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")

pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason=CHROMIUM_HINT)]
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra has it)")

# Runs in the page once it has loaded: waits for MathJax, then reports everything the tests check.
INSPECT = r"""async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const local = s => s && !/^(https?:|mailto:|javascript:|data:|blob:|#)/i.test(s);
  const visibleText = root => {
    const skip = 'PRE, CODE, SCRIPT, STYLE, TEXTAREA, MJX-CONTAINER, .highlight, .cell_output';
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT,
      {acceptNode: n => n.parentElement.closest(skip) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
    let text = ''; while (walker.nextNode()) text += walker.currentNode.nodeValue; return text;
  };
  const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  return {
    images: [...document.images].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
    links: [...document.querySelectorAll('a[href], link[href]')].map(a => a.getAttribute('href')).filter(local),
    sources: [...document.querySelectorAll('script[src], img[src]')].map(e => e.getAttribute('src')).filter(local),
    math: document.querySelectorAll('.math').length,
    untypeset: [...document.querySelectorAll('.math')].filter(e => !e.querySelector('mjx-container')).length,
    typeset: document.querySelectorAll('mjx-container').length,
    texErrors: [...document.querySelectorAll('mjx-merror, [data-mjx-error]')].map(
      e => e.getAttribute('data-mjx-error') || e.textContent).slice(0, 5),
    text: visibleText(document.body),
    errorOutputs: [...document.querySelectorAll('.cell_output .output')].filter(
      e => /\b(traceback|stderr|error)\b/.test(e.className)
           || e.textContent.includes('Traceback (most recent call last)')
    ).map(e => e.className + ': ' + e.textContent.slice(0, 200)),
    widgets: views.map(s => [...s.parentElement.querySelectorAll('.widget-subarea img')].some(
      i => i.complete && i.naturalWidth > 0)),
    solutionCells: document.querySelectorAll('.cell.tag_solution').length,
    foldedSolutions: [...document.querySelectorAll('.cell.tag_solution details')].filter(
      d => !d.open && d.querySelector('summary').textContent.includes('Show solution')
           && d.querySelector('.cell_input')).length,
    captions: [...document.querySelectorAll('.bd-sidebar-primary p.caption, .bd-sidebar-primary .caption-text')].map(
      e => e.textContent.trim()),
  };
}"""

RAW_MATH = re.compile(r"\\\(|\\\[|\$\$|\$[^\s$][^$\n]{0,200}?\$")


@pytest.fixture(scope="session")
def site() -> Path:
    if not (SITE / "index.html").is_file():
        if os.environ.get(BUILD_VAR) != "1":
            pytest.skip(NOT_BUILT_HINT)
        subprocess.run(["make", "book"], cwd=ROOT, check=True)
    return SITE


@pytest.fixture(scope="session")
def visits(site) -> dict[str, dict]:
    """Page path (relative to the site) → what INSPECT found there, plus the requests it made."""
    results: dict[str, dict] = {}
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context()
        remote: list[str] = []
        failed: list[str] = []

        def block(route):
            remote.append(route.request.url)
            route.abort()

        context.route(re.compile(r"^(?!file:|data:|blob:|about:).*"), block)
        page = context.new_page()
        page.on("requestfailed", lambda r: failed.append(r.url) if r.url.startswith("file:") else None)
        for path in sorted(p for p in site.rglob("*.html") if "_static" not in p.parts):  # _static: templates
            rel = path.relative_to(site).as_posix()
            remote.clear()
            failed.clear()
            page.goto(path.as_uri(), wait_until="load")
            report = page.evaluate(INSPECT)
            report["remote"], report["failed"] = list(remote), list(failed)
            results[rel] = report
        browser.close()
    return results


def _problems(visits: dict[str, dict], check) -> list[str]:
    return [f"{page}: {problem}" for page, report in visits.items() for problem in check(page, report)]


def _resolve(page: str, href: str) -> Path:
    return (SITE / page).parent / unquote(urlsplit(href).path)


def test_every_page_was_visited(visits):
    assert "index.html" in visits and any(p.startswith("chapters/") for p in visits)
    assert any(p.startswith("api/") for p in visits), "the API reference is missing"


def test_no_broken_image_or_link(visits):
    def check(page, report):
        yield from (f"image not loaded: {i['src'][:120]}" for i in report["images"] if not i["ok"])
        for href in report["links"] + report["sources"]:
            if urlsplit(href).path and not _resolve(page, href).is_file():
                yield f"link to a missing file: {href}"
        yield from (f"failed to load: {url[:120]}" for url in report["failed"])

    assert _problems(visits, check) == []


def test_nothing_is_loaded_from_the_network(visits):
    assert _problems(visits, lambda page, report: (f"network request: {u}" for u in report["remote"])) == []


def test_math_is_rendered(visits):
    def check(page, report):
        if report["untypeset"]:
            yield f"{report['untypeset']} of {report['math']} math elements not typeset by MathJax"
        yield from (f"TeX error: {e}" for e in report["texErrors"])
        yield from (f"raw math left in the text: {m!r}" for m in RAW_MATH.findall(report["text"])[:5])

    assert _problems(visits, check) == []
    chapters = {p: r for p, r in visits.items() if p.startswith("chapters/")}
    assert all(r["typeset"] > 0 for r in chapters.values()), "a chapter without typeset math"


def test_no_error_output(visits):
    assert _problems(visits, lambda page, report: report["errorOutputs"]) == []


def test_chapters_fold_solutions_and_show_widgets(visits):
    chapters = {p: r for p, r in visits.items() if p.startswith("chapters/")}

    def check(page, report):
        if report["solutionCells"] != report["foldedSolutions"]:
            yield f"{report['foldedSolutions']} of {report['solutionCells']} solutions folded under 'Show solution'"
        if not all(report["widgets"]):
            yield f"widget without its initial picture: {report['widgets']}"

    assert _problems(chapters, check) == []
    assert sum(r["solutionCells"] for r in chapters.values()) > 0
    assert sum(len(r["widgets"]) for r in chapters.values()) > 0


def test_navigation_has_the_parts_and_the_api_reference(visits):
    for page, report in visits.items():
        if page.startswith("chapters/"):
            assert any(c.startswith("Part I") for c in report["captions"]), (page, report["captions"])
            assert "Reference" in report["captions"], (page, report["captions"])
            api_index = (SITE / "api" / "index.html").resolve()
            assert any(_resolve(page, h).resolve() == api_index for h in report["links"]), page
