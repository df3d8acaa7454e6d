"""Respacing strings, the spaced process and the original-timestep wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from glide_edu.diffusion import GaussianDiffusion
from glide_edu.respace import SpacedDiffusion, create_diffusion, space_timesteps
from glide_edu.schedules import cosine_betas

FAST27 = [
    0,
    22,
    44,
    66,
    88,
    111,
    133,
    155,
    177,
    199,
    200,
    222,
    244,
    266,
    288,
    311,
    333,
    355,
    377,
    399,
    400,
    500,
    599,
    600,
    799,
    800,
    997,
]


@pytest.mark.parametrize("n", [10, 25, 27, 50, 100, 250, 1000])
def test_single_section_is_linspace(n: int) -> None:
    expected = {int(v) for v in np.round(np.linspace(0, 999, n))}
    assert space_timesteps(1000, str(n)) == expected == space_timesteps(1000, n)


def test_known_maps() -> None:
    assert sorted(space_timesteps(1000, "fast27")) == FAST27
    assert sorted(space_timesteps(1000, "100"))[:3] == [0, 10, 20] and max(space_timesteps(1000, "100")) == 999
    assert space_timesteps(1000, "ddim25") == set(range(0, 1000, 40))
    assert space_timesteps(1000, "") == set(range(1000))
    assert space_timesteps(10, [2, 3]) == {0, 4, 5, 7, 9}


@given(st.integers(1, 2000), st.lists(st.integers(1, 60), min_size=1, max_size=6))
def test_section_counts_property(T: int, counts: list[int]) -> None:
    n = len(counts)
    assume(n <= T)
    sizes = [T // n + (1 if i < T % n else 0) for i in range(n)]
    spec = ",".join(map(str, counts))
    if any(c > s for c, s in zip(counts, sizes, strict=True)):
        with pytest.raises(ValueError, match="cannot take"):
            space_timesteps(T, spec)
        return
    steps = sorted(space_timesteps(T, spec))
    assert len(steps) == sum(counts)  # distinct
    start = 0
    for count, size in zip(counts, sizes, strict=True):  # each section gets its own count, first step at its start
        inside = [s for s in steps if start <= s < start + size]
        assert len(inside) == count and inside[0] == start
        if count > 1:
            assert inside[-1] == start + size - 1  # and spans it to the end
        start += size


@given(st.integers(1, 1500), st.integers(1, 1500))
def test_ddim_property(T: int, n: int) -> None:
    strides = [s for s in range(1, T + 1) if len(range(0, T, s)) == n]
    if not strides:
        with pytest.raises(ValueError, match="integer stride"):
            space_timesteps(T, f"ddim{n}")
        return
    steps = space_timesteps(T, f"ddim{n}")
    assert steps == set(range(0, T, strides[0])) and len(steps) == n


@given(st.text(max_size=10))
def test_parser_accepts_only_the_documented_forms(spec: str) -> None:
    s = spec.strip().lower()
    valid = (
        s == ""
        or s == "fast27"
        or (s.startswith("ddim") and s[4:].isdigit())
        or all(p.strip().isdigit() for p in s.split(","))
    )
    try:
        steps = space_timesteps(1000, spec)
    except ValueError as err:
        assert str(err)  # a message naming the problem
        return
    assert valid and steps <= set(range(1000)) and steps


@pytest.mark.parametrize(
    "spec, message",
    [
        ("fast", "unknown respacing"),
        ("10,,2", "unknown respacing"),
        ("ddim", "ddim"),
        ("ddim0", "ddim"),
        ("-5", "unknown respacing"),
        ("0", ">= 1"),
        ("2000", "cannot take"),
        ("ddim600", "integer stride"),
    ],
)
def test_bad_respacings(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        space_timesteps(1000, spec)


def test_bad_T_and_fast27_minimum() -> None:
    with pytest.raises(ValueError, match="num_timesteps"):
        space_timesteps(0, "10")
    with pytest.raises(ValueError, match="fast27"):
        space_timesteps(40, "fast27")


def test_spaced_process_keeps_alpha_bar_and_maps_timesteps() -> None:
    betas = cosine_betas(1000)
    base = GaussianDiffusion(betas)
    kept = space_timesteps(1000, "10,5")
    spaced = SpacedDiffusion(kept, betas)
    np.testing.assert_allclose(spaced.alphas_cumprod, base.alphas_cumprod[sorted(kept)], rtol=1e-9, atol=1e-15)
    full = create_diffusion(1000, "cosine", "")
    np.testing.assert_allclose(full.betas, betas, rtol=1e-12)
    seen: list[torch.Tensor] = []

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(t.clone())
        return torch.zeros(x.shape[0], 6, *x.shape[2:])

    spaced.p_mean_variance(model, torch.zeros(3, 3, 2, 2), torch.tensor([0, 7, 14]))
    assert seen[0].dtype == torch.int64
    assert seen[0].tolist() == [sorted(kept)[i] for i in (0, 7, 14)]
    with pytest.raises(ValueError, match="use_timesteps"):
        SpacedDiffusion([5, 1000], betas)


def test_num_inference_steps_alias() -> None:
    a = create_diffusion(1000, "linear", num_inference_steps=25)
    b = create_diffusion(1000, "linear", "25")
    assert a.use_timesteps == b.use_timesteps
    with pytest.raises(ValueError, match="either"):
        create_diffusion(1000, "linear", "25", num_inference_steps=25)
