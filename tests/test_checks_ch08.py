"""Chapter 8's checkers accept right answers and name the typical slips."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from glide_edu.checks import ExerciseError
from glide_edu.checks.ch08 import (
    check_clip_guidance_grad,
    check_contrastive_loss,
    check_noise_prediction,
    first_chance_t,
)
from glide_edu.nn.clip import NoisedClip
from glide_edu.tokenizers import ByteClipTokenizer
from glide_edu.train_clip import MINI_CLIP


def loss_right(z_i, z_t, log_scale):
    logits = log_scale.exp() * z_i @ z_t.T
    target = torch.arange(len(z_i))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@pytest.mark.parametrize("slip, message", [
    (lambda z_i, z_t, s: F.cross_entropy(s.exp() * z_i @ z_t.T, torch.arange(len(z_i))), "symmetric"),
    (lambda z_i, z_t, s: loss_right(z_i, z_t, s.log()), "exp"),
    (lambda z_i, z_t, s: loss_right(z_i, z_t, torch.tensor(0.0)), "not scaled"),
    (lambda z_i, z_t, s: loss_right(z_i, z_t, s) * 2, "expected"),
    (lambda z_i, z_t, s: None, "returned NoneType"),  # the bare stub
])
def test_contrastive_loss_checker(slip, message: str) -> None:
    assert check_contrastive_loss(loss_right)
    with pytest.raises(ExerciseError, match=message):
        check_contrastive_loss(slip)


@pytest.fixture(scope="module")
def clip() -> NoisedClip:
    torch.manual_seed(0)
    model = NoisedClip(replace(MINI_CLIP, n_embd=32, n_head_state_text=16, n_head_text=2, n_xf_blocks_text=1,
                               n_head_state_image=16, n_head_image=2, n_xf_blocks_image=1, patch_size=8)).eval()
    model.tokenizer = ByteClipTokenizer()
    return model


def _grad(clip, x, t, tokens, lens, scale, *, factor=100.0, shown_t=None, unit=True, pixels=True):
    with torch.enable_grad():
        x_in = x.clone().requires_grad_(True)
        z_text = clip.text_encoder(tokens, lens)
        z_img = clip.image_encoder((x_in + 1) * 127.5 if pixels else x_in, t if shown_t is None else shown_t)
        if unit:
            z_text, z_img = F.normalize(z_text, dim=-1), F.normalize(z_img, dim=-1)
        (g,) = torch.autograd.grad((factor * (z_text * z_img).sum(-1)).sum(), x_in)
    return scale * g


@pytest.mark.parametrize("kwargs, message", [
    ({"factor": 1.0}, "logit scale"), ({"shown_t": torch.zeros(3, dtype=torch.long)}, "t = 0"),
    ({"unit": False}, "not normalised"), ({"pixels": False}, "0…255"), ({"factor": 50.0}, "expected"),
])
def test_guidance_gradient_checker_names_each_slip(clip, kwargs, message: str) -> None:
    with pytest.raises(ExerciseError, match=message):
        check_clip_guidance_grad(lambda *a: _grad(*a, **kwargs), clip)


def test_guidance_gradient_checker_accepts_the_gradient_and_wants_s(clip) -> None:
    assert math.isclose(math.exp(clip.logit_scale), 100.0, rel_tol=1e-6)
    assert check_clip_guidance_grad(lambda *a: _grad(*a), clip)
    with pytest.raises(ExerciseError, match="missing: multiply"):
        check_clip_guidance_grad(lambda c, x, t, tok, lens, s: _grad(c, x, t, tok, lens, 1.0), clip)


RESULT = {"t": [0, 200, 400, 600, 800], "chance": 0.01,
          "clips": {"clean": {"mean": [0.5, 0.2, 0.05, 0.02, 0.01]}, "noised": {"mean": [0.45, 0.4, 0.3, 0.12, 0.03]}}}


def test_noise_prediction_checker() -> None:
    assert first_chance_t(RESULT, "clean") == 400 and first_chance_t(RESULT, "noised") == 800
    assert check_noise_prediction(500, True, RESULT)
    with pytest.raises(ExerciseError, match="chance .* from t = 400"):
        check_noise_prediction(800, True, RESULT)
    with pytest.raises(ExerciseError, match="retrieves 0.300"):
        check_noise_prediction(400, False, RESULT)
    with pytest.raises(ExerciseError, match="placeholder"):
        check_noise_prediction(..., True, RESULT)
