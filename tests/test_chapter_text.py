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


# ------------------------------------------------------------------ measured times quoted in chapter headers
ROOT = Path(__file__).resolve().parent.parent
# chapter → its precomputed results file (provenance "seconds" is the measured regeneration time)
REGENERATED = {
    "04_hybrid_loss.md": ("ch04", "digits_sampling.json"),
    "05_classifier_guidance.md": ("ch05", "classifier_guidance.json"),
    "06_classifier_free_guidance.md": ("ch06", "digits_cfg.json"),
    "07_text_conditioning.md": ("ch07", "glide_mini_guidance.json"),
    "08_noised_clip.md": ("ch08", "clip_retrieval_by_noise.json"),
    "12_measuring.md": ("ch12", "glide_mini_fronts.json"),
}
_QUOTE = r"≈ (\d+(?:\.\d+)?) (min|s) by `python -m glide_edu\.book regenerate {chapter}(?: --[a-z-]+)*`"


def _header(chapter: Path) -> str:
    text = chapter.read_text(encoding="utf-8")
    return " ".join(text[: text.index("\n## ")].split())  # everything before the first section, one line


def quoted_seconds(header: str, chapter_key: str) -> float | None:
    """The regeneration time a header quotes for ``regenerate chNN``, in seconds (None when it quotes none)."""
    m = re.search(_QUOTE.format(chapter=chapter_key), header)
    return None if m is None else float(m.group(1)) * (60 if m.group(2) == "min" else 1)


@pytest.mark.parametrize("name", sorted(REGENERATED))
def test_header_quotes_the_measured_regeneration_time(name: str) -> None:
    import json

    chapter_key, results = REGENERATED[name]
    quoted = quoted_seconds(_header(ROOT / "chapters" / name), chapter_key)
    assert quoted is not None, f"{name}: the header must quote the regeneration time as '≈ N min by `…`'"
    measured = json.loads((ROOT / "data" / "results" / results).read_text(encoding="utf-8"))["provenance"]["seconds"]
    assert abs(quoted - measured) <= max(60.0, 0.2 * measured), (name, quoted, measured)


def test_the_time_quote_is_parsed() -> None:
    header = "precomputed in ≈ 27 min by `python -m glide_edu.book regenerate ch04` and more"
    assert quoted_seconds(header, "ch04") == 27 * 60 and quoted_seconds(header, "ch05") is None
    assert quoted_seconds("≈ 40 s by `python -m glide_edu.book regenerate ch05`", "ch05") == 40
    assert quoted_seconds("≈ 9 min by `python -m glide_edu.book regenerate ch07 --sweep`", "ch07") == 540
