"""GLIDE's GPT-2 BPE and CLIP's BPE against the reference's recorded vectors, plus vocabulary handling.

The GPT-2 vocabulary is read from ``../shared/reference/glide_text2im/vocab`` (skipped when absent); CLIP's
comes from the installed open-clip-torch wheel (a dependency).
"""

from __future__ import annotations

import gzip
import json
import shutil
import warnings
from functools import cache
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glide_edu import vocab
from glide_edu.tokenizers import (
    ClipTokenizer,
    GlideTokenizer,
    bpe_merge,
    bytes_to_unicode,
    clip_tokenizer,
    glide_tokenizer,
    padded_tokens_and_len,
    padded_tokens_and_mask,
)
from tests.reference_data import shared_path


def _vocab_dir() -> Path:
    return shared_path() / "reference" / "glide_text2im" / "vocab"


@cache
def _cases() -> list[dict]:
    return json.loads((shared_path() / "reference" / "glide_text2im" / "tokenizer.json").read_text())["cases"]


def _glide() -> GlideTokenizer:
    return glide_tokenizer(_vocab_dir())


def _clip() -> ClipTokenizer:
    return clip_tokenizer()


# ------------------------------------------------------------------------------------- reference vectors
@pytest.mark.parametrize("i", range(30))
def test_glide_tokenizer_matches_reference(i: int) -> None:
    case = _cases()[i]
    tok = _glide()
    ids = tok.encode(case["prompt"])
    assert ids == case["glide"]["tokens"], repr(case["prompt"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        padded, mask = tok.padded_tokens_and_mask(ids, 128)
    assert padded == case["glide"]["padded_tokens_128"]
    assert mask == case["glide"]["mask_128"]
    assert bool(caught) == (len(ids) > 128)
    # the reference only lower-cases (str.lower(): "İ" → "i̇", "ẞ" → "ß"), so decoding gives text.lower() back
    assert tok.decode(ids) == case["prompt"].lower()


@pytest.mark.parametrize("i", range(30))
def test_clip_tokenizer_matches_reference(i: int) -> None:
    case = _cases()[i]
    tok = _clip()
    ids = tok.encode(case["prompt"])
    assert ids == case["clip"]["tokens"], repr(case["prompt"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        padded, length = tok.padded_tokens_and_len(ids, 77)
    assert padded == case["clip"]["padded_tokens_77"]
    assert length == case["clip"]["len_77"]


def test_reference_cases_are_all_there() -> None:
    cases = _cases()
    assert len(cases) == 30
    assert any(len(c["glide"]["tokens"]) > 128 for c in cases)  # the truncation case
    assert any("<|endoftext|>" in c["prompt"] for c in cases)


def test_batch_helpers_return_model_ready_tensors() -> None:
    prompts = ["an oil painting of a corgi", ""]
    tokens, mask = _glide().tokens_and_mask(prompts, 128)
    assert tokens.dtype == torch.int64 and mask.dtype == torch.bool
    assert tokens.shape == mask.shape == (2, 128)
    assert tokens[0, :7].tolist() == [272, 3056, 12036, 286, 257, 1162, 12397]
    assert mask[0].sum() == 7
    assert (tokens[1] == 50256).all() and not mask[1].any()  # the unconditional row
    ctokens, lens = _clip().tokens_and_lens(prompts)
    assert ctokens.dtype == lens.dtype == torch.int64
    assert ctokens.shape == (2, 77) and lens.tolist() == [8, 2]
    assert ctokens[1, :3].tolist() == [49406, 49407, 0]


def test_truncation_warns() -> None:
    long_prompt = next(c["prompt"] for c in _cases() if len(c["glide"]["tokens"]) > 128)
    with pytest.warns(UserWarning, match="only the first 128"):
        tokens, mask = _glide().tokens_and_mask([long_prompt])
    assert mask.all()
    with pytest.warns(UserWarning, match="only the first 75"):
        _, lens = _clip().tokens_and_lens([long_prompt])
    assert lens.tolist() == [77]


def test_clip_cleaning_collapses_whitespace_and_drops_control_characters() -> None:
    tok = _clip()
    assert tok.clean("  A \t\n\u3000 B  ") == "a b"
    assert tok.clean("a\x1cb") == "ab"  # ftfy removes control characters before whitespace is collapsed


def test_endoftext_is_plain_text_for_glide_and_special_for_clip() -> None:
    glide_ids = _glide().encode("<|endoftext|>")
    assert 50256 not in glide_ids and len(glide_ids) > 1
    assert _clip().encode("<|endoftext|>") == [49407]


# ------------------------------------------------------------------------------------------- properties
@settings(max_examples=150, deadline=None)
@given(st.text())
def test_glide_roundtrip_any_unicode(text: str) -> None:
    tok = _glide()
    ids = tok.encode(text)
    assert all(0 <= i < 50257 for i in ids)
    assert tok.decode(ids) == text.lower()


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_clip_encodes_any_unicode(text: str) -> None:
    tok = _clip()
    ids = tok.encode(text)
    assert all(0 <= i < 49408 for i in ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        padded, length = tok.padded_tokens_and_len(ids)
    assert len(padded) == 77 and 2 <= length <= 77
    assert padded[0] == 49406 and padded[length - 1] == 49407 and all(p == 0 for p in padded[length:])


# ------------------------------------------------------------------------------------------- pure parts
def test_bytes_to_unicode_is_a_printable_bijection() -> None:
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in table.values())
    assert table[ord("a")] == "a" and table[ord(" ")] == "Ġ"


def test_bpe_merge_takes_lowest_rank_first_and_merges_left_to_right() -> None:
    ranks = {("a", "a"): 0, ("b", "c"): 1, ("aa", "bc"): 2}
    assert bpe_merge(list("aaa"), ranks) == ["aa", "a"]
    assert bpe_merge(list("aabc"), ranks) == ["aabc"]
    assert bpe_merge(list("xyz"), ranks) == ["x", "y", "z"]
    assert bpe_merge([], ranks) == []


def test_padding_helpers() -> None:
    assert padded_tokens_and_mask([], 4) == ([50256] * 4, [False] * 4)
    assert padded_tokens_and_mask([1, 2], 4) == ([1, 2, 50256, 50256], [True, True, False, False])
    with pytest.warns(UserWarning):
        assert padded_tokens_and_mask([1, 2, 3], 2) == ([1, 2], [True, True])
    assert padded_tokens_and_len([5], 4) == ([49406, 5, 49407, 0], 3)
    with pytest.raises(ValueError, match="text_ctx"):
        padded_tokens_and_mask([1], 0)


def test_bad_inputs_raise_value_errors() -> None:
    tok = _glide()
    with pytest.raises(ValueError, match="str"):
        tok.encode(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([50257])


# ---------------------------------------------------------------------------------------- vocabulary files
def test_gpt2_vocab_found_by_argument_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    paths = vocab.gpt2_vocab_paths(_vocab_dir())
    assert paths.encoder_json.name == "encoder.json.gz" and paths.vocab_bpe.name == "vocab.bpe.gz"
    monkeypatch.setenv(vocab.ENV_VAR, str(_vocab_dir()))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert vocab.gpt2_vocab_paths() == paths


def test_plain_vocab_files_verify_too(tmp_path: Path) -> None:
    for name in ("encoder.json", "vocab.bpe"):
        (tmp_path / name).write_bytes(gzip.decompress((_vocab_dir() / f"{name}.gz").read_bytes()))
    paths = vocab.gpt2_vocab_paths(tmp_path)
    assert paths.encoder_json == tmp_path / "encoder.json"
    assert GlideTokenizer.from_files(*paths).encode("hello world") == _glide().encode("hello world")


def test_missing_vocab_gives_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(vocab.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(vocab.VocabError) as err:
        vocab.gpt2_vocab_paths()
    message = str(err.value)
    assert "\n" not in message
    assert "encoder.json" in message and str(tmp_path / "glide_edu" / "vocab") in message
    assert vocab.ENV_VAR in message and "download" in message


def test_wrong_vocab_file_is_rejected(tmp_path: Path) -> None:
    shutil.copy(_vocab_dir() / "encoder.json.gz", tmp_path / "encoder.json.gz")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\nĠ t\n")
    with pytest.raises(vocab.VocabError, match=r"vocab\.bpe: .*sha256") as err:
        vocab.gpt2_vocab_paths(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "vocab.bpe").unlink()
    (tmp_path / "vocab.bpe.gz").write_bytes(b"not gzip")
    with pytest.raises(vocab.VocabError, match="cannot read"):
        vocab.gpt2_vocab_paths(tmp_path)


def test_clip_vocab_comes_verified_from_the_wheel() -> None:
    path = vocab.clip_vocab_path()
    assert path.name == "bpe_simple_vocab_16e6.txt.gz"
    assert _clip().n_vocab == 49408


def test_clip_bpe_in_glides_layout_for_a_miniature() -> None:
    """``tokenizer = "clip"``: CLIP's word pieces, no start token, end-token padding and a mask, like GLIDE's."""
    from glide_edu.train_text import tokenizer_for

    tok = tokenizer_for({"tokenizer": "clip"})
    ids = _clip().encode("a small red circle")
    assert len(ids) == 4  # one id per word: what the byte tokenizer spells in 18 ids
    tokens, mask = tok.tokens_and_mask(["a small red circle", ""], 8)
    assert tokens[0].tolist() == ids + [49407] * 4 and mask[0].tolist() == [True] * 4 + [False] * 4
    assert tokens[1].tolist() == [49407] * 8 and not mask[1].any()
    with pytest.warns(UserWarning):
        assert tok.tokens_and_mask("a small red circle above a blue square", 3)[1].all()
