"""The chapter-5 checkers accept correct answers and reject the typical wrong ones with a specific message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glide_edu.checks import ExerciseError
from glide_edu.checks.ch05 import (
    _shipped_classifiers,
    check_classifier_gradient,
    check_classifier_timestep,
    check_guided_eps,
    check_guided_mean,
    check_half_accuracy_steps,
)
from glide_edu.respace import create_diffusion
from glide_edu.train_classifier import EVAL_TIMESTEPS, accuracy_vs_t


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


# ------------------------------------------------ prediction: the classifier's timestep on a respaced chain
def test_classifier_timestep_accepts_the_timestep_map_entry(capsys) -> None:
    truth = int(create_diffusion(1000, "cosine", "25").timestep_map[7])
    for answer in (truth, np.int64(truth), torch.tensor(truth), float(truth)):
        assert check_classifier_timestep(answer)
    assert f"original timestep {truth}" in capsys.readouterr().out
    assert check_classifier_timestep(int(create_diffusion(1000, "cosine", "10").timestep_map[3]), steps=10, step=3)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (7, "is the respaced index"),
        (280, "integer stride of 'ddim25'"),
        (992, "counted from the clean end"),
        (292, "close — 292"),
        (500, r"got 500, expected \d+\. Print create_diffusion\(1000, 'cosine', '25'\)\.timestep_map .* number 7"),
        (..., "replace the placeholder"),
        ("291", "expected an integer"),
        (291.5, "expected an integer"),
    ],
)
def test_classifier_timestep_rejects_typical_mistakes(answer, message) -> None:
    with pytest.raises(ExerciseError, match=message):
        check_classifier_timestep(answer)


# ---------------------------------------------------- experiment: where does each classifier fall below ½?
N_DIGITS = 40


def _live_half_steps(clean_shown_t0: bool = True) -> dict:
    classifiers, diffusion, x, y = _shipped_classifiers()
    out = {}
    for kind in ("noisy", "clean"):
        acc = accuracy_vs_t(classifiers[kind], diffusion, x[:N_DIGITS], y[:N_DIGITS], EVAL_TIMESTEPS,
                            clean=(kind == "clean" and clean_shown_t0))
        out[kind] = next((t for t in EVAL_TIMESTEPS if acc[t] < 0.5), None)
    return out


def test_half_accuracy_accepts_the_live_answer(capsys) -> None:
    truth = _live_half_steps()
    assert check_half_accuracy_steps(truth, N_DIGITS)
    assert f"(first {N_DIGITS} test digits)" in capsys.readouterr().out


# synthetic accuracy curves on EVAL_TIMESTEPS, to reach every branch of the feedback whatever the shipped
# classifiers' numbers are: the noisy one falls below ½ at 800, the clean one at 600 (at 700 if told the true t)
_CURVES = {
    ("noisy", True): [1.0, 1.0, 1.0, 1.0, 0.99, 0.98, 0.93, 0.84, 0.67, 0.40, 0.20, 0.11],
    ("clean", True): [1.0, 1.0, 1.0, 0.98, 0.94, 0.86, 0.71, 0.45, 0.40, 0.25, 0.17, 0.11],
    ("clean", False): [1.0, 1.0, 1.0, 0.99, 0.97, 0.93, 0.80, 0.62, 0.48, 0.30, 0.20, 0.11],
}


@pytest.fixture
def synthetic_curves(monkeypatch):
    import glide_edu.checks.ch05 as ch05

    def fake(kind, n_digits, timesteps, clean=None):
        shown_t0 = (kind == "clean") if clean is None else clean
        curve = dict(zip(EVAL_TIMESTEPS, _CURVES[kind, shown_t0 or kind == "noisy"], strict=True))
        return {t: curve[t] for t in timesteps}

    monkeypatch.setattr(ch05, "_accuracies", fake)
    monkeypatch.setattr(ch05, "_shipped_classifiers", lambda: (None, None, torch.zeros(359), None))


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"noisy": 600, "clean": 800}, r't_half\["noisy"\]: got t = 600 .* are the two swapped'),
        ({"noisy": 700, "clean": 600}, r't_half\["noisy"\]: .* 700 is the last step at or above 0.5'),
        ({"noisy": 800, "clean": 700}, r't_half\["clean"\]: .* must be shown t = 0 \(accuracy_vs_t'),
        ({"noisy": 800, "clean": 900}, r't_half\["clean"\]: got t = 900 \(accuracy 0.17\), .* is t = 600\.'),
        ({"noisy": 800, "clean": 750}, "is not on the grid EVAL_TIMESTEPS"),
        ({"noisy": None, "clean": 600}, r"None, but its accuracy falls below 0.5 at t = 800"),
        (800, r'expected a dict \{"noisy": t, "clean": t\}'),
        ({"noisy": 800, "clean": ...}, r't_half\["clean"\]: replace the placeholder'),
    ],
)
def test_half_accuracy_rejects_typical_mistakes(synthetic_curves, answer, message) -> None:
    with pytest.raises(ExerciseError, match=message):
        check_half_accuracy_steps(answer, N_DIGITS)


def test_half_accuracy_logic_on_synthetic_curves(synthetic_curves, capsys) -> None:
    assert check_half_accuracy_steps({"noisy": 800, "clean": 600}, N_DIGITS)
    assert "noisy 0.40 at t = 800; clean 0.45 at t = 600" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="n_digits must be an integer between 10 and 359"):
        check_half_accuracy_steps({"noisy": 800, "clean": 600}, 5)
