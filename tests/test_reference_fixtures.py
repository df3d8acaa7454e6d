"""The diffusion core against tensors recorded from the reference implementation (../shared)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glide_edu.respace import create_diffusion
from tests.reference_data import assert_matches, fixture

SCHEDULES = {"base": "squaredcos_cap_v2", "upsample": "linear"}
TABLES = (
    "betas",
    "alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


def _respacings(tensors: dict) -> list[str]:
    return sorted({k.split(".")[1] for k in tensors if k.startswith("respaced.")})


@pytest.mark.parametrize("kind", sorted(SCHEDULES))
def test_respacing_maps_and_tables_equal_reference(kind: str) -> None:
    tensors, meta = fixture(kind)
    names = _respacings(tensors)
    assert {"10", "fast27", "full"} <= set(names)
    for name in names:
        diffusion = create_diffusion(1000, SCHEDULES[kind], "" if name == "full" else name)
        kept = torch.tensor(sorted(diffusion.use_timesteps), dtype=torch.int64)
        assert_matches(kept, f"respaced.{name}.use_timesteps", tensors, meta)
        assert np.array_equal(diffusion.timestep_map, kept.numpy())
        for table in TABLES:
            key = f"respaced.{name}.{table}"
            if key in tensors:
                assert_matches(torch.from_numpy(getattr(diffusion, table)), key, tensors, meta)


@pytest.mark.parametrize("clip", [True, False])
def test_p_mean_variance_equals_reference(clip: bool) -> None:
    tensors, meta = fixture("base")
    diffusion = create_diffusion(1000, "squaredcos_cap_v2", "10")
    received: list[torch.Tensor] = []

    def recorded_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        received.append(t)
        return tensors["p_mean_variance.model_output"]

    out = diffusion.p_mean_variance(recorded_model, tensors["x_t"], tensors["pmv.t"], clip_denoised=clip)
    assert_matches(received[0], "p_mean_variance.mapped_t", tensors, meta)
    prefix = "p_mean_variance" if clip else "p_mean_variance_noclip"
    checked = 0
    for name in ("mean", "variance", "log_variance", "pred_xstart"):
        key = f"{prefix}.{name}"
        if key in tensors:
            assert_matches(out[name], key, tensors, meta)
            checked += 1
    assert checked >= 2
