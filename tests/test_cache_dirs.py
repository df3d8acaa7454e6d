"""One cache folder for everything glide_edu downloads: checkpoints and GPT-2's vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest

from glide_edu import hub, vocab


def test_glide_edu_cache_moves_checkpoints_and_vocabulary_together(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(vocab.ENV_VAR, raising=False)
    monkeypatch.setenv("GLIDE_EDU_CACHE", str(tmp_path / "cache"))
    assert hub.default_cache_dir() == tmp_path / "cache"
    assert vocab.default_cache_dir() == tmp_path / "cache" / "vocab"
    assert vocab.search_dirs() == [tmp_path / "cache" / "vocab"]
    with pytest.raises(vocab.VocabError, match=str(tmp_path / "cache" / "vocab")):
        vocab.gpt2_vocab_paths()  # the message names where it looked


def test_xdg_and_home_fallbacks_agree(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GLIDE_EDU_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.default_cache_dir() == tmp_path / "xdg" / "glide_edu"
    assert vocab.default_cache_dir() == hub.default_cache_dir() / "vocab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert vocab.default_cache_dir() == tmp_path / "home" / ".cache" / "glide_edu" / "vocab"


def test_vocab_dir_variable_still_comes_first(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GLIDE_EDU_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(vocab.ENV_VAR, str(tmp_path / "mine"))
    assert vocab.search_dirs() == [tmp_path / "mine", tmp_path / "cache" / "vocab"]


def test_download_gpt2_vocab_fills_the_cache_folder(monkeypatch, tmp_path: Path) -> None:
    from tests.reference_data import shared_path

    source = shared_path() / "reference" / "glide_text2im" / "vocab"
    monkeypatch.delenv(vocab.ENV_VAR, raising=False)
    monkeypatch.setenv("GLIDE_EDU_CACHE", str(tmp_path))
    paths = hub.download_gpt2_vocab(source=source, progress=False)
    assert paths.encoder_json.parent == tmp_path / "vocab"
    assert vocab.gpt2_vocab_paths() == paths  # found again without any argument
