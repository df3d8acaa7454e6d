"""The chapter-6 checkers accept correct answers and reject the typical wrong ones with a specific message."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glide_edu.checks import ExerciseError
from glide_edu.checks.ch06 import (
    check_cfg_toy_prediction,
    check_drop_labels,
    check_guided_output,
    check_implicit_classifier_grad,
    toy_class_shares,
)
from glide_edu.toy import LabelledGaussianMixture


# ----------------------------------------------------------------------- exercise 1: guided output
def guided_output(cond, uncond, s, c, *, mode="right"):
    ec, eu, vc, vu = cond[:, :c], uncond[:, :c], cond[:, c:], uncond[:, c:]
    if mode == "all_channels":
        return uncond + s * (cond - uncond)
    if mode == "uncond_variance":
        return torch.cat([eu + s * (ec - eu), vu], 1)
    if mode == "swapped":
        return torch.cat([ec + s * (eu - ec), vc], 1)
    if mode == "ho_w":
        return torch.cat([(1 + s) * ec - s * eu, vc], 1)
    if mode == "no_uncond":
        return torch.cat([s * ec, vc], 1)
    if mode == "eps_only":
        return eu + s * (ec - eu)
    return torch.cat([eu + s * (ec - eu), vc], 1)


def test_guided_output_accepts_correct(capsys) -> None:
    assert check_guided_output(guided_output)
    assert "✅" in capsys.readouterr().out
    # the rearranged form s·ε_c + (1 − s)·ε_u is the same answer
    assert check_guided_output(
        lambda cond, uncond, s, c: torch.cat([s * cond[:, :c] + (1 - s) * uncond[:, :c], cond[:, c:]], 1)
    )


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("all_channels", "variance channels were guided too"),
        ("uncond_variance", "come from the unconditional branch"),
        ("swapped", "branches are swapped"),
        ("ho_w", "Ho & Salimans"),
        ("no_uncond", "drops the unconditional term"),
        ("eps_only", r"shape \(B,C,H,W\) = \(4, 2, 5, 5\) expected"),
    ],
)
def test_guided_output_rejects_typical_mistakes(mode, message) -> None:
    with pytest.raises(ExerciseError, match=message):
        check_guided_output(lambda cond, uncond, s, c: guided_output(cond, uncond, s, c, mode=mode))


def test_guided_output_reports_crashes() -> None:
    def broken(cond, uncond, s, c):
        raise RuntimeError("boom")

    with pytest.raises(ExerciseError, match="guided_output raised RuntimeError: boom"):
        check_guided_output(broken)


# ------------------------------------------------------------- exercise 2: the implicit classifier
def implicit_grad(ec, eu, abar, *, mode="right"):
    d = ec - eu
    return {
        "right": -d / math.sqrt(1 - abar),
        "sign": d / math.sqrt(1 - abar),
        "no_scale": -d,
        "times": -d * math.sqrt(1 - abar),
        "sqrt_abar": -d / math.sqrt(abar),
        "variance": -d / (1 - abar),
        "noise": -d / math.sqrt(1 - abar) + 0.01,
    }[mode]


def test_implicit_grad_accepts_correct(capsys) -> None:
    assert check_implicit_classifier_grad(implicit_grad)
    assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("sign", "sign is flipped"),
        ("no_scale", "scale is missing"),
        ("times", "multiplied by √\\(1−ᾱ_t\\) instead of dividing"),
        ("sqrt_abar", "divided by √ᾱ_t"),
        ("variance", "divided by \\(1−ᾱ_t\\), the variance"),
        ("noise", "values differ from the expected ones"),
    ],
)
def test_implicit_grad_rejects_typical_mistakes(mode, message) -> None:
    with pytest.raises(ExerciseError, match=message):
        check_implicit_classifier_grad(lambda ec, eu, a: implicit_grad(ec, eu, a, mode=mode))


# ------------------------------------------------------------------------ exercise 3: label dropout
def drop_labels(labels, p, null, generator, *, mode="right"):
    if mode == "inplace":
        out = labels
    else:
        out = labels.clone()
    if mode == "global_rng":
        r = torch.rand(labels.shape)  # ignores `generator`
    elif mode == "numpy_rng":
        r = torch.from_numpy(np.random.rand(*labels.shape))
    else:
        r = torch.rand(labels.shape, generator=generator)
    drop = r < p if mode != "inverted" else r >= p
    if mode == "fixed":
        drop = torch.rand(labels.shape, generator=torch.Generator().manual_seed(0)) < p
    out[drop] = 0 if mode == "zero" else null
    if mode == "float":
        out = out.float()
    return out


def test_drop_labels_accepts_correct(capsys) -> None:
    assert check_drop_labels(drop_labels)
    assert "✅" in capsys.readouterr().out
    assert check_drop_labels(
        lambda y, p, null, g: torch.where(torch.rand(y.shape, generator=g) < p, torch.full_like(y, null), y)
    )


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("inverted", "that is 1 − p_uncond"),
        ("zero", "must become the null label 10, not 0"),
        ("inplace", "modified in place"),
        ("float", "must stay integers"),
        ("fixed", "draw the randomness from `generator`"),
        ("global_rng", "equally seeded generators gave different drops"),
        ("numpy_rng", "equally seeded generators gave different drops"),
    ],
)
def test_drop_labels_rejects_typical_mistakes(mode, message) -> None:
    with pytest.raises(ExerciseError, match=message):
        check_drop_labels(lambda y, p, null, g: drop_labels(y, p, null, g, mode=mode))


def test_drop_labels_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    check_drop_labels(drop_labels)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------- prediction: what does guidance at s = 0 and s = 1 sample?
def test_cfg_toy_prediction_accepts_the_live_truth(capsys) -> None:
    shares = toy_class_shares()
    prior = float(LabelledGaussianMixture.example().class_weights[1])
    assert abs(shares[0.0][0] - prior) < 0.1 and shares[1.0][1] > 0  # the facts the solution cell states
    assert check_cfg_toy_prediction(prior, False)
    assert check_cfg_toy_prediction(np.float64(shares[0.0][0] + 0.09), np.bool_(False))
    assert "✅ guidance prediction: correct" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ((1.0, False), r"share_s0: you predicted 1.00, .* the label is not used at all.* p\(y = 1\) = 0.33"),
        ((0.0, False), r"share_s0: you predicted 0.00"),
        ((1 / 3, True), r"all_class1_at_s1: not every one — \d+ of the 300 samples .* tails included"),
        ((0.9, True), r"(?s)share_s0: .*\nall_class1_at_s1: "),
        ((33, False), r"share_s0: expected a number between 0 and 1, got 33 — write a percentage as a fraction"),
        ((..., False), "share_s0: replace the placeholder"),
        ((0.3, "no"), "all_class1_at_s1: expected True or False, got 'no'"),
        ((0.3, 1), "all_class1_at_s1: expected True or False, got 1"),
        ((True, False), "share_s0: expected a number between 0 and 1, got the boolean True"),
    ],
)
def test_cfg_toy_prediction_rejects_wrong_answers(answers, message) -> None:
    with pytest.raises(ExerciseError, match=message):
        check_cfg_toy_prediction(*answers)
