"""The chapter-3 checkers accept correct answers and reject the typical wrong ones with a specific message."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glide_edu.checks import ExerciseError
from glide_edu.checks.ch03 import (
    ToyEpsModel,
    check_elbo_weight,
    check_l_simple,
    check_timestep_embedding,
    check_weight_prediction,
    elbo_weights_cosine,
    kl_per_squared_error,
)
from glide_edu.schedules import cosine_betas, snr


# ------------------------------------------------------------------------------- exercise 1: L_simple
def l_simple(model, x0, t, noise, alphas_cumprod, *, swap=False, no_sqrt=False, prev=False, target="eps",
             model_input="xt", reduce="mean", squared=True, detach=False, t_shift=0):
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float32)
    if prev:
        abar = torch.roll(abar, 1)
    ab = abar[t].view(-1, 1, 1, 1)
    s, n = (ab, 1 - ab) if no_sqrt else (ab.sqrt(), (1 - ab).sqrt())
    if swap:
        s, n = n, s
    x_t = s * x0 + n * noise
    pred = model(x_t if model_input == "xt" else x0, t + t_shift)
    tgt = noise if target == "eps" else x0
    err = (tgt - pred) ** 2 if squared else (tgt - pred).abs()
    loss = {"mean": err.mean(), "sum": err.sum(), "per_sample": err.flatten(1).mean(1),
            "pixel_sum": err.flatten(1).sum(1).mean(), "rms": err.mean().sqrt()}[reduce]
    return loss.detach() if detach else loss


def test_l_simple_accepts_correct(capsys) -> None:
    assert check_l_simple(l_simple)
    assert "✅" in capsys.readouterr().out


def test_l_simple_accepts_float64_and_numpy_tables() -> None:
    def f64(model, x0, t, noise, alphas_cumprod):
        ab = torch.from_numpy(alphas_cumprod)[t].view(-1, 1, 1, 1)
        x_t = (ab.sqrt() * x0.double() + (1 - ab).sqrt() * noise.double()).float()
        return torch.nn.functional.mse_loss(model(x_t, t), noise)

    assert check_l_simple(f64)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"swap": True}, "swapped"),
        ({"no_sqrt": True}, "square roots are missing"),
        ({"prev": True}, "ᾱ_{t−1}"),
        ({"target": "x0"}, "target is the clean image"),
        ({"model_input": "x0"}, "given the clean x_0"),
        ({"reduce": "sum"}, "this is a sum"),
        ({"reduce": "pixel_sum"}, "sums over pixels"),
        ({"reduce": "per_sample"}, "one value per sample"),
        ({"reduce": "rms"}, "root-mean-square"),
        ({"squared": False}, "L1"),
        ({"detach": True}, "no gradient"),
        ({"t_shift": 1}, "same integer timesteps"),
    ],
)
def test_l_simple_rejects_typical_mistakes(kwargs, needle) -> None:
    with pytest.raises(ExerciseError, match=needle):
        check_l_simple(lambda *args: l_simple(*args, **kwargs))


def test_l_simple_rejects_other_failures() -> None:
    with pytest.raises(ExerciseError, match="never called"):
        check_l_simple(lambda model, x0, t, noise, ab: ((noise - x0) ** 2).mean())
    with pytest.raises(ExerciseError, match="IndexError: boom"):
        check_l_simple(lambda *args: (_ for _ in ()).throw(IndexError("boom")))
    with pytest.raises(ExerciseError, match="differ"):  # an unrecognised error still fails
        check_l_simple(lambda *args: 1.01 * l_simple(*args))
    with pytest.raises(ExerciseError, match="torch.Tensor"):
        check_l_simple(lambda *args: float(l_simple(*args).detach()))


def test_toy_model_depends_on_x_and_t() -> None:
    m = ToyEpsModel(2, 50)
    x = torch.randn(3, 2, 4, 4)
    a = m(x, torch.tensor([0, 10, 25]))
    b = m(x, torch.tensor([5, 10, 25]))
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1:], b[1:])
    assert len(m.calls) == 2


# ------------------------------------------------------------------------ exercise 2: the ELBO weight
def elbo_weight(betas, sigma2, *, mode="ok"):
    b = np.asarray(betas, dtype=np.float64)
    a = 1 - b
    ab = np.cumprod(a)
    s2 = np.asarray(sigma2, dtype=np.float64)
    return {
        "ok": b**2 / (2 * s2 * a * (1 - ab)),
        "no_half": b**2 / (s2 * a * (1 - ab)),
        "beta_not_squared": b / (2 * s2 * a * (1 - ab)),
        "alpha_for_abar": b**2 / (2 * s2 * a * (1 - a)),
        "sqrt_one_minus": b**2 / (2 * s2 * a * np.sqrt(1 - ab)),
        "no_alpha": b**2 / (2 * s2 * (1 - ab)),
        "abar_for_alpha": b**2 / (2 * s2 * ab * (1 - ab)),
        "no_sigma": b**2 / (2 * a * (1 - ab)),
    }[mode]


def test_elbo_weight_accepts_correct_numpy_and_torch() -> None:
    assert check_elbo_weight(elbo_weight)
    assert check_elbo_weight(lambda b, s: torch.from_numpy(elbo_weight(b, s)))
    assert check_elbo_weight(lambda b, s: list(elbo_weight(b, s)))


@pytest.mark.parametrize(
    ("mode", "needle"),
    [
        ("no_half", "factor 2"),
        ("beta_not_squared", "must be squared"),
        ("alpha_for_abar", "cumulative ᾱ_t in"),
        ("sqrt_one_minus", "should not have a square root"),
        ("no_alpha", "α_t is missing"),
        ("abar_for_alpha", "one-step α_t in the denominator"),
        ("no_sigma", "σ_t² is missing"),
    ],
)
def test_elbo_weight_rejects_typical_mistakes(mode, needle) -> None:
    with pytest.raises(ExerciseError, match=needle):
        check_elbo_weight(lambda b, s: elbo_weight(b, s, mode=mode))


def test_elbo_weight_rejects_shape_and_scale_errors() -> None:
    with pytest.raises(ExerciseError, match="shape"):
        check_elbo_weight(lambda b, s: elbo_weight(b, s)[1:])
    with pytest.raises(ExerciseError, match="differ"):
        check_elbo_weight(lambda b, s: elbo_weight(b, s) * 1.001)


def test_kl_per_squared_error_is_the_weight() -> None:
    betas = cosine_betas(30)
    lam = kl_per_squared_error(betas, betas)
    assert np.allclose(lam, elbo_weight(betas, betas), rtol=1e-8)


# ------------------------------------------------------------------- exercise 3: timestep embedding
def embedding(t, dim, *, mode="ok"):
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32)
    denom = {"ok": half, "by_dim": dim, "shift": half - 1}.get(mode, half)
    freqs = torch.exp(-math.log(10000.0) * k / denom)
    args = t.float()[:, None] * freqs[None]
    cos, sin = torch.cos(args), torch.sin(args)
    if mode == "sin_first":
        return torch.cat([sin, cos], 1)
    if mode == "interleaved":
        return torch.stack([cos, sin], 2).flatten(1)
    return torch.cat([cos, sin], 1)


def test_embedding_accepts_correct_float32_and_float64() -> None:
    assert check_timestep_embedding(embedding)

    def f64(t, dim):
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
        args = t.double()[:, None] * freqs
        return torch.cat([args.cos(), args.sin()], 1)

    assert check_timestep_embedding(f64)


@pytest.mark.parametrize(
    ("mode", "needle"),
    [("sin_first", "sin comes first"), ("interleaved", "interleaved"), ("by_dim", "divided by dim"),
     ("shift", "half − 1")],
)
def test_embedding_rejects_typical_mistakes(mode, needle) -> None:
    with pytest.raises(ExerciseError, match=needle):
        check_timestep_embedding(lambda t, dim: embedding(t, dim, mode=mode))


def test_embedding_rejects_wrong_shape() -> None:
    with pytest.raises(ExerciseError, match=r"\(B, dim\)"):
        check_timestep_embedding(lambda t, dim: embedding(t, dim)[:, : dim // 2])  # the cosines only


# ------------------------------------------------------ prediction: where is the ELBO's weight smallest?
def test_weight_prediction_accepts_the_live_truth(capsys) -> None:
    lam = elbo_weights_cosine()
    t_min = int(np.nanargmin(lam))
    assert abs(t_min - int(np.argmax(snr(cosine_betas(1000)) <= 1))) <= 5  # the reasoning of the solution cell
    assert 100 <= lam[1] / lam[t_min] < 316  # its ratio rounds to 10²
    for t in (t_min - 50, t_min, t_min + 50, np.int64(t_min)):
        assert check_weight_prediction(t, 100)
    assert f"smallest at t = {t_min}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ((10, 100), r"t_min_weight: λ_t is smallest at t = \d+ .* near the start the SNR drops .* where SNR crosses 1"),
        ((990, 100), r"t_min_weight: .* near the end β_t is clipped at 0.999 and λ shoots up to"),
        ((300, 100), r"t_min_weight: .* you said 300, where λ = 0.00\d+ — 1.\d+ times the minimum"),
        ((500, 1000), r"weight_ratio_order: λ_1 / λ_min = 0.559 / 0.0031 = 179, about 100 \(you said 1000\)"),
        ((10, 10), r"(?s)t_min_weight: .*\nweight_ratio_order: "),
        ((500, 50), "weight_ratio_order: choose one of 1, 10, 100, 1000, 10000, got 50"),
        ((0, 100), r"t_min_weight: λ_t is defined for t = 1 … 999, got 0"),
        ((..., 100), "t_min_weight: replace the placeholder"),
        ((500.5, 100), "t_min_weight: expected an integer, got 500.5"),
    ],
)
def test_weight_prediction_rejects_wrong_answers(answers, message) -> None:
    with pytest.raises(ExerciseError, match=message):
        check_weight_prediction(*answers)
