"""Checkers for the exercises of chapter 7 (text conditioning, GLIDE in miniature).

* :func:`check_bpe_merge` — byte-pair encoding's merge loop: fuse the adjacent pair with the lowest merge rank,
  every non-overlapping occurrence, until no adjacent pair is in the merge list;
* :func:`check_text_conditioning` — GLIDE's text path by hand: token + positional embeddings, the padding
  embedding where the mask is False, the transformer, the final LayerNorm, then the *last* position projected
  (added to the timestep embedding) and the whole sequence channels-first (the attention layers' extra keys
  and values);
* :func:`check_guidance_prediction` — a prediction about the shipped miniature, against the chapter's
  measured guidance sweep: does classifier-free guidance at s = 3 raise the oracle's whole-caption accuracy
  over s = 1, and how often does an s = 0 (caption-free) picture hold the caption's colour?

Each checker runs the reader's answer on fresh inputs, compares it with the library and, when it is wrong,
names the typical slip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from glide_edu.checks import (
    ExerciseError,
    call_reader,
    expect_bool,
    expect_close,
    expect_fraction,
    expect_shape,
    expect_tensor,
    passed,
    raise_if_matches,
)

__all__ = ["check_bpe_merge", "merge_variant", "check_text_conditioning", "check_guidance_prediction",
           "guidance_facts"]


# ------------------------------------------------------------------------- exercise 1: the merge loop
def merge_variant(symbols: Sequence[str], ranks: dict[tuple[str, str], int], pick: Callable | None = None,
                  overlap: bool = False, once: bool = False) -> list[str]:
    """A merge loop with the usual slips as knobs: ``pick`` chooses among the mergeable pairs (default: the
    lowest rank, BPE's rule), ``overlap`` resumes scanning right after a fused pair's first symbol, ``once`` stops
    after one merge. With no knobs it gives :func:`glide_edu.tokenizers.bpe_merge`'s answer."""
    choose = pick or (lambda pairs: min(pairs, key=ranks.__getitem__))
    word = list(symbols)
    while len(word) > 1:
        pairs = [p for p in zip(word, word[1:], strict=False) if p in ranks]
        if not pairs:
            break
        best = choose(pairs)
        out, i = [], 0
        while i < len(word):
            if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                out.append(word[i] + word[i + 1])
                i += 1 if overlap else 2
            else:
                out.append(word[i])
                i += 1
        word = out
        if once:
            break
    return word


def _merge_slips(symbols: list[str], ranks: dict[tuple[str, str], int]) -> dict[str, list[str]]:
    """Typical wrong merge loops' answers on ``symbols`` (hint → result)."""
    return {
        "you fuse the first mergeable pair from the left; fuse the pair with the LOWEST rank first, wherever it is":
            merge_variant(symbols, ranks, pick=lambda pairs: pairs[0]),
        "you fuse the pair with the highest rank; rank 0 is the merge learnt first and is applied first":
            merge_variant(symbols, ranks, pick=lambda pairs: max(pairs, key=ranks.__getitem__)),
        "you stop after one merge; repeat until no adjacent pair is in ranks": merge_variant(symbols, ranks, once=True),
        "overlapping occurrences: after fusing a pair at i, continue at i + 2 (('a','a','a') with ('a','a') gives "
        "['aa', 'a'])": merge_variant(symbols, ranks, overlap=True),
    }


def check_bpe_merge(fn: Callable) -> bool:
    """Check ``fn(symbols, ranks) -> list[str]``, BPE's merge loop, against :func:`glide_edu.tokenizers.bpe_merge`
    on CLIP's own merges (words of the book's captions, an accent, an emoji, a word CLIP splits) and on small
    rank tables built to expose the usual slips."""
    from glide_edu.tokenizers import bpe_merge, clip_tokenizer

    name = "bpe_merge"
    tok = clip_tokenizer()
    cases = [  # small tables first, each built so one slip shows (and is named) before the others can
        (["x", "y", "z"], {("x", "y"): 0, ("y", "z"): 1}),
        (["x", "y", "z"], {("x", "y"): 2, ("y", "z"): 1}),
        (["a", "a", "a"], {("a", "a"): 0, ("aa", "a"): 5}),
        (["a", "b", "a", "b"], {("a", "b"): 0, ("ab", "ab"): 1}),
        (["x", "y", "z", "w"], {("z", "w"): 0, ("x", "y"): 1, ("y", "zw"): 2, ("xy", "zw"): 3}),
        (["q"], {("q", "q"): 0}),
    ]
    cases += [(tok.word_symbols(w), tok.ranks) for w in ("apple", "triangle", "zany", "café", "🍎", "squares")]
    for symbols, ranks in cases:
        got = call_reader(fn, name, list(symbols), dict(ranks))
        if not isinstance(got, list | tuple) or not all(isinstance(s, str) for s in got):
            raise ExerciseError(f"{name} must return a list of str symbols, got {type(got).__name__}")
        want = bpe_merge(symbols, ranks)
        if list(got) == want:
            continue
        for hint, wrong in _merge_slips(list(symbols), ranks).items():
            if list(got) == wrong:
                raise ExerciseError(f"{name}({symbols}): {hint}")
        if "".join(got) != "".join(symbols):
            raise ExerciseError(f"{name}({symbols}) gave {list(got)}: merging only joins neighbours, so the symbols "
                                f"must still spell {''.join(symbols)!r}")
        raise ExerciseError(f"{name}({symbols}) gave {list(got)}, expected {want}")
    return passed(name, "lowest rank first, every non-overlapping occurrence, until no pair is in ranks")


def check_text_conditioning(fn: Callable, model: nn.Module) -> bool:
    """Check ``fn(model, tokens, mask) -> (xf_proj, xf_out)`` against ``model.get_text_emb``.

    ``xf_proj`` (B, 4·model_channels): the last position's output projected; ``xf_out`` (B, xf_width,
    text_ctx): the transformer's output, channels first.
    """
    from glide_edu.tokenizers import CLIP_N_VOCAB, byte_level_tokenizer, clip_tokenizer

    name = "text_conditioning"
    ctx = model.text_config.text_ctx
    clip_ids = model.token_embedding.num_embeddings == CLIP_N_VOCAB  # the miniature's tokenizer, else bytes
    tok = clip_tokenizer() if clip_ids else byte_level_tokenizer()
    tokens, mask = tok.tokens_and_mask(["a red circle", "two green squares", ""], ctx)
    with torch.no_grad():
        want_proj, want_out = model.get_text_emb(tokens, mask)
        got = call_reader(fn, name, model, tokens.clone(), mask.clone())
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise ExerciseError(f"{name} must return a pair (xf_proj, xf_out), got {type(got).__name__}")
    proj, out = expect_tensor(got[0], "xf_proj").detach(), expect_tensor(got[1], "xf_out").detach()
    if out.shape == want_out.transpose(1, 2).shape and out.shape != want_out.shape:
        raise ExerciseError("xf_out is (B, text_ctx, xf_width); the UNet's attention layers take it channels first, "
                            "(B, xf_width, text_ctx): permute(0, 2, 1)")
    expect_shape(out, want_out.shape, "xf_out", "(B, xf_width, text_ctx)")
    expect_shape(proj, want_proj.shape, "xf_proj", "(B, 4·model_channels)")
    with torch.no_grad():
        x = model.token_embedding(tokens) + model.positional_embedding[None]
        slips = {
            "the padding embedding is missing: where the mask is False, GLIDE replaces the token + position "
            "embedding by model.padding_embedding": model.final_ln(model.transformer(x)).permute(0, 2, 1),
        }
        h = torch.where(mask[..., None], x, model.padding_embedding[None])
        slips["the final LayerNorm (model.final_ln) is missing after the transformer"] = \
            model.transformer(h).permute(0, 2, 1)
    raise_if_matches(out, slips, "xf_out", atol=1e-4)
    expect_close(out, want_out, "xf_out", atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        first = model.transformer_proj(want_out[:, :, 0])
        pooled = model.transformer_proj(want_out.mean(-1))
    raise_if_matches(proj, {
        "xf_proj projects the FIRST position; GLIDE takes the LAST one (xf_out[:, :, -1]), which is a padding "
        "position for every short caption — the transformer has carried the caption there": first,
        "xf_proj projects the mean over positions; GLIDE takes the last position only": pooled,
    }, "xf_proj", atol=1e-4)
    expect_close(proj, want_proj, "xf_proj", atol=1e-4, rtol=1e-4)
    return passed(name, "embeddings, padding embedding, transformer, final LN; last position → xf_proj")


# ------------------------------------------------------------------------- exercise 3: a prediction
def guidance_facts(sweep: dict) -> dict[str, float]:
    """From chapter 7's guidance sweep (its ``rows``: split, scale, seed, per-attribute accuracies), the
    mean over seeds on trained pairs of: whole-caption accuracy at s = 1 and s = 3, colour accuracy at s = 0."""
    def mean(key: str, scale: float) -> float:
        vals = [r[key] for r in sweep["rows"] if r["split"] == "train" and r["scale"] == scale]
        if not vals:
            raise ExerciseError(f"the sweep has no trained-pair rows at s = {scale:g}; load the chapter's sweep "
                                "(cx.load_guidance_sweep()) and pass it to the checker")
        return sum(vals) / len(vals)

    return {"caption_s1": mean("caption", 1.0), "caption_s3": mean("caption", 3.0), "colour_s0": mean("colour", 0.0)}


def check_guidance_prediction(s3_beats_s1: object, colour_at_s0: object, sweep: dict, tolerance: float = 0.1) -> bool:
    """Check two predictions against the measured oracle scores of chapter 7's ``sweep`` (:func:`guidance_facts`).

    ``s3_beats_s1``: whole-caption accuracy at s = 3 is higher than at s = 1; ``colour_at_s0``: the share of
    s = 0 pictures holding a shape of the caption's colour (within ``tolerance``).
    """
    guess_s3 = expect_bool(s3_beats_s1, "s3_beats_s1")
    guess_colour = expect_fraction(colour_at_s0, "colour_at_s0")
    f = guidance_facts(sweep)
    truth_s3 = f["caption_s3"] > f["caption_s1"]
    problems = []
    if guess_s3 != truth_s3:
        problems.append(
            f"s3_beats_s1: whole-caption accuracy is {f['caption_s1']:.2f} at s = 1 and {f['caption_s3']:.2f} at "
            "s = 3. " + ("Guidance pushes ε̂ past ε(x_t | c), away from ε(x_t | ∅): the pictures become more "
                         "typical of their caption — colour, shape and count agree more often — at the price of "
                         "variety" if truth_s3 else "Guidance did not help this model here; § 5's sweep shows why"))
    if abs(guess_colour - f["colour_s0"]) > tolerance:
        problems.append(
            f"colour_at_s0: you predicted {guess_colour:.2f}; {f['colour_s0']:.2f} of the s = 0 pictures hold a "
            "shape of the caption's colour. At s = 0, ε̂ = ε(x_t | ∅): the caption is ignored and the model draws "
            "any picture of its training set — emoji and shapes scenes alike — so a caption's colour appears only "
            "as often as chance puts it there (five colours, and a scene has one to three shapes)")
    if problems:
        raise ExerciseError("\n".join(problems))
    return passed("guidance prediction",
                  f"caption accuracy {f['caption_s1']:.2f} at s = 1 → {f['caption_s3']:.2f} at s = 3; the caption's "
                  f"colour in {f['colour_s0']:.2f} of the unguided (s = 0) pictures")
