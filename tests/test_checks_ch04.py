"""The chapter-4 checkers accept correct answers and reject the typical wrong ones with a specific message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glide_edu.checks import ExerciseError
from glide_edu.checks.ch04 import (
    check_ddim_step,
    check_learned_log_variance,
    check_respace_betas,
    check_respacing_prediction,
    variance_ratio,
)
from glide_edu.respace import space_timesteps


# ------------------------------------------------------------------------ exercise 1: learned range
def _tables(betas):
    b = torch.as_tensor(betas, dtype=torch.float64)
    abar = torch.cumprod(1 - b, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    tilde = b * (1 - abar_prev) / (1 - abar)
    return b, tilde


def learned_log_variance(v, t, betas, *, no_frac=False, swap=False, linear=False, exp=False, t0="clip"):
    b, tilde = _tables(betas)
    if t0 == "clip":
        tilde = torch.cat([tilde[1:2], tilde[1:]])
    elif t0 == "beta":
        tilde = torch.cat([b[:1], tilde[1:]])
    lb, lt = b.log()[t].view(-1, 1, 1, 1), tilde.log()[t].view(-1, 1, 1, 1)
    frac = v.double() if no_frac else (v.double() + 1) / 2
    if swap:
        lb, lt = lt, lb
    if linear:
        out = torch.log(frac * lb.exp() + (1 - frac) * lt.exp())
    else:
        out = frac * lb + (1 - frac) * lt
    return (out.exp() if exp else out).to(v.dtype)


def test_learned_accepts_correct_and_numpy(capsys) -> None:
    assert check_learned_log_variance(learned_log_variance)
    assert "✅" in capsys.readouterr().out
    assert check_learned_log_variance(lambda v, t, b: learned_log_variance(v, t, b).numpy())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"no_frac": True}, "v = (u + 1)/2"),
        ({"swap": True}, "ends are swapped"),
        ({"linear": True}, "*log*-variances"),
        ({"exp": True}, "this is Σ itself"),
        ({"t0": "none"}, "NaN or inf at t = 0"),
        ({"t0": "beta"}, "β̃ of index 1"),
    ],
)
def test_learned_rejects_typical_mistakes(kwargs, message) -> None:
    with pytest.raises(ExerciseError, match=None) as err:
        check_learned_log_variance(lambda v, t, b: learned_log_variance(v, t, b, **kwargs))
    assert message in str(err.value)


def test_learned_rejects_wrong_shape_and_crash() -> None:
    with pytest.raises(ExerciseError, match=r"shape \(B,C,H,W\)"):
        check_learned_log_variance(lambda v, t, b: learned_log_variance(v, t, b)[:, 0])
    with pytest.raises(ExerciseError, match="raised ZeroDivisionError"):
        check_learned_log_variance(lambda v, t, b: 1 / 0)


# ---------------------------------------------------------------------- exercise 2: respaced betas
def respace_betas(abar, kept, *, sort=True, original=None, upside_down=False, first="one", return_abar=False,
                  drop_first=False):
    kept = sorted(kept) if sort else list(kept)
    a = np.asarray(abar)[kept]
    if return_abar:
        return a
    prev = np.append(1.0 if first == "one" else a[0], a[:-1])
    out = 1 - prev / a if upside_down else 1 - a / prev
    if original is not None:
        out = original[kept]
    return out[1:] if drop_first else out


def test_respace_accepts_correct_numpy_and_tensor() -> None:
    assert check_respace_betas(respace_betas)
    assert check_respace_betas(lambda a, k: torch.from_numpy(respace_betas(a, k)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"upside_down": True}, "upside down"),
        ({"first": "self"}, "wrong first beta"),
        ({"return_abar": True}, "these are ᾱ at the kept steps"),
        ({"sort": False}, "sort the kept steps"),
        ({"drop_first": True}, "the first kept step needs a beta too"),
    ],
)
def test_respace_rejects_typical_mistakes(kwargs, message) -> None:
    with pytest.raises(ExerciseError) as err:
        check_respace_betas(lambda a, k: respace_betas(a, k, **kwargs))
    assert message in str(err.value)


def test_respace_rejects_original_betas() -> None:
    def original(abar, kept):
        abar = np.asarray(abar)
        betas = 1 - abar / np.append(1.0, abar[:-1])
        return betas[sorted(kept)]

    with pytest.raises(ExerciseError, match="original β at the kept steps"):
        check_respace_betas(original)


# --------------------------------------------------------------------------- exercise 3: DDIM step
def ddim_step(x, eps, ab, abp, eta, z, *, no_shrink=False, half_sigma=False, no_noise=False, swap=False,
              x0_only=False):
    if swap:
        ab, abp = abp, ab
    x0 = (x - (1 - ab) ** 0.5 * eps) / ab**0.5
    if x0_only:
        return x0
    sigma = eta * (1 - ab / abp) ** 0.5 * (1.0 if half_sigma else ((1 - abp) / (1 - ab)) ** 0.5)
    direction = (1 - abp) ** 0.5 if no_shrink else (1 - abp - sigma**2) ** 0.5
    return abp**0.5 * x0 + direction * eps + (0.0 if no_noise else sigma) * z


def test_ddim_accepts_correct() -> None:
    assert check_ddim_step(ddim_step)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"no_shrink": True}, "√(1 − ᾱ_{t−1} − σ_t²)"),
        ({"half_sigma": True}, "first square-root factor is missing"),
        ({"no_noise": True}, "noise term σ_t·z is missing"),
        ({"swap": True}, "swapped"),
        ({"x0_only": True}, "this is x̂_0"),
    ],
)
def test_ddim_rejects_typical_mistakes(kwargs, message) -> None:
    with pytest.raises(ExerciseError) as err:
        check_ddim_step(lambda *a: ddim_step(*a, **kwargs))
    assert message in str(err.value)


# ---------------------------------------------------------- prediction: what does a respacing keep?
def test_respacing_prediction_accepts_the_live_truth(capsys) -> None:
    last = max(space_timesteps(1000, "ddim25"))
    assert last == (1000 // 25) * 24  # the arithmetic of the solution cell
    assert variance_ratio(10) > variance_ratio(1000) > 1  # β' ≥ β̃', and further apart with fewer steps
    assert check_respacing_prediction(last, " Apart")
    assert check_respacing_prediction(np.int64(last), "apart")
    assert f"'ddim25' ends at step {last}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ((999, "apart"), r"last_kept_ddim25: 999 is kept by the plain '25', which keeps both ends\. 'ddimN' keeps "
                         r"range\(0, 1000, 40\) = 0, 40, …, 960, so a chain respaced this way starts from x_960"),
        ((1000, "apart"), "the steps are 0-based, 999 is the last one — and 'ddim25' does not even reach it"),
        ((975, "apart"), "the stride is 1000 // 25 = 40, from 0"),
        ((960, "closer"), r"fixed_variances_10: they move apart — the median β'_i/β̃'_i is 1.4\d with 10 steps .*§ 7"),
        ((999, "closer"), r"(?s)last_kept_ddim25: .*\nfixed_variances_10: "),
        ((960, "same"), "fixed_variances_10: expected one of 'closer' or 'apart', got 'same'"),
        ((..., "apart"), "last_kept_ddim25: replace the placeholder"),
        (("960", "apart"), "last_kept_ddim25: expected an integer, got '960'"),
    ],
)
def test_respacing_prediction_rejects_wrong_answers(answers, message) -> None:
    with pytest.raises(ExerciseError, match=message):
        check_respacing_prediction(*answers)
