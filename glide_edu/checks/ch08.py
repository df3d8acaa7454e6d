"""Checkers for the exercises of chapter 8 (noised CLIP and CLIP guidance).

* :func:`check_contrastive_loss` — CLIP's symmetric cross-entropy over the N × N matrix of scaled cosine
  similarities: pictures pick their captions (rows) and captions pick their pictures (columns);
* :func:`check_clip_guidance_grad` — the CLIP guidance term s · ∇_{x_t} [exp(τ) · g(c)·f(x_t, t)] with unit
  vectors, the logit scale exp(τ) = 100 and the *original* timestep t given to the image encoder;
* :func:`check_noise_prediction` — a prediction about the chapter's measurement: at which noise level does the
  clean CLIP lose the caption, and does the noised CLIP still read it there?

Each checker runs the reader's answer on fresh inputs, compares it with the library and, when it is wrong,
names the typical slip.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from glide_edu.checks import (
    ExerciseError,
    call_reader,
    expect_bool,
    expect_close,
    expect_integer,
    expect_shape,
    expect_tensor,
    passed,
    raise_if_matches,
)

__all__ = ["check_contrastive_loss", "check_clip_guidance_grad", "check_noise_prediction", "first_chance_t"]


# ------------------------------------------------------------------------- exercise 1: the contrastive loss
def check_contrastive_loss(fn: Callable) -> bool:
    """Check ``fn(z_image, z_text, log_scale) -> loss``: unit vectors (N, D), a scalar log logit scale τ."""
    from glide_edu.train_clip import contrastive_loss

    name = "contrastive_loss"
    gen = torch.Generator().manual_seed(8)
    for n, d, tau in ((6, 16, math.log(1 / 0.07)), (9, 8, math.log(100.0)), (4, 32, 0.5)):
        z_i = F.normalize(torch.randn(n, d, generator=gen), dim=-1)
        z_t = F.normalize(z_i + 0.8 * torch.randn(n, d, generator=gen), dim=-1)  # matched pairs, imperfectly
        log_scale = torch.tensor(tau)
        got = call_reader(fn, name, z_i.clone(), z_t.clone(), log_scale.clone())
        if not isinstance(got, (torch.Tensor, int, float)):
            raise ExerciseError(f"{name} returned {type(got).__name__}; return the loss, a scalar tensor")
        got = got.detach() if isinstance(got, torch.Tensor) else torch.tensor(float(got))
        expect_shape(got.reshape(-1)[:1] if got.numel() == 1 else got, (1,), "loss", "a scalar")
        logits = log_scale.exp() * z_i @ z_t.T  # (N, N)
        target = torch.arange(n)
        raise_if_matches(got.reshape(()), {
            "only the pictures pick their captions (the rows); CLIP's loss is symmetric — average it with the "
            "captions picking their pictures (the columns, logits.T)": F.cross_entropy(logits, target),
            "only the captions pick their pictures (the columns); average with the rows (pictures → captions)":
                F.cross_entropy(logits.T, target),
            "the similarities are scaled by τ itself; the logit scale is exp(τ) (log_scale is stored as a log)":
                0.5 * (F.cross_entropy(tau * z_i @ z_t.T, target) + F.cross_entropy(tau * z_t @ z_i.T, target)),
            "the similarities are not scaled: multiply z_image @ z_text.T by exp(log_scale) before the softmax":
                0.5 * (F.cross_entropy(z_i @ z_t.T, target) + F.cross_entropy(z_t @ z_i.T, target)),
        }, "loss", atol=1e-5)
        expect_close(got.reshape(()), contrastive_loss(z_i, z_t, log_scale), "loss", atol=1e-5, rtol=1e-5)
    return passed(name, "exp(τ)·cosine similarities, cross-entropy over rows and columns, averaged")


# ------------------------------------------------------------------------- exercise 2: the guidance gradient
def check_clip_guidance_grad(fn: Callable, clip: nn.Module) -> bool:
    """Check ``fn(clip, x_t, t, tokens, lens, guidance_scale) -> grad`` (B, 3, S, S) against
    :meth:`glide_edu.nn.clip.NoisedClip.cond_fn` (a CLIP trained on noise, shown the original t)."""
    name = "clip_guidance_grad"
    size = clip.config.image_size
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 3, size, size, generator=gen) * 0.7
    t = torch.tensor([50, 400, 900])
    prompts = ["a red circle", "two blue squares", "a small green triangle above a purple square"]
    tokens, lens = clip.encode_prompts(prompts)
    scale = 2.5
    got = call_reader(fn, name, clip, x.clone(), t.clone(), tokens.clone(), lens.clone(), scale)
    got = expect_tensor(got, "grad").detach()
    expect_shape(got, x.shape, "grad", "(B, 3, S, S)")
    want = clip.cond_fn((tokens, lens), scale, clean=False)(x, t)
    size_of = float(want.abs().max())  # tolerances relative to the gradient's size (summation order varies)

    def grad_of(objective: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        with torch.enable_grad():
            x_in = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(objective(x_in).sum(), x_in)
        return g

    with torch.no_grad():
        z_text = clip.text_embeddings(tokens, lens)
    raw_text = clip.text_encoder(tokens, lens).detach()
    raise_if_matches(got, {
        "the gradient lacks CLIP's logit scale: the score is exp(logit_scale) · z_text · z_image = 100 × the cosine "
        "similarity": want / math.exp(clip.logit_scale),
        "guidance_scale is missing: multiply the gradient by s": want / scale,
        "the image encoder was shown t = 0; a noised CLIP must be told the (original) timestep of x_t":
            clip.cond_fn((tokens, lens), scale, clean=True)(x, t),
        "the embeddings are not normalised: CLIP compares unit vectors (normalize f(x_t, t) and g(c))":
            scale * math.exp(clip.logit_scale)
            * grad_of(lambda xi: (raw_text * clip.image_encoder((xi + 1) * 127.5, t)).sum(-1)),
        "the images went in as they are; f takes pixels in 0…255 — clip.image_embeddings(x_t, t) does that for "
        "you": scale * math.exp(clip.logit_scale)
            * grad_of(lambda xi: (z_text * F.normalize(clip.image_encoder(xi, t), dim=-1)).sum(-1)),
    }, "grad", atol=1e-3 * size_of, rtol=1e-3)  # each slip is off by far more than float32 rounding
    expect_close(got, want, "grad", atol=1e-5 * size_of, rtol=1e-4)
    return passed(name, "s · ∇_{x_t} [exp(τ) · g(c)·f(x_t, t)] with unit vectors and the original t")


# ------------------------------------------------------------------------- exercise 3: a prediction
def first_chance_t(result: Mapping[str, Any], name: str, margin: float = 0.05) -> int:
    """The first t of ``result`` (:func:`glide_edu.book.ch08.retrieval_by_noise`) from which CLIP ``name``'s
    retrieval stays within ``margin`` of chance."""
    row, chance = result["clips"][name]["mean"], result["chance"]
    for i, t in enumerate(result["t"]):
        if all(a <= chance + margin for a in row[i:]):
            return int(t)
    return int(result["t"][-1])


def check_noise_prediction(clean_lost_at: object, noised_reads_there: object, result: Mapping[str, Any],
                           tolerance: int = 200) -> bool:
    """Check two predictions against chapter 8's measured ``result``: ``clean_lost_at`` — the timestep from which
    the clean CLIP retrieves no better than chance (+0.05), within ``tolerance``; ``noised_reads_there`` — whether
    the noised CLIP is still more than 0.05 above chance at that timestep."""
    guess_t = expect_integer(clean_lost_at, "clean_lost_at")
    guess_reads = expect_bool(noised_reads_there, "noised_reads_there")
    lost = first_chance_t(result, "clean")
    i = result["t"].index(lost)
    noised = result["clips"]["noised"]["mean"][i]
    reads = noised > result["chance"] + 0.05
    problems = []
    if abs(guess_t - lost) > tolerance:
        problems.append(
            f"clean_lost_at: you predicted t = {guess_t}; the clean CLIP is at chance ({result['chance']:.3f} + 0.05) "
            f"from t = {lost} on. It never saw noise: x_t is, to it, a strange picture, and already at moderate t "
            "the noise dominates what it looks at, long before the picture is gone for a model trained on x_t")
    if guess_reads != reads:
        problems.append(
            f"noised_reads_there: at t = {lost} the noised CLIP retrieves {noised:.3f} against chance "
            f"{result['chance']:.3f} — " + ("still reading the caption: it learned which coarse colour and layout "
                                            "survive the noise at each t, and it is told t" if reads else
                                            "it too has lost the caption there"))
    if problems:
        raise ExerciseError("\n".join(problems))
    return passed("noise prediction", f"the clean CLIP is at chance from t = {lost}; the noised CLIP reads "
                  f"{noised:.3f} there (chance {result['chance']:.3f})")
