"""``python -m glide_edu.book``: one command regenerates any chapter's precomputed results."""

from __future__ import annotations

import pytest

from glide_edu.book import REGENERABLE, regenerate
from glide_edu.book.__main__ import main


def test_list_names_every_chapter_with_results(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(f"{chapter}:" in out for chapter in REGENERABLE) and {"ch03", "ch04", "ch05", "ch06"} <= set(REGENERABLE)


@pytest.mark.parametrize("chapter, option", [("ch03", "--run"), ("ch04", "--seeds"), ("ch05", "--scales"),
                                             ("ch06", "--p-unconds"), ("ch07", "--caption-use"),
                                             ("ch12", "--by-step")])
def test_help_is_the_chapters_own(chapter, option, capsys) -> None:
    with pytest.raises(SystemExit) as err:
        main(["regenerate", chapter, "--help"])
    assert err.value.code == 0
    out = capsys.readouterr().out
    assert f"regenerate {chapter}" in out and option in out


def test_unknown_chapter_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as err:
        main(["regenerate", "ch99"])
    assert err.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no precomputed results"):
        regenerate("ch01")
