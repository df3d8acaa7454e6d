"""Chapter sources stay sane: no paragraph appears twice (a cut-off edit once pasted a section three times)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CHAPTERS = sorted((Path(__file__).resolve().parent.parent / "chapters").glob("[0-9][0-9]_*.md"))


def _prose_paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks outside code cells, whitespace-normalised."""
    prose = re.sub(r"```\{code-cell\}.*?```", "", text, flags=re.S)
    return [" ".join(block.split()) for block in re.split(r"\n\s*\n", prose) if block.strip()]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_no_prose_paragraph_is_repeated(chapter: Path) -> None:
    seen: dict[str, int] = {}
    repeated = []
    for i, para in enumerate(_prose_paragraphs(chapter.read_text(encoding="utf-8"))):
        if len(para) >= 120:
            if para in seen:
                repeated.append(para[:100])
            seen[para] = i
    assert not repeated, f"{chapter.name} repeats paragraphs: {repeated}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_no_edit_placeholders_left(chapter: Path) -> None:
    text = chapter.read_text(encoding="utf-8")
    leftovers = re.findall(r"^(?:- )?[A-Z]{2,}_[A-Z][a-z]", text, flags=re.M)  # e.g. "CG_What", "- SUMMARY_What"
    assert not leftovers, f"{chapter.name} has placeholder labels: {leftovers}"


def test_the_guard_catches_a_repeat() -> None:
    para = "A paragraph long enough to count, " * 5
    assert len(_prose_paragraphs(f"{para}\n\nother\n\n{para}\n")) == 3
    assert _prose_paragraphs("x\n\n```{code-cell} ipython3\nskip me\n```\n\ny") == ["x", "y"]
