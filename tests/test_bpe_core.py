"""The byte-pair core both tokenizers share: one merge routine, one cache, an end-of-word convention.

Toy vocabularies only (no files needed); the reference vectors live in tests/test_tokenizers.py.
"""

from __future__ import annotations

import pytest
import regex

from glide_edu import tokenizers
from glide_edu.tokenizers import BytePairTokenizer, ClipTokenizer, byte_level_tokenizer, bytes_to_unicode

WORDS = regex.compile(r"\S+")


def _toy(merges: list[tuple[str, str]], end_of_word: str = "", specials: tuple[str, ...] = ()) -> BytePairTokenizer:
    base = list(bytes_to_unicode().values())
    symbols = base + [s + end_of_word for s in base] if end_of_word else list(base)
    symbols += ["".join(m) for m in merges] + list(specials)
    encoder = {s: i for i, s in enumerate(dict.fromkeys(symbols))}
    return BytePairTokenizer(encoder, merges, WORDS, end_of_word=end_of_word, specials=specials)


def test_end_of_word_marks_only_the_last_symbol_and_steers_the_merges() -> None:
    plain = _toy([("a", "a")])
    marked = _toy([("a", "a</w>")], end_of_word="</w>")
    assert plain.word_symbols("aaa") == ["a", "a", "a"]
    assert marked.word_symbols("aaa") == ["a", "a", "a</w>"]
    assert marked.word_symbols("") == []
    # GPT-2 style: fuse left to right; CLIP style: only the pair ending the word can fuse
    assert [plain.decoder[i] for i in plain.word_ids("aaa")] == ["aa", "a"]
    assert [marked.decoder[i] for i in marked.word_ids("aaa")] == ["a", "aa</w>"]
    assert marked.encode("aa a") == [marked.encoder["aa</w>"], marked.encoder["a</w>"]]


def test_specials_are_one_id_and_never_merged() -> None:
    tok = _toy([("<", "|")], specials=("<|x|>",))
    assert tok.word_ids("<|x|>") == [tok.encoder["<|x|>"]]
    assert [tok.decoder[i] for i in tok.word_ids("<|y|>")] == ["<|", "y", "|", ">"]


def test_both_tokenizers_go_through_the_one_merge_routine_and_cache_words(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    real = tokenizers.bpe_merge

    def counting(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
        calls.append(list(symbols))
        return real(symbols, ranks)

    monkeypatch.setattr(tokenizers, "bpe_merge", counting)
    glide = byte_level_tokenizer()
    clip = ClipTokenizer([("h", "i</w>")])
    assert glide.encode("hi hi") == [glide.encoder["h"], glide.encoder["i"], glide.encoder["Ġ"], *glide.encode("hi")]
    assert calls == [["h", "i"], ["Ġ", "h", "i"]]  # "hi" merged once, then served from the cache
    calls.clear()
    assert clip.encode("Hi hi") == [clip.encoder["hi</w>"]] * 2
    assert calls == [["h", "i</w>"]]


def test_unknown_ids_are_refused_with_the_vocabulary_range() -> None:
    tok = byte_level_tokenizer()
    with pytest.raises(ValueError, match=r"token id 999 is outside the vocabulary 0\.\.256"):
        tok.decode([1, 999])
    with pytest.raises(ValueError, match="encode\\(\\) takes a str"):
        tok.encode(b"bytes")  # type: ignore[arg-type]
