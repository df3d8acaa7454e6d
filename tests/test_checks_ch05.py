"""The chapter-5 checkers accept correct answers and reject the typical wrong ones with a specific message."""

from __future__ import annotations

import pytest
import torch

from glide_edu.checks import ExerciseError
from glide_edu.checks.ch05 import check_classifier_gradient, check_guided_eps, check_guided_mean


# ------------------------------------------------------------------- exercise 1: classifier gradient
def classifier_gradient(clf, x, t, y, scale, *, what="log_softmax", sign=1.0, use_scale=True, t_zero=False):
    x = x.clone().requires_grad_(True)
    logits = clf(x, torch.zeros_like(t) if t_zero else t)
    table = {"log_softmax": logits.log_softmax(1), "logit": logits, "softmax": logits.softmax(1)}[what]
    (g,) = torch.autograd.grad(table.gather(1, y[:, None]).sum(), x)
    return sign * (scale if use_scale else 1.0) * g


def test_gradient_accepts_correct(capsys) -> None:
    assert check_classifier_gradient(classifier_gradient)
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"what": "logit"}, "raw logit"),
        ({"what": "softmax"}, "take the gradient of its log"),
        ({"sign": -1.0}, "sign is flipped"),
        ({"use_scale": False}, "scale s is missing"),
        ({"t_zero": True}, "given the timestep t"),
    ],
)
def test_gradient_rejects_typical_slips(kwargs, message) -> None:
    with pytest.raises(ExerciseError, match=message):
        check_classifier_gradient(lambda *a: classifier_gradient(*a, **kwargs))


def test_gradient_reports_crashes_and_shapes() -> None:
    with pytest.raises(ExerciseError, match="raised RuntimeError"):
        check_classifier_gradient(lambda clf, x, t, y, s: torch.autograd.grad(clf(x, t).sum(), x))
    with pytest.raises(ExerciseError, match="shape"):
        check_classifier_gradient(lambda clf, x, t, y, s: torch.zeros(3, 16, 16))


# ----------------------------------------------------------------------- exercise 2: guided mean
def test_guided_mean_accepts_correct_and_rejects_slips() -> None:
    assert check_guided_mean(lambda m, v, g, s: m + s * v * g)
    cases = {
        "not the standard deviation": lambda m, v, g, s: m + s * v.sqrt() * g,
        "scale s is missing": lambda m, v, g, s: m + v * g,
        "sign is flipped": lambda m, v, g, s: m - s * v * g,
        "Σ is missing": lambda m, v, g, s: m + s * g,
        "values differ": lambda m, v, g, s: m + 0.9 * s * v * g,
    }
    for message, fn in cases.items():
        with pytest.raises(ExerciseError, match=message):
            check_guided_mean(fn)


# ------------------------------------------------------------------------ exercise 3: guided ε
def test_guided_eps_accepts_correct_and_rejects_slips() -> None:
    assert check_guided_eps(lambda e, g, ab, s: e - (1 - ab) ** 0.5 * s * g)
    cases = {
        "sign is flipped": lambda e, g, ab, s: e + (1 - ab) ** 0.5 * s * g,
        r"not \(1−ᾱ_t\)": lambda e, g, ab, s: e - (1 - ab) * s * g,
        "not √ᾱ_t": lambda e, g, ab, s: e - ab**0.5 * s * g,
        "scale s is missing": lambda e, g, ab, s: e - (1 - ab) ** 0.5 * g,
    }
    for message, fn in cases.items():
        with pytest.raises(ExerciseError, match=message):
            check_guided_eps(fn)
    with pytest.raises(ExerciseError, match="expected a torch.Tensor"):
        check_guided_eps(lambda e, g, ab, s: 1.0)
