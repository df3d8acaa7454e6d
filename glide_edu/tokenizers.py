"""The two tokenizers GLIDE uses: GPT-2's byte-level BPE (diffusion models) and CLIP's BPE (noised CLIP).

Both are *byte-pair encodings*: text is cut into pre-tokens by a regular expression, each pre-token is
written as a sequence of symbols, and the pair of adjacent symbols with the best (lowest) merge rank is
fused, again and again, until no adjacent pair appears in the merge list. Each final symbol is an id.

Byte level. To make every string encodable, a pre-token is first turned into its UTF-8 bytes, and each
byte is shown as one printable unicode character (:func:`bytes_to_unicode`): the 188 printable Latin-1
bytes stand for themselves, the other 68 are moved to U+0100 and up. The vocabulary's 256 base symbols
are these characters, so no input is ever "unknown".

GLIDE (:class:`GlideTokenizer`): ``text.lower()``, the GPT-2 pattern, BPE, **no** start/end tokens, and
``<|endoftext|>`` typed in a prompt is ordinary text. Captions are truncated / padded to ``text_ctx``
(128) with 50256 and a boolean mask (True on real tokens).

CLIP (:class:`ClipTokenizer`): ftfy repair, HTML unescaping (twice), whitespace collapsed, lower-case,
CLIP's pattern, BPE whose word-final symbols carry ``</w>``; ``<|startoftext|>`` (49406) and
``<|endoftext|>`` (49407) wrap the ids, and the result is zero-padded to 77 with its length.

Both tokenizers are a :class:`BytePairTokenizer` (one merge routine, :func:`bpe_merge`, and one word cache);
they differ in text normalisation, pre-tokeniser, the end-of-word marker and special tokens.

The vocabulary files are located and verified by :mod:`glide_edu.vocab`.
"""

from __future__ import annotations

import html
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import regex  # \p{L} / \p{N} classes (the stdlib re has none)
import torch
from torch import Tensor

from glide_edu import vocab

GLIDE_TEXT_CTX = 128
GLIDE_N_VOCAB = 50257
GLIDE_END_TOKEN = 50256  # "<|endoftext|>", also the padding id

CLIP_TEXT_CTX = 77
CLIP_N_VOCAB = 49408
CLIP_START_TOKEN = 49406
CLIP_END_TOKEN = 49407
CLIP_PAD_TOKEN = 0

# GPT-2's pre-tokeniser: English contractions, a run of letters / of digits / of other symbols (each with
# at most one leading space), whitespace not followed by a non-space (so the last space of a run goes to
# the next word), any other whitespace.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# CLIP's: the two special markers, contractions, letter runs, SINGLE digits, other-symbol runs; no spaces.
CLIP_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Byte value → the printable character that stands for it in the BPE vocabularies."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def bpe_merge(symbols: Sequence[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply merges to ``symbols``: repeatedly fuse every occurrence of the lowest-ranked adjacent pair.

    Occurrences are fused left to right without overlap ("a a a" with pair (a, a) gives "aa a").
    """
    word = list(symbols)
    while len(word) > 1:
        best_rank, best = None, None
        for pair in zip(word, word[1:], strict=False):
            rank = ranks.get(pair)
            if rank is not None and (best_rank is None or rank < best_rank):
                best_rank, best = rank, pair
        if best is None:
            break
        merged, i = [], 0
        while i < len(word):
            if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                merged.append(word[i] + word[i + 1])
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return word


def _warn_truncated(n_tokens: int, ctx: int, what: str) -> None:
    warnings.warn(
        f"{what} prompt has {n_tokens} tokens; only the first {ctx} are used (the rest is cut off)",
        UserWarning,
        stacklevel=3,
    )


class BytePairTokenizer:
    """The core both tokenizers share: pre-tokens → byte symbols → :func:`bpe_merge` → ids, memoised.

    Args:
        encoder: symbol → id.
        merges: merge pairs in rank order (rank = position).
        pattern: the compiled pre-tokeniser; ``encode`` runs it over :meth:`normalize`'s output.
        end_of_word: suffix glued to a word's last byte symbol before merging ("" for GPT-2, "</w>" for CLIP).
        specials: pre-tokens that are one id as they stand (CLIP's start / end markers).
    """

    cache_size = 100_000  # words remembered by word_ids

    def __init__(
        self,
        encoder: dict[str, int],
        merges: Sequence[tuple[str, str]],
        pattern: regex.Pattern[str],
        end_of_word: str = "",
        specials: Iterable[str] = (),
    ) -> None:
        self.encoder = dict(encoder)
        self.decoder = {i: s for s, i in self.encoder.items()}
        self.ranks = {tuple(pair): r for r, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.pattern = pattern
        self.end_of_word = end_of_word
        self.specials = frozenset(specials)
        self._cache: dict[str, list[int]] = {}

    @property
    def n_vocab(self) -> int:
        return len(self.encoder)

    def normalize(self, text: str) -> str:
        """The text the pre-tokeniser sees (identity here; each tokenizer overrides it)."""
        return text

    def word_symbols(self, piece: str) -> list[str]:
        """``piece``'s UTF-8 bytes as base symbols, ``end_of_word`` glued to the last one."""
        symbols = [self.byte_encoder[b] for b in piece.encode("utf-8")]
        if symbols and self.end_of_word:
            symbols[-1] += self.end_of_word
        return symbols

    def word_ids(self, piece: str) -> list[int]:
        """Ids of one pre-token: a special's own id, else the ids of ``bpe_merge(word_symbols(piece))``; cached."""
        ids = self._cache.get(piece)
        if ids is None:
            if piece in self.specials:
                ids = [self.encoder[piece]]
            else:
                ids = [self.encoder[s] for s in bpe_merge(self.word_symbols(piece), self.ranks)]
            if len(self._cache) < self.cache_size:
                self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Ids of ``normalize(text)``, pre-token by pre-token (no start / end tokens added)."""
        if not isinstance(text, str):
            raise ValueError(f"encode() takes a str, got {type(text).__name__}")
        ids: list[int] = []
        for piece in self.pattern.findall(self.normalize(text)):
            ids.extend(self.word_ids(piece))
        return ids

    def joined_symbols(self, tokens: Iterable[int]) -> str:
        """The vocabulary symbols of ``tokens`` joined into one string (before bytes are decoded)."""
        try:
            return "".join(self.decoder[int(t)] for t in tokens)
        except KeyError as err:
            raise ValueError(f"token id {err.args[0]} is outside the vocabulary 0..{self.n_vocab - 1}") from None


class GlideTokenizer(BytePairTokenizer):
    """GPT-2 byte-level BPE as GLIDE's diffusion models read it (``n_vocab`` 50257, end/pad 50256).

    Args:
        encoder: token string → id (GPT-2's ``encoder.json``).
        merges: merge pairs in rank order (GPT-2's ``vocab.bpe`` without its version line).
    """

    def __init__(self, encoder: dict[str, int], merges: Sequence[tuple[str, str]]) -> None:
        super().__init__(encoder, merges, regex.compile(GPT2_PATTERN))

    @classmethod
    def from_files(cls, encoder_json: str | os.PathLike[str], vocab_bpe: str | os.PathLike[str]) -> GlideTokenizer:
        """Read ``encoder.json`` and ``vocab.bpe`` (either may be ``.gz``); no hash check here."""
        encoder = json.loads(vocab.read_bytes(encoder_json).decode("utf-8"))
        lines = vocab.read_bytes(vocab_bpe).decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1:] if line.strip()]  # line 0: "#version: 0.2"
        return cls(encoder, merges)

    @property
    def end_token(self) -> int:
        return self.n_vocab - 1

    def normalize(self, text: str) -> str:
        """GLIDE lower-cases and nothing else (``<|endoftext|>`` in a prompt stays plain text)."""
        return text.lower()

    def decode(self, tokens: Iterable[int]) -> str:
        """Text of ``tokens`` (bytes that do not form valid UTF-8 become U+FFFD)."""
        text = self.joined_symbols(tokens)
        return bytes(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace")

    def padded_tokens_and_mask(
        self, tokens: Sequence[int], text_ctx: int = GLIDE_TEXT_CTX
    ) -> tuple[list[int], list[bool]]:
        """Truncate to ``text_ctx`` (warning if anything is cut), pad with the end token; mask True on real ids."""
        return padded_tokens_and_mask(tokens, text_ctx, self.end_token)

    def tokens_and_mask(self, prompts: str | Sequence[str], text_ctx: int = GLIDE_TEXT_CTX) -> tuple[Tensor, Tensor]:
        """A batch for the GLIDE models: tokens (B, text_ctx) int64 and mask (B, text_ctx) bool.

        The empty prompt ``""`` gives the unconditional row (all padding, all-False mask).
        """
        return glide_batch(self, prompts, text_ctx)


def glide_batch(tokenizer: Any, prompts: str | Sequence[str], text_ctx: int) -> tuple[Tensor, Tensor]:
    """GLIDE's caption batch with ``tokenizer``'s ``encode`` and ``end_token``: tokens (B, text_ctx) int64, each
    row :func:`padded_tokens_and_mask`, and mask (B, text_ctx) bool."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    rows = [padded_tokens_and_mask(tokenizer.encode(p), text_ctx, tokenizer.end_token) for p in prompts]
    tokens = torch.tensor([r[0] for r in rows], dtype=torch.long).view(len(rows), text_ctx)
    mask = torch.tensor([r[1] for r in rows], dtype=torch.bool).view(len(rows), text_ctx)
    return tokens, mask


def padded_tokens_and_mask(
    tokens: Sequence[int], text_ctx: int = GLIDE_TEXT_CTX, end_token: int = GLIDE_END_TOKEN
) -> tuple[list[int], list[bool]]:
    """GLIDE's caption layout: ``tokens[:text_ctx]`` then ``end_token`` padding; mask True on real tokens."""
    if text_ctx < 1:
        raise ValueError(f"text_ctx must be positive, got {text_ctx}")
    tokens = [int(t) for t in tokens]
    if len(tokens) > text_ctx:
        _warn_truncated(len(tokens), text_ctx, "GLIDE")
        tokens = tokens[:text_ctx]
    n_pad = text_ctx - len(tokens)
    return tokens + [end_token] * n_pad, [True] * len(tokens) + [False] * n_pad


class ClipTokenizer(BytePairTokenizer):
    """CLIP's BPE (49,408 ids: 256 bytes, the same 256 with ``</w>``, 48,894 merges, start and end)."""

    def __init__(self, merges: Sequence[tuple[str, str]]) -> None:
        import ftfy  # noqa: F401  (fail early, with the import error, if ftfy is missing)

        base = list(bytes_to_unicode().values())
        specials = ["<|startoftext|>", "<|endoftext|>"]
        symbols = base + [s + "</w>" for s in base] + ["".join(m) for m in merges] + specials
        encoder = {s: i for i, s in enumerate(symbols)}
        pattern = regex.compile(CLIP_PATTERN, regex.IGNORECASE)
        super().__init__(encoder, merges, pattern, end_of_word="</w>", specials=specials)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ClipTokenizer:
        """Read ``bpe_simple_vocab_16e6.txt(.gz)``: a version line, then merges; CLIP keeps the first 48,894."""
        lines = vocab.read_bytes(path).decode("utf-8").split("\n")
        n_merges = CLIP_N_VOCAB - 2 * 256 - 2
        merges = [tuple(line.split()) for line in lines[1 : 1 + n_merges]]
        return cls(merges)

    @staticmethod
    def clean(text: str) -> str:
        """ftfy repair, HTML unescape twice, whitespace runs → one space, strip, lower-case."""
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return regex.sub(r"\s+", " ", text).strip().lower()

    def normalize(self, text: str) -> str:
        """CLIP's :meth:`clean`."""
        return self.clean(text)

    def decode(self, tokens: Iterable[int]) -> str:
        """Approximate text (``</w>`` becomes a space); cleaning is not invertible."""
        text = self.joined_symbols(tokens).replace("</w>", " ")
        return bytes(self.byte_decoder.get(c, 32) for c in text).decode("utf-8", errors="replace").strip()

    @property
    def end_token(self) -> int:
        return self.encoder["<|endoftext|>"]

    def tokens_and_mask(self, prompts: str | Sequence[str], text_ctx: int = GLIDE_TEXT_CTX) -> tuple[Tensor, Tensor]:
        """GLIDE's caption layout over CLIP's BPE (a miniature's ``tokenizer = "clip"``): tokens (B, text_ctx)
        without a start token, padded with the end token, and mask (B, text_ctx) bool; ``""`` is all padding."""
        return glide_batch(self, prompts, text_ctx)

    def padded_tokens_and_len(self, tokens: Sequence[int], text_ctx: int = CLIP_TEXT_CTX) -> tuple[list[int], int]:
        """``[start] + tokens[:text_ctx-2] + [end]``, zero-padded to ``text_ctx``, and its unpadded length."""
        return padded_tokens_and_len(tokens, text_ctx)

    def tokens_and_lens(self, prompts: str | Sequence[str], text_ctx: int = CLIP_TEXT_CTX) -> tuple[Tensor, Tensor]:
        """A batch for the noised CLIP text encoder: tokens (B, text_ctx) int64 and lengths (B,) int64."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        rows = [self.padded_tokens_and_len(self.encode(p), text_ctx) for p in prompts]
        tokens = torch.tensor([r[0] for r in rows], dtype=torch.long).view(len(rows), text_ctx)
        return tokens, torch.tensor([r[1] for r in rows], dtype=torch.long)


def padded_tokens_and_len(tokens: Sequence[int], text_ctx: int = CLIP_TEXT_CTX) -> tuple[list[int], int]:
    """CLIP's layout: start token, at most ``text_ctx - 2`` ids, end token, zeros; length counts start and end."""
    if text_ctx < 2:
        raise ValueError(f"text_ctx must be at least 2 (start and end token), got {text_ctx}")
    tokens = [int(t) for t in tokens]
    if len(tokens) > text_ctx - 2:
        _warn_truncated(len(tokens), text_ctx - 2, "CLIP")
        tokens = tokens[: text_ctx - 2]
    row = [CLIP_START_TOKEN, *tokens, CLIP_END_TOKEN]
    return row + [CLIP_PAD_TOKEN] * (text_ctx - len(row)), len(row)


@lru_cache(maxsize=4)
def _glide_tokenizer(paths: vocab.GPT2VocabPaths) -> GlideTokenizer:
    return GlideTokenizer.from_files(paths.encoder_json, paths.vocab_bpe)


def glide_tokenizer(vocab_dir: str | os.PathLike[str] | None = None) -> GlideTokenizer:
    """GLIDE's tokenizer from verified GPT-2 files (see :func:`glide_edu.vocab.gpt2_vocab_paths`); cached."""
    return _glide_tokenizer(vocab.gpt2_vocab_paths(vocab_dir))


@lru_cache(maxsize=4)
def _clip_tokenizer(path: str) -> ClipTokenizer:
    return ClipTokenizer.from_file(path)


def clip_tokenizer(vocab_dir: str | os.PathLike[str] | None = None) -> ClipTokenizer:
    """CLIP's tokenizer from the verified vocabulary (see :func:`glide_edu.vocab.clip_vocab_path`); cached."""
    return _clip_tokenizer(str(vocab.clip_vocab_path(vocab_dir)))


def byte_level_tokenizer() -> GlideTokenizer:
    """GPT-2's byte-level scheme with **no merges**: one id per UTF-8 byte (0…255), end/pad id 256.

    A stand-in for tiny random-weight models when GPT-2's vocabulary files are not at hand (the book's CI);
    the released checkpoints need the real :func:`glide_tokenizer`.
    """
    encoder = {symbol: i for i, symbol in enumerate(bytes_to_unicode().values())}
    encoder["<|endoftext|>"] = len(encoder)
    return GlideTokenizer(encoder, [])


class ByteClipTokenizer:
    """CLIP's caption layout over UTF-8 bytes, for the book's miniature CLIPs (nothing to download):
    ``[256] + bytes + [257]`` zero-padded, lengths counting start and end; 258 ids."""

    start_token, end_token, n_vocab = 256, 257, 258

    def encode(self, text: str) -> list[int]:
        """Lower-cased, whitespace runs collapsed, as UTF-8 bytes."""
        return list(" ".join(text.lower().split()).encode("utf-8"))

    def tokens_and_lens(self, prompts: str | Sequence[str], text_ctx: int) -> tuple[Tensor, Tensor]:
        """tokens (B, text_ctx) int64 and lengths (B,) int64, like :meth:`ClipTokenizer.tokens_and_lens`."""
        if text_ctx < 2:
            raise ValueError(f"text_ctx must be at least 2 (start and end token), got {text_ctx}")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        tokens = torch.zeros(len(prompts), text_ctx, dtype=torch.long)
        lens = torch.zeros(len(prompts), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids = self.encode(prompt)
            if len(ids) > text_ctx - 2:
                _warn_truncated(len(ids), text_ctx - 2, "CLIP")
                ids = ids[: text_ctx - 2]
            row = [self.start_token, *ids, self.end_token]
            tokens[i, : len(row)] = torch.tensor(row)
            lens[i] = len(row)
        return tokens, lens
