"""The chapters as a student meets them: JupyterLab in a real (headless) browser, every widget moved.

For each chapter with a widget: start JupyterLab on 127.0.0.1 with a token (one server for the module, on a
scratch copy of the chapters), open the chapter in Debian's Chromium driven by Playwright, check that opening
it marks nothing modified (no ● on the tab, the file's bytes unchanged), Run All, wait until every cell has
run, assert that no cell shows an error, then move every control of every widget (sliders by keyboard,
dropdowns, toggle buttons, text boxes) and assert that the widget's picture changes within the latency
budget. Screenshots and a JSON of the measured latencies go to ``build/browser/`` (test artefacts).

Chromium comes from the system (``apt-get install chromium``), never from ``playwright install``; without it
these tests are skipped with that one-line hint (``make test`` prints it too).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTEFACTS = ROOT / "build" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_HINT = "Chromium not found: `apt-get install chromium` (Debian/Ubuntu) to run the browser tests"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "glide-edu-browser-test"
LATENCY_BUDGET_S = 1.5  # ≤ 1 s of the widget's own work (docs/benchmarks.md) + the browser round trip
RUN_ALL_TIMEOUT_S = 600
# Chapters whose widgets are known to miss the budget (chapter → measured latencies), reported as expected failures
# until fixed. Empty since chapters 5 and 6 serve precomputed views (0.2–0.35 s here on 2026-12-04, under load).
KNOWN_SLOW: dict[str, str] = {}

pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason=CHROMIUM_HINT)]
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra has it)")


def widget_chapters() -> list[str]:
    return [p.name for p in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.md"))
            if "widgets.interact(" in p.read_text(encoding="utf-8")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a scratch copy of the chapters; yields (base URL, its chapters folder)."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "chapters", root / "chapters")
    port = _free_port()
    env = {**os.environ, "GLIDE_EDU_PROFILE": os.environ.get("GLIDE_EDU_PROFILE", "fast")}
    args = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.port={port}",
            "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
            "--ServerApp.contents_manager_class=glide_edu.book.lab.BookContentsManager",
            "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    log = open(root / "lab.log", "w")  # noqa: SIM115 — closed below
    server = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(f"JupyterLab exited: {(root / 'lab.log').read_text()[-2000:]}") from None
            time.sleep(0.5)
    yield url, root / "chapters"
    server.terminate()
    server.wait(30)
    log.close()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _kernel_idle(page) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => e.textContent.includes('Idle'))",
        timeout=120_000)


def _run_all(page) -> float:
    start = time.perf_counter()
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    # done: no prompt shows [*] and the kernel is Idle — twice, a second apart ("Idle" flickers between cells)
    done = ("() => ![...document.querySelectorAll('.jp-InputPrompt')].some(e => e.textContent.includes('*'))"
            " && [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => e.textContent.includes('Idle'))"
            " && document.querySelectorAll('.jp-InputPrompt').length > 0"
            " && (![...document.querySelectorAll('.jp-InputPrompt')].some(e => e.textContent.trim() === '[ ]:')"
            "     || document.querySelector(\".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']\")"
            "        !== null && [...document.querySelectorAll('.jp-OutputArea-output')].some("
            "          e => e.textContent.includes('Traceback')))")
    for _ in range(2):
        page.wait_for_function(done, timeout=RUN_ALL_TIMEOUT_S * 1000, polling=500)
        time.sleep(1.0)
    return time.perf_counter() - start


def _errors(page) -> list[str]:
    texts = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
    return [t[:300] for t in texts if "Traceback" in t or "Error" in t.split("\n", 1)[0]]


def _image(box) -> str:
    imgs = box.locator(".widget-output img")
    return imgs.first.get_attribute("src") or "" if imgs.count() else ""


def _settled_image(box, timeout: float = 30.0) -> str:
    """The widget's picture once it shows one: a windowed notebook renders a scrolled-to output a moment later, and
    a control that re-runs the function twice (a method switch also moves the scale slider) redraws in between."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        now = _image(box)
        if now:
            time.sleep(0.3)
            if _image(box) == now:
                return now
        time.sleep(0.05)
    return _image(box)


def _wait_changed(box, before: str, start: float, timeout: float = 30.0) -> float:
    """Seconds from ``start`` (just before the control moved) until the picture differs from ``before``."""
    while time.perf_counter() - start < timeout:
        now = _image(box)
        if now and now != before:
            return time.perf_counter() - start
        time.sleep(0.02)
    raise AssertionError(f"the widget's picture did not change within {timeout} s")


CONTROLS = (  # (kind, selector inside a widget-interact box), in the order they are moved
    ("slider", ".widget-slider [role=slider], .widget-slider .noUi-handle"),
    ("dropdown", ".widget-dropdown select"),
    ("toggle", ".widget-toggle-buttons"),
    ("text", ".widget-text input[type=text]"),
)


def _controls(box) -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    for kind, selector in CONTROLS:
        matches = box.locator(selector)
        found += [(kind, matches.nth(i)) for i in range(matches.count())]
    return found


def _move(kind: str, control, page) -> None:
    if kind == "slider":
        control.focus()
        page.keyboard.press("ArrowRight")
    elif kind == "dropdown":
        options = control.locator("option").all_inner_texts()
        current = control.evaluate("e => e.options[e.selectedIndex].text")
        control.select_option(label=next(o for o in options if o != current))
    elif kind == "toggle":
        control.locator("button:not(.mod-active)").first.click()
    elif kind == "text":  # a combobox offers its (precomputed) choices in a datalist: take another one
        choices = control.evaluate("e => e.list ? Array.from(e.list.options).map(o => o.value) : []")
        current = control.input_value()
        control.fill(next((c for c in choices if c != current), current + " and a blue square"))
        control.press("Enter")


@pytest.mark.parametrize("chapter", widget_chapters())
def test_chapter_runs_in_jupyterlab_and_its_widgets_answer(chapter: str, lab, browser) -> None:
    url, chapters = lab
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    stem = chapter.removesuffix(".md")
    before_bytes = (chapters / chapter).read_bytes()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{url}/lab/workspaces/{stem}/tree/chapters/{chapter}?reset&token={TOKEN}")
        page.wait_for_selector(".jp-Notebook", timeout=120_000)
        _kernel_idle(page)
        time.sleep(2.0)  # JupyterLab writes the kernel's language_info on connecting: give it the time
        assert page.locator(".lm-TabBar-tab.jp-mod-dirty").count() == 0, "opening the chapter marked it modified"
        assert (chapters / chapter).read_bytes() == before_bytes, "opening the chapter rewrote the file"
        run_seconds = _run_all(page)
        page.screenshot(path=str(ARTEFACTS / f"{stem}-run-all.png"), full_page=False)
        errors = _errors(page)
        assert not errors, f"{chapter}: cells show errors: {errors}"
        boxes = page.locator(".widget-interact")
        assert boxes.count() >= 1, f"{chapter}: no widget rendered after Run All"
        latencies: list[dict] = []
        for b in range(boxes.count()):
            box = boxes.nth(b)
            box.scroll_into_view_if_needed()
            controls = _controls(box)
            assert controls, f"{chapter}: widget {b} has no control the test knows how to move"
            for kind, control in controls:
                before = _settled_image(box)
                assert before, f"{chapter}: widget {b} shows no picture within 30 s"
                start = time.perf_counter()
                _move(kind, control, page)
                seconds = _wait_changed(box, before, start)
                latencies.append({"widget": b, "control": kind, "seconds": round(seconds, 3)})
                box.screenshot(path=str(ARTEFACTS / f"{stem}-widget{b}-{kind}-{len(latencies)}.png"))
        assert not _errors(page), f"{chapter}: moving the widgets raised: {_errors(page)}"
        (ARTEFACTS / f"{stem}.json").write_text(json.dumps(
            {"chapter": chapter, "run_all_seconds": round(run_seconds, 1), "latencies": latencies}, indent=1))
        slow = [x for x in latencies if x["seconds"] > LATENCY_BUDGET_S]
        if slow and chapter in KNOWN_SLOW:
            pytest.xfail(f"{chapter}: known slow widget ({KNOWN_SLOW[chapter]}); now {slow}")
        assert not slow, f"{chapter}: widget updates over {LATENCY_BUDGET_S} s: {slow}"
    finally:
        page.close()
