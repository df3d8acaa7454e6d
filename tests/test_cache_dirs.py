"""One cache root (glide_edu.fileio.cache_root) for all downloads: ``checkpoints/`` and GPT-2's ``vocab/``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import glide_edu
from glide_edu import fileio, hub, vocab


def test_glide_edu_cache_moves_checkpoints_and_vocabulary_together(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(vocab.ENV_VAR, raising=False)
    monkeypatch.setenv(fileio.CACHE_ENV_VAR, str(tmp_path / "cache"))
    assert fileio.cache_root() == tmp_path / "cache"
    assert hub.default_cache_dir() == tmp_path / "cache"
    assert vocab.vocab_cache_dir() == tmp_path / "cache" / "vocab"
    assert vocab.search_dirs() == [tmp_path / "cache" / "vocab"]
    with pytest.raises(vocab.VocabNotFoundError, match=str(tmp_path / "cache" / "vocab")):
        vocab.gpt2_vocab_paths()  # the message names where it looked


def test_home_fallback_holds_both_folders(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(fileio.CACHE_ENV_VAR, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = tmp_path / "home" / ".cache" / "glide_edu"
    assert (hub.default_cache_dir(), vocab.vocab_cache_dir()) == (root, root / "vocab")


def test_one_cache_root_and_one_default_cache_dir_in_the_library() -> None:
    package = Path(glide_edu.__file__).parent
    defined: dict[str, list[str]] = {"cache_root": [], "default_cache_dir": []}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name in defined:
                defined[node.name].append(path.relative_to(package).as_posix())
    assert defined == {"cache_root": ["fileio.py"], "default_cache_dir": ["hub/cache.py"]}
    assert not hasattr(vocab, "cache_root") and not hasattr(vocab, "default_cache_dir")


def test_vocab_dir_variable_comes_first_then_the_cache_folder(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(fileio.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setenv(vocab.ENV_VAR, str(tmp_path / "mine"))
    assert vocab.search_dirs() == [tmp_path / "mine", tmp_path / "cache" / "vocab"]
    # an explicit cache folder (the CLI's --cache-dir) replaces the default one; vocab_dir= replaces all
    assert vocab.search_dirs(cache_dir=tmp_path / "other") == [tmp_path / "mine", tmp_path / "other"]
    assert vocab.search_dirs(tmp_path / "only", cache_dir=tmp_path / "other") == [tmp_path / "only"]
    with pytest.raises(vocab.VocabNotFoundError, match=str(tmp_path / "other")):
        vocab.gpt2_vocab_paths(cache_dir=tmp_path / "other")


def test_download_gpt2_vocab_fills_the_cache_folder(monkeypatch, tmp_path: Path) -> None:  # (shared)
    from tests.reference_data import shared_path

    source = shared_path() / "reference" / "glide_text2im" / "vocab"
    monkeypatch.delenv(vocab.ENV_VAR, raising=False)
    monkeypatch.setenv(fileio.CACHE_ENV_VAR, str(tmp_path))
    paths = hub.download_gpt2_vocab(source=source, progress=False)
    assert paths.encoder_json.parent == tmp_path / "vocab"
    assert vocab.gpt2_vocab_paths() == paths  # found again without any argument


def test_an_explicit_cache_dir_governs_vocab_download_and_lookup(monkeypatch, tmp_path: Path) -> None:  # (shared)
    from tests.reference_data import shared_path

    source = shared_path() / "reference" / "glide_text2im" / "vocab"
    monkeypatch.delenv(vocab.ENV_VAR, raising=False)
    monkeypatch.setenv(fileio.CACHE_ENV_VAR, str(tmp_path / "default"))
    paths = hub.download_gpt2_vocab(cache_dir=tmp_path / "mine", source=source, progress=False)
    assert paths == (tmp_path / "mine" / "encoder.json", tmp_path / "mine" / "vocab.bpe")
    assert vocab.gpt2_vocab_paths(cache_dir=tmp_path / "mine") == paths
    assert not (tmp_path / "default").exists()  # the default cache was not touched
    with pytest.raises(vocab.VocabNotFoundError):
        vocab.gpt2_vocab_paths()  # not in the default cache folder
