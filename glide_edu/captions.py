"""The book's captioned pictures for text-to-image training: emoji and shapes, mixed, as GLIDE's tokens.

Two sources (both 32×32 RGB on white, see :mod:`glide_edu.emoji` and :mod:`glide_edu.shapes`):

* emoji — the CLDR name, and the name with an article ("a red apple"), so a prompt phrased either way
  finds the emoji (shapes captions all begin with an article; without the variant, the article alone
  would point a prompt at the shapes);
* shapes — procedural scenes with their captions.

:func:`book_captions` returns both with per-example sampling weights that give each source half of every
batch on average. :func:`tokenize_captions` turns captions into GLIDE's (tokens, mask) layout with any
tokenizer that has ``tokens_and_mask`` — for the book's miniature CLIP's BPE in GLIDE's layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from glide_edu.emoji import load_emoji
from glide_edu.shapes import load_shapes

SOURCES = ("emoji", "shapes")


class CaptionedData(NamedTuple):
    images: Tensor  # (N, 3, 32, 32) in [−1, 1]
    captions: list[str]
    source: list[str]  # "emoji" or "shapes", per example
    weights: Tensor  # (N,) sampling weights: each source gets its share of the batches


def with_article(name: str) -> str:
    """"red apple" → "a red apple", "octopus" → "an octopus" (by the first letter; good enough for names)."""
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def book_captions(split: str = "train", n_shapes: int = 20000, seed: int = 0,
                  emoji_share: float = 0.5) -> CaptionedData:
    """Emoji of ``split`` (each with its two phrasings) and ``n_shapes`` shapes scenes of ``split``.

    ``emoji_share``: the expected fraction of emoji in a batch drawn with ``weights``.
    """
    if not 0.0 <= emoji_share <= 1.0:
        raise ValueError(f"emoji_share={emoji_share}: give a fraction in [0, 1]")
    emoji = load_emoji(split)
    shapes = load_shapes(n_shapes, seed, split)
    names = list(emoji.captions)
    captions = names + [with_article(n) for n in names] + list(shapes.captions)
    images = torch.cat([emoji.images, emoji.images, shapes.images])
    source = ["emoji"] * (2 * len(names)) + ["shapes"] * len(shapes.captions)
    n_emoji, n_shapes_ = 2 * len(names), len(shapes.captions)
    weights = torch.cat([
        torch.full((n_emoji,), emoji_share / max(n_emoji, 1)),
        torch.full((n_shapes_,), (1.0 - emoji_share) / max(n_shapes_, 1)),
    ])
    return CaptionedData(images, captions, source, weights)


def tokenize_captions(tokenizer, captions: Sequence[str], text_ctx: int) -> tuple[Tensor, Tensor]:
    """(tokens (N, text_ctx) int64, mask (N, text_ctx) bool); captions longer than ``text_ctx`` are an error
    here (a training set should not be cut silently): raise text_ctx or shorten them."""
    too_long = [c for c in captions if len(tokenizer.encode(c)) > text_ctx]
    if too_long:
        raise ValueError(f"{len(too_long)} captions are longer than text_ctx={text_ctx} tokens "
                         f"(e.g. {too_long[0]!r}); raise text_ctx")
    return tokenizer.tokens_and_mask(list(captions), text_ctx)
