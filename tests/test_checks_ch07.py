"""Chapter 7's checkers accept right answers and name the typical slips."""

from __future__ import annotations

import pytest
import torch

from glide_edu.checks import ExerciseError
from glide_edu.checks import ch07 as checks
from glide_edu.nn.presets import create_glide_model
from glide_edu.train_text import MINI_OPTIONS

SMALL = {**MINI_OPTIONS, "num_res_blocks": 1, "xf_width": 32, "xf_layers": 1, "text_ctx": 24}


def test_bpe_merge_accepts_a_right_loop() -> None:
    assert checks.check_bpe_merge(checks.merge_variant)  # no knobs: BPE's rule


def first_occurrence_only(symbols, ranks):
    """Right too: fusing one occurrence per round reaches the same symbols (the next round fuses the rest)."""
    word = list(symbols)
    while True:
        pairs = [(ranks[p], i) for i, p in enumerate(zip(word, word[1:], strict=False)) if p in ranks]
        if not pairs:
            return word
        _, i = min(pairs)
        word = word[:i] + [word[i] + word[i + 1]] + word[i + 2:]


def test_bpe_merge_accepts_a_different_right_loop() -> None:
    assert checks.check_bpe_merge(first_occurrence_only)


@pytest.mark.parametrize(("wrong", "message"), [
    (lambda s, r: checks.merge_variant(s, r, pick=lambda ps: ps[0]), "first mergeable pair"),
    (lambda s, r: checks.merge_variant(s, r, pick=lambda ps: max(ps, key=r.__getitem__)), "highest rank"),
    (lambda s, r: checks.merge_variant(s, r, once=True), "one merge"),
    (lambda s, r: checks.merge_variant(s, r, overlap=True), "overlapping"),
    (lambda s, r: list(s), "expected"),
    (lambda s, r: ["".join(s)], "expected"),
    (lambda s, r: "".join(s), "list of str"),
    (lambda s, r: checks.merge_variant(s, r) + ["</w>"], "must still spell"),
])
def test_bpe_merge_names_the_slips(wrong, message: str) -> None:
    with pytest.raises(ExerciseError, match=message):
        checks.check_bpe_merge(wrong)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = create_glide_model(SMALL).eval()
    with torch.no_grad():  # a random, not freshly initialised, network: no zero layers hide slips
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def by_hand(model, tokens, mask, *, padding=True, final_ln=True, position=-1, channels_first=True):
    x = model.token_embedding(tokens) + model.positional_embedding[None]
    if padding:
        x = torch.where(mask[..., None], x, model.padding_embedding[None])
    x = model.transformer(x)
    if final_ln:
        x = model.final_ln(x)
    proj = model.transformer_proj(x[:, position])
    return proj, (x.permute(0, 2, 1) if channels_first else x)


def test_text_conditioning_accepts_the_glide_path(model) -> None:
    assert checks.check_text_conditioning(by_hand, model)


@pytest.mark.parametrize(("kw", "message"), [
    ({"padding": False}, "padding embedding"),
    ({"final_ln": False}, "final LayerNorm"),
    ({"position": 0}, "FIRST position"),
    ({"channels_first": False}, "channels first"),
])
def test_text_conditioning_names_the_slips(model, kw: dict, message: str) -> None:
    with pytest.raises(ExerciseError, match=message):
        checks.check_text_conditioning(lambda m, t, k: by_hand(m, t, k, **kw), model)


def sweep_of(caption_s1: float, caption_s3: float, colour_s0: float) -> dict:
    rows = [{"split": "heldout", "scale": 1.0, "seed": 0, "caption": 0.9, "colour": 0.9}]  # ignored: held-out
    for seed, shift in ((0, -0.02), (1, 0.02)):  # two seeds around each mean
        rows += [{"split": "train", "scale": 0.0, "seed": seed, "caption": 0.0, "colour": colour_s0 + shift},
                 {"split": "train", "scale": 1.0, "seed": seed, "caption": caption_s1 + shift, "colour": 0.5},
                 {"split": "train", "scale": 3.0, "seed": seed, "caption": caption_s3 + shift, "colour": 0.5}]
    return {"rows": rows}


def test_guidance_prediction_is_judged_on_the_measured_numbers() -> None:
    sweep = sweep_of(0.2, 0.5, 0.35)
    assert checks.guidance_facts(sweep) == pytest.approx({"caption_s1": 0.2, "caption_s3": 0.5, "colour_s0": 0.35})
    assert checks.check_guidance_prediction(True, 0.3, sweep)
    with pytest.raises(ExerciseError, match="0.20 at s = 1 and 0.50"):
        checks.check_guidance_prediction(False, 0.35, sweep)
    with pytest.raises(ExerciseError, match="you predicted 0.20; 0.35"):
        checks.check_guidance_prediction(True, 0.2, sweep)
    assert checks.check_guidance_prediction(False, 0.35, sweep_of(0.2, 0.1, 0.35))
    with pytest.raises(ExerciseError, match="replace the placeholder"):
        checks.check_guidance_prediction(..., 0.3, sweep)
    with pytest.raises(ExerciseError, match="True or False"):
        checks.check_guidance_prediction(1, 0.3, sweep)
    with pytest.raises(ExerciseError, match="no trained-pair rows at s = "):
        checks.check_guidance_prediction(True, 0.3, {"rows": []})
