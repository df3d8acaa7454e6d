"""Chapter 1 checkers accept right answers and reject the usual wrong ones with specific feedback."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glide_edu.book.ch01 import noised_view, schedule_curves
from glide_edu.checks import ExerciseError
from glide_edu.checks.ch01 import (
    check_cosine_betas,
    check_forgetting_prediction,
    check_q_sample,
    check_snr_crossing,
    correlation_with_clean,
    drowning_steps,
)
from glide_edu.schedules import alphas_cumprod, snr

# ------------------------------------------------------------------------------------------ q_sample


def _coef(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return alphas_cumprod[t].view(-1, 1, 1, 1)


def q_sample_right(x0, t, noise, alphas_cumprod):
    ab = _coef(alphas_cumprod, t)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_sample_right_float32(x0, t, noise, alphas_cumprod):
    ab = alphas_cumprod.float()[t][:, None, None, None]
    return torch.sqrt(ab) * x0 + torch.sqrt(1 - ab) * noise


def q_sample_no_sqrt(x0, t, noise, alphas_cumprod):
    ab = _coef(alphas_cumprod, t)
    return ab * x0 + (1 - ab) * noise


def q_sample_variance_as_std(x0, t, noise, alphas_cumprod):
    ab = _coef(alphas_cumprod, t)
    return ab.sqrt() * x0 + (1 - ab) * noise


def q_sample_swapped(x0, t, noise, alphas_cumprod):
    ab = _coef(alphas_cumprod, t)
    return (1 - ab).sqrt() * x0 + ab.sqrt() * noise


def q_sample_one_step(x0, t, noise, alphas_cumprod):
    prev = torch.cat([torch.ones(1, dtype=alphas_cumprod.dtype), alphas_cumprod[:-1]])
    alpha = (alphas_cumprod / prev)[t].view(-1, 1, 1, 1)
    return alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise


def q_sample_one_based(x0, t, noise, alphas_cumprod):
    ab = alphas_cumprod[(t - 1).clamp(min=0)].view(-1, 1, 1, 1)
    ab = torch.where((t == 0).view(-1, 1, 1, 1), torch.ones_like(ab), ab)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_sample_no_reshape(x0, t, noise, alphas_cumprod):
    ab = alphas_cumprod[t]
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_sample_first_t(x0, t, noise, alphas_cumprod):
    ab = alphas_cumprod[t[0]]
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_sample_fresh_noise(x0, t, noise, alphas_cumprod):
    ab = _coef(alphas_cumprod, t)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn_like(x0)


def q_sample_squeezed(x0, t, noise, alphas_cumprod):
    return q_sample_right(x0, t, noise, alphas_cumprod).flatten(1)


def q_sample_in_place(x0, t, noise, alphas_cumprod):
    ab = _coef(alphas_cumprod, t)
    return x0.mul_(ab.sqrt()).add_((1 - ab).sqrt() * noise)


def q_sample_numpy(x0, t, noise, alphas_cumprod):
    return q_sample_right(x0, t, noise, alphas_cumprod).numpy()


def q_sample_minus(x0, t, noise, alphas_cumprod):
    ab = _coef(alphas_cumprod, t)
    return ab.sqrt() * x0 - (1 - ab).sqrt() * noise


def q_sample_slightly_off(x0, t, noise, alphas_cumprod):
    return q_sample_right(x0, t, noise, alphas_cumprod) * 1.01


@pytest.mark.parametrize("fn", [q_sample_right, q_sample_right_float32])
def test_q_sample_accepts_right_answers(fn, capsys) -> None:
    assert check_q_sample(fn) is True
    assert "✅ q_sample: correct" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("fn", "feedback"),
    [
        (q_sample_no_sqrt, "square roots are missing"),
        (q_sample_variance_as_std, "scale it by the standard deviation"),
        (q_sample_swapped, "used ᾱ_t where β_t belongs"),
        (q_sample_one_step, "one-step α_t = 1 − β_t"),
        (q_sample_one_based, r"off by one: you used alphas_cumprod\[t − 1\]"),
        (q_sample_no_reshape, r"raised RuntimeError.*reshape it to \(B, 1, 1, 1\)"),
        (q_sample_first_t, "every sample got the timestep of the first one"),
        (q_sample_fresh_noise, "use the noise argument"),
        (q_sample_squeezed, r"shape \(B,C,H,W\) = \(5, 3, 8, 8\) expected, got \(5, 192\)"),
        (q_sample_in_place, "modified its input x0 in place"),
        (q_sample_numpy, "expected a torch.Tensor, got ndarray"),
        (q_sample_minus, "the noise is subtracted"),
        (q_sample_slightly_off, "values differ from √ᾱ_t·x_0"),
    ],
)
def test_q_sample_rejects_typical_mistakes(fn, feedback) -> None:
    with pytest.raises(ExerciseError, match=feedback):
        check_q_sample(fn)


# ------------------------------------------------------------------------------------- cosine betas


def cosine_right(T, s=0.008, max_beta=0.999):
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    u = np.arange(T + 1) / T
    return np.minimum(1 - f(u[1:]) / f(u[:-1]), max_beta)


def cosine_right_torch(T, s=0.008, max_beta=0.999):
    u = torch.arange(T + 1, dtype=torch.float64) / T
    abar = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def cosine_no_cap(T, s=0.008, max_beta=0.999):
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    u = np.arange(T + 1) / T
    return 1 - f(u[1:]) / f(u[:-1])


def cosine_returns_abar(T, s=0.008, max_beta=0.999):
    return np.cumprod(1 - cosine_right(T, s, max_beta))


def cosine_no_square(T, s=0.008, max_beta=0.999):
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2)  # noqa: E731
    u = np.arange(T + 1) / T
    return np.minimum(1 - f(u[1:]) / f(u[:-1]), max_beta)


def cosine_no_offset(T, s=0.008, max_beta=0.999):
    return cosine_right(T, 0.0, max_beta)


def cosine_no_divide(T, s=0.008, max_beta=0.999):
    f = lambda u: np.cos((u + s) * np.pi / 2) ** 2  # noqa: E731
    u = np.arange(T + 1) / T
    return np.minimum(1 - f(u[1:]) / f(u[:-1]), max_beta)


def cosine_linspace(T, s=0.008, max_beta=0.999):
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    u = np.linspace(0, 1, T)
    betas = np.minimum(1 - f(u[1:]) / f(u[:-1]), max_beta)
    return np.append(betas, betas[-1])


def cosine_too_long(T, s=0.008, max_beta=0.999):
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    return 1 - f(np.arange(T + 1) / T)


def cosine_hard_coded(T, s=0.008, max_beta=0.999):
    return cosine_right(T)


def cosine_ratio(T, s=0.008, max_beta=0.999):
    return np.minimum(1 - cosine_no_cap(T, s, max_beta), max_beta)


def cosine_shifted(T, s=0.008, max_beta=0.999):
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    i = np.arange(T)
    return np.minimum(1 - f(i / T) / f((i - 1) / T), max_beta)


def cosine_2d(T, s=0.008, max_beta=0.999):
    return cosine_right(T, s, max_beta)[None]


def cosine_crashes(T, s=0.008, max_beta=0.999):
    raise NameError("name 'alpha_bar' is not defined")


def cosine_float32_numpy(T, s=0.008, max_beta=0.999):
    u = np.arange(T + 1, dtype=np.float32) / np.float32(T)
    f = np.cos((u + np.float32(s)) / np.float32(1 + s) * np.float32(np.pi / 2)) ** 2
    return np.minimum(np.float32(1) - f[1:] / f[:-1], np.float32(max_beta))


def cosine_float32_torch(T, s=0.008, max_beta=0.999):
    u = torch.arange(T + 1, dtype=torch.float32) / T
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def cosine_float64_cast_to_float32(T, s=0.008, max_beta=0.999):
    return cosine_right(T, s, max_beta).astype(np.float32)


def cosine_float32_no_cap(T, s=0.008, max_beta=0.999):
    return cosine_no_cap(T, s, max_beta).astype(np.float32)


def cosine_float16(T, s=0.008, max_beta=0.999):
    return torch.from_numpy(cosine_right(T, s, max_beta)).half()


@pytest.mark.parametrize(
    "fn", [cosine_right, cosine_right_torch, cosine_float32_numpy, cosine_float32_torch, cosine_float64_cast_to_float32]
)
def test_cosine_betas_accepts_right_answers(fn, capsys) -> None:
    assert check_cosine_betas(fn) is True
    assert "✅ cosine_betas: correct" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("fn", "feedback"),
    [
        (cosine_no_cap, "cap every β with min"),
        (cosine_returns_abar, "this looks like ᾱ_t, not β_t"),
        (cosine_no_square, r"\*square\* cos²"),
        (cosine_no_offset, "the offset s is missing"),
        (cosine_no_divide, "divided by 1 \\+ s"),
        (cosine_linspace, "not np.linspace"),
        (cosine_too_long, r"expected 1000 betas \(one per step\), got 1001 — T \+ 1 grid points"),
        (cosine_hard_coded, "ignores its s and max_beta arguments"),
        (cosine_ratio, "that is α_i"),
        (cosine_shifted, "shifted by one step"),
        (cosine_2d, r"expected a 1-D array of shape \(1000,\), got shape \(1, 1000\)"),
        (cosine_crashes, "raised NameError: name 'alpha_bar' is not defined"),
    ],
)
def test_cosine_betas_rejects_typical_mistakes(fn, feedback) -> None:
    with pytest.raises(ExerciseError, match=feedback):
        check_cosine_betas(fn)


def test_cosine_betas_float32_cap_hint_only_when_the_cap_is_exceeded() -> None:
    # float32(0.999) > 0.999 in float64: a capped float32 answer must not be told to cap its betas
    assert float(np.float32(0.999)) > 0.999
    assert check_cosine_betas(cosine_float32_numpy)
    with pytest.raises(ExerciseError, match="cap every β with min"):
        check_cosine_betas(cosine_float32_no_cap)
    with pytest.raises(ExerciseError, match="float16, which cannot resolve"):
        check_cosine_betas(cosine_float16)


@pytest.mark.parametrize(
    ("fn", "feedback"),
    [
        (cosine_no_square, r"\*square\* cos²"),
        (cosine_no_offset, "the offset s is missing"),
        (cosine_no_divide, "divided by 1 \\+ s"),
        (cosine_linspace, "not np.linspace"),
        (cosine_hard_coded, "ignores its s and max_beta arguments"),
        (cosine_ratio, "that is α_i"),
        (cosine_shifted, "shifted by one step"),
        (cosine_returns_abar, "this looks like ᾱ_t, not β_t"),
    ],
)
def test_cosine_betas_float32_mistakes_keep_their_feedback(fn, feedback) -> None:
    with pytest.raises(ExerciseError, match=feedback):
        check_cosine_betas(lambda T, **kw: np.asarray(fn(T, **kw), dtype=np.float32))


# ------------------------------------------------------------------------------------- SNR crossing


def crossing_right(betas):
    return int(np.argmax(snr(betas) <= 1))


def crossing_right_torch(betas):
    abar = torch.cumprod(1 - torch.as_tensor(betas), 0)
    return torch.nonzero(abar <= 0.5)[0, 0]


def crossing_one_based(betas):
    return crossing_right(betas) + 1


def crossing_last_above(betas):
    return crossing_right(betas) - 1


def crossing_one_step(betas):
    alpha = 1 - betas
    return int(np.argmax(alpha / (1 - alpha) <= 1))


def crossing_summed(betas):
    return int(np.argmax(np.cumsum(betas) >= 0.5))


def crossing_fraction(betas):
    return crossing_right(betas) / len(betas)


def crossing_float_value(betas):
    return float(snr(betas)[crossing_right(betas)])


def crossing_array(betas):
    return np.nonzero(snr(betas) <= 1)[0]


@pytest.mark.parametrize("fn", [crossing_right, crossing_right_torch])
def test_snr_crossing_accepts_right_answers(fn, capsys) -> None:
    assert check_snr_crossing(fn) is True
    assert "✅ snr_crossing: correct" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("fn", "feedback"),
    [
        (crossing_one_based, "one step too late"),
        (crossing_last_above, "the last index with SNR > 1"),
        (crossing_one_step, "one-step α_t = 1 − β_t"),
        (crossing_summed, "approximated 1 − ᾱ_t by Σβ_s"),
        (crossing_fraction, "looks like a fraction t/T"),
        (crossing_float_value, "expected an integer timestep index"),
        (crossing_array, "expected one integer index, got an array"),
    ],
)
def test_snr_crossing_rejects_typical_mistakes(fn, feedback) -> None:
    with pytest.raises(ExerciseError, match=feedback):
        check_snr_crossing(fn)


# --------------------------------------------------------------- prediction: which image drowns first


def test_correlation_with_clean_matches_the_sample_correlation() -> None:
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(1, 3, 8, 8, generator=gen) * 2 - 1, torch.randn(1, 3, 8, 8, generator=gen)
    abar = alphas_cumprod(schedule_curves("cosine", 50).betas)
    curve = correlation_with_clean(x0, eps, abar)
    for t in (0, 20, 49):
        x_t = math.sqrt(abar[t]) * x0.double() + math.sqrt(1 - abar[t]) * eps.double()
        direct = torch.corrcoef(torch.stack([x_t.flatten(), x0.double().flatten()]))[0, 1]
        assert curve[t] == pytest.approx(float(direct), abs=1e-9)


def test_forgetting_prediction_accepts_the_live_truth(capsys) -> None:
    steps = drowning_steps()
    assert steps["digit", "linear"] < steps["digit", "cosine"]  # the facts the solution cell states
    assert steps["cat", "cosine"] < steps["digit", "cosine"]
    assert check_forgetting_prediction("linear", " Cat ")
    out = capsys.readouterr().out
    assert "✅ forgetting prediction: correct" in out and f"t = {steps['digit', 'cosine']}" in out


@pytest.mark.parametrize(
    ("answers", "feedback"),
    [
        (("cosine", "cat"), r"first_to_forget: it is the linear schedule .* ᾱ_t panel of § 4.3"),
        (("linear", "digit"), r"drowns_first: the cat drowns first .* the contrast does: .* σ_0 = 0.3"),
        (("cosine", "digit"), r"(?s)first_to_forget: .*\ndrowns_first: "),  # both wrong: both explained
        ((..., "cat"), r"first_to_forget: replace the placeholder \.\.\. with your prediction"),
        (("linear", None), "drowns_first: replace the placeholder"),
        (("quadratic", "cat"), r"first_to_forget: expected one of 'linear' or 'cosine', got 'quadratic'"),
        (("linear", 3), r"drowns_first: expected one of the strings 'cat' or 'digit', got 3"),
    ],
)
def test_forgetting_prediction_rejects_wrong_answers(answers, feedback) -> None:
    with pytest.raises(ExerciseError, match=feedback):
        check_forgetting_prediction(*answers)


# ------------------------------------------------------------------------------------------ widgets


def test_noised_view_keeps_its_noise_and_matches_the_closed_form() -> None:
    x0 = torch.rand(2, 3, 8, 8) * 2 - 1
    first = noised_view(x0, 0, "linear", 1000, seed=3)
    last = noised_view(x0, 999, "cosine", 1000, seed=3)
    assert torch.equal(first.noise, last.noise)  # the same ε whatever t and schedule
    abar = alphas_cumprod(schedule_curves("cosine", 1000).betas)
    assert last.alpha_bar == pytest.approx(abar[999]) and last.snr == pytest.approx(abar[999] / (1 - abar[999]))
    expected = math.sqrt(last.alpha_bar) * x0 + math.sqrt(1 - last.alpha_bar) * last.noise
    torch.testing.assert_close(last.x_t, expected, atol=1e-5, rtol=1e-5)
    assert first.alpha_bar > 0.999 and (first.x_t - x0).abs().max() < 0.1
    assert "t = 999/999" in last.readout() and "SNR" in last.readout()
    with pytest.raises(ValueError, match="t must be an integer in 0..999"):
        noised_view(x0, 1000)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        noised_view(x0[0], 10)


def test_schedule_curves_are_consistent() -> None:
    for name in ("linear", "cosine"):
        c = schedule_curves(name, 200)
        assert c.betas.shape == c.alphas_cumprod.shape == c.log_snr.shape == c.fraction.shape == (200,)
        np.testing.assert_allclose(c.alphas_cumprod, alphas_cumprod(c.betas))
        np.testing.assert_allclose(np.exp(c.log_snr), snr(c.betas), rtol=1e-9)
        assert np.all(np.diff(c.log_snr) < 0) and c.fraction[-1] == 1.0
