"""The chapter-2 checkers accept correct answers and reject the typical wrong ones with a specific message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glide_edu.checks import ExerciseError
from glide_edu.checks.ch02 import (
    check_mu_from_eps,
    check_one_shot_limit,
    check_p_step,
    check_posterior_mean_variance,
    check_variance_prediction,
    variance_study,
)


# --------------------------------------------------------------------------------- shared formulas
def _tables(betas, wrap_t0: bool = False):
    b = torch.as_tensor(betas, dtype=torch.float64)
    a = 1 - b
    abar = torch.cumprod(a, 0)
    first = abar[-1:] if wrap_t0 else torch.ones(1, dtype=torch.float64)
    abar_prev = torch.cat([first, abar[:-1]])
    return b, a, abar, abar_prev


def _at(table, t, like):
    return table[t].view(-1, *([1] * (like.ndim - 1)))


def posterior(x0, xt, t, betas, *, swap=False, off_by_one=False, no_sqrt=False, wrap_t0=False,
              var_kind="tilde", dtype_out=None):
    b, a, ab, abp = (_at(v, t, x0) for v in _tables(betas, wrap_t0))
    if off_by_one:
        abp = ab
    sa, sabp = (a, abp) if no_sqrt else (a.sqrt(), abp.sqrt())
    c1 = sabp * b / (1 - ab)
    c2 = sa * (1 - abp) / (1 - ab)
    if swap:
        c1, c2 = c2, c1
    mean = c1 * x0.double() + c2 * xt.double()
    var = {"tilde": b * (1 - abp) / (1 - ab), "beta": b, "std": (b * (1 - abp) / (1 - ab)).sqrt()}[var_kind]
    return mean.to(dtype_out or x0.dtype), var.to(dtype_out or x0.dtype)


def mu_from_eps(xt, t, eps, betas, *, bar_denominator=False, no_sqrt=False, sign=-1.0, sqrt_beta=False):
    b, a, ab, _ = (_at(v, t, xt) for v in _tables(betas))
    coef = (b.sqrt() if sqrt_beta else b) / ((1 - ab) if no_sqrt else (1 - ab).sqrt())
    denom = ab.sqrt() if bar_denominator else a.sqrt()
    return ((xt.double() + sign * coef * eps.double()) / denom).to(xt.dtype)


def p_step(model, xt, t, betas, noise, *, noise_at_t0=False, var_kind="tilde", scale_by_var=False):
    b, a, ab, abp = (_at(v, t, xt) for v in _tables(betas))
    eps = model(xt, t)
    mean = mu_from_eps(xt, t, eps, betas)
    var = b * (1 - abp) / (1 - ab) if var_kind == "tilde" else b
    if noise_at_t0:  # forgot the t = 0 mask while using the clipped variance (β̃ of index 1 at index 0)
        b_all, _, ab_all, _ = _tables(betas)
        tilde_1 = b_all[1] * (1 - ab_all[0]) / (1 - ab_all[1])
        var = torch.where((t == 0).view(-1, 1, 1, 1), tilde_1, var)
    scale = var if scale_by_var else var.sqrt()
    mask = torch.ones_like(scale) if noise_at_t0 else (t != 0).double().view(-1, 1, 1, 1)
    return (mean.double() + mask * scale * noise.double()).to(xt.dtype)


# ----------------------------------------------------------------------------- exercise 1: posterior
def test_posterior_accepts_correct(capsys) -> None:
    assert check_posterior_mean_variance(posterior)
    assert "✅" in capsys.readouterr().out


def test_posterior_accepts_per_sample_variance_and_float64() -> None:
    def per_sample(x0, xt, t, betas):
        mean, var = posterior(x0, xt, t, betas, dtype_out=torch.float64)
        return mean, var.view(-1)  # (B,)

    assert check_posterior_mean_variance(per_sample)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"swap": True}, "swapped"),
        ({"off_by_one": True}, "ᾱ_t where ᾱ_{t−1}"),
        ({"no_sqrt": True}, "square root is missing"),
        ({"wrap_t0": True}, "t = 0"),
        ({"var_kind": "beta"}, "fixed_large"),
        ({"var_kind": "std"}, "standard deviation"),
    ],
)
def test_posterior_rejects_typical_mistakes(kwargs, needle) -> None:
    with pytest.raises(ExerciseError, match=needle):
        check_posterior_mean_variance(lambda x0, xt, t, betas: posterior(x0, xt, t, betas, **kwargs))


def test_posterior_rejects_bad_return_values() -> None:
    with pytest.raises(ExerciseError, match="pair"):
        check_posterior_mean_variance(lambda x0, xt, t, betas: posterior(x0, xt, t, betas)[0])
    with pytest.raises(ExerciseError, match="shape"):
        check_posterior_mean_variance(lambda x0, xt, t, betas: (posterior(x0, xt, t, betas)[0][:, 0],
                                                                posterior(x0, xt, t, betas)[1]))
    with pytest.raises(ExerciseError, match="torch.Tensor"):
        check_posterior_mean_variance(lambda x0, xt, t, betas: (posterior(x0, xt, t, betas)[0].numpy(), 1.0))
    with pytest.raises(ExerciseError, match="differ"):  # an unrecognised error still fails
        check_posterior_mean_variance(lambda x0, xt, t, betas: (posterior(x0, xt, t, betas)[0] * 1.01,
                                                                posterior(x0, xt, t, betas)[1]))


def test_posterior_reports_a_crash() -> None:
    def crashes(x0, xt, t, betas):
        raise IndexError("boom")

    with pytest.raises(ExerciseError, match="IndexError: boom"):
        check_posterior_mean_variance(crashes)


# ----------------------------------------------------------------------------- exercise 2: ε → μ
def test_mu_from_eps_accepts_correct() -> None:
    assert check_mu_from_eps(mu_from_eps)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"bar_denominator": True}, "√ᾱ_t"),
        ({"no_sqrt": True}, "square root is missing"),
        ({"sign": 1.0}, "sign error"),
        ({"sqrt_beta": True}, "not √β_t"),
    ],
)
def test_mu_from_eps_rejects_typical_mistakes(kwargs, needle) -> None:
    with pytest.raises(ExerciseError, match=needle):
        check_mu_from_eps(lambda xt, t, eps, betas: mu_from_eps(xt, t, eps, betas, **kwargs))


def test_mu_from_eps_rejects_xstart_and_missing_division() -> None:
    def xstart(xt, t, eps, betas):
        _, _, ab, _ = (_at(v, t, xt) for v in _tables(betas))
        return ((xt.double() - (1 - ab).sqrt() * eps.double()) / ab.sqrt()).float()

    def no_div(xt, t, eps, betas):
        b, a, ab, _ = (_at(v, t, xt) for v in _tables(betas))
        return (xt.double() - b / (1 - ab).sqrt() * eps.double()).float()

    with pytest.raises(ExerciseError, match="x̂_0"):
        check_mu_from_eps(xstart)
    with pytest.raises(ExerciseError, match="divided by √α_t"):
        check_mu_from_eps(no_div)
    with pytest.raises(ExerciseError, match="shape"):
        check_mu_from_eps(lambda xt, t, eps, betas: mu_from_eps(xt, t, eps, betas)[:, 0])


# ------------------------------------------------------------------------- exercise 3: one reverse step
def test_p_step_accepts_correct() -> None:
    assert check_p_step(p_step)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"noise_at_t0": True}, "t = 0"),
        ({"var_kind": "beta"}, "fixed_large"),
        ({"scale_by_var": True}, "standard deviation"),
    ],
)
def test_p_step_rejects_typical_mistakes(kwargs, needle) -> None:
    with pytest.raises(ExerciseError, match=needle):
        check_p_step(lambda model, xt, t, betas, noise: p_step(model, xt, t, betas, noise, **kwargs))


def test_p_step_rejects_missing_noise_and_unused_model() -> None:
    def mean_only(model, xt, t, betas, noise):
        return mu_from_eps(xt, t, model(xt, t), betas)

    def ignores_model(model, xt, t, betas, noise):
        return p_step(lambda x, s: torch.zeros_like(x), xt, t, betas, noise)

    with pytest.raises(ExerciseError, match="noise term is missing"):
        check_p_step(mean_only)
    with pytest.raises(ExerciseError, match="never called"):
        check_p_step(ignores_model)


# ------------------------------------------------------------------------ exercise 4: one-shot limit
def test_one_shot_accepts_mean_in_both_shapes() -> None:
    assert check_one_shot_limit(lambda data: data.mean(0))
    assert check_one_shot_limit(lambda data: data.mean(0, keepdim=True))


@pytest.mark.parametrize(
    ("answer", "needle"),
    [
        (lambda data: torch.zeros(data.shape[1:]), "mean of the noise"),
        (lambda data: data.median(0).values, "median"),
        (lambda data: data[3], "single training image"),
        (lambda data: data.mean(), "single number"),
        (lambda data: data.mean(1), "shape"),
        (lambda data: data.mean(0) * 0.9, "differ"),
    ],
)
def test_one_shot_rejects_wrong_answers(answer, needle) -> None:
    with pytest.raises(ExerciseError, match=needle):
        check_one_shot_limit(answer)


# ---------------------------------------------------- prediction: which variance suits a 10-step chain?
def test_variance_prediction_accepts_the_live_truth(capsys) -> None:
    study = variance_study()
    assert study["spread"]["fixed_small"] < study["spread"]["fixed_large"] < 1.0  # the facts the solution states
    assert np.all((study["small"] < study["true"]) & (study["true"] < study["large"]))
    assert check_variance_prediction("fixed_large", "Between")
    assert "✅ variance prediction: correct" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        (("fixed_small", "between"), r"closer_spread: fixed_large comes closer .* too narrow"),
        (("fixed_large", "below"), r"true_variance: it lies between β̃_t and β_t at the 9 steps .* extreme cases"),
        (("fixed_large", "above"), r"true_variance: it lies between"),
        (("fixed_small", "above"), r"(?s)closer_spread: .*\ntrue_variance: "),
        ((..., "between"), "closer_spread: replace the placeholder"),
        (("large", "between"), r"closer_spread: expected one of 'fixed_small' or 'fixed_large', got 'large'"),
        (("fixed_large", 1), r"true_variance: expected one of the strings 'below' or 'between' or 'above', got 1"),
    ],
)
def test_variance_prediction_rejects_wrong_answers(answers, message) -> None:
    with pytest.raises(ExerciseError, match=message):
        check_variance_prediction(*answers)
