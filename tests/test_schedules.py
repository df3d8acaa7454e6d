"""Noise schedules: closed forms, caps and validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from glide_edu.schedules import (
    alphas_cumprod,
    betas_from_array,
    cosine_alpha_bar,
    cosine_betas,
    get_named_beta_schedule,
    linear_betas,
    make_betas,
    snr,
)


def test_linear_is_scaled_by_1000_over_T() -> None:
    b = linear_betas(1000)
    assert b.dtype == np.float64 and b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
    b = linear_betas(250)
    assert b[0] == pytest.approx(4e-4) and b[-1] == pytest.approx(0.08)
    assert np.all(np.diff(b) > 0)


def test_cosine_alpha_bar_matches_closed_form_where_uncapped() -> None:
    T = 1000
    betas = cosine_betas(T)
    abar = alphas_cumprod(betas)
    expected = np.array([cosine_alpha_bar((t + 1) / T) / cosine_alpha_bar(0.0) for t in range(T)])
    uncapped = betas < 0.999
    # ᾱ_t telescopes to ᾱ((t+1)/T)/ᾱ(0) until the first capped β
    first_cap = int(np.argmin(uncapped)) if not uncapped.all() else T
    np.testing.assert_allclose(abar[:first_cap], expected[:first_cap], rtol=1e-9, atol=1e-15)
    assert betas.max() <= 0.999 and betas[-1] == pytest.approx(0.999)
    assert get_named_beta_schedule("squaredcos_cap_v2", T).tolist() == get_named_beta_schedule("cosine", T).tolist()


def test_cosine_destroys_information_more_gradually_than_linear() -> None:
    lin, cos = alphas_cumprod(linear_betas(1000)), alphas_cumprod(cosine_betas(1000))
    # Improved DDPM, Fig. 5: the linear ᾱ is near zero for the last fifth of the chain, the cosine one is not
    assert lin[850] < 1e-3 and cos[850] > 0.05
    assert np.all(np.diff(np.log(snr(cosine_betas(1000)))) < 0)


@given(st.sampled_from(["linear", "cosine", "squaredcos_cap_v2"]), st.integers(21, 3000))
def test_named_schedules_are_valid_for_any_T(name: str, T: int) -> None:
    betas = make_betas(name, T)
    assert betas.shape == (T,) and betas.dtype == np.float64
    assert np.all(betas > 0) and np.all(betas < 1)
    abar = alphas_cumprod(betas)
    assert np.all(np.diff(abar) < 0) and 0 < abar[-1] < abar[0] < 1


@given(st.text(max_size=12).filter(lambda s: s.strip().lower() not in {"linear", "cosine", "squaredcos_cap_v2"}))
def test_unknown_schedule_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown noise schedule"):
        get_named_beta_schedule(name, 100)


@pytest.mark.parametrize("T", [0, -3, 2.5, True, "100"])
def test_bad_num_timesteps(T: object) -> None:
    with pytest.raises(ValueError, match="num_timesteps"):
        cosine_betas(T)  # type: ignore[arg-type]


def test_linear_refuses_too_few_steps() -> None:
    with pytest.raises(ValueError, match="num_timesteps > 20"):
        linear_betas(20)
    assert cosine_betas(1).shape == (1,)


@pytest.mark.parametrize(
    "betas, message",
    [
        ([], "non-empty"),
        ([[0.1]], "1-D"),
        ([0.1, 0.0], "0 < beta < 1"),
        ([0.5, 1.0], "0 < beta < 1"),
        ([0.1, math.nan], "0 < beta < 1"),
        ([-0.2], "0 < beta < 1"),
    ],
)
def test_explicit_betas_are_validated(betas: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        betas_from_array(betas)


def test_explicit_betas_and_named_lengths() -> None:
    assert make_betas([0.1, 0.2]).tolist() == [0.1, 0.2]
    with pytest.raises(ValueError, match="needs num_timesteps"):
        make_betas("cosine")
    with pytest.raises(ValueError, match="explicit betas"):
        make_betas([0.1, 0.2], 3)
