"""DiffusionConfig: the dict options of create_diffusion as a frozen, validated dataclass.

It must round-trip the dicts stored in checkpoint metadata, refuse bad values with one-line messages, and
build exactly the process ``create_diffusion(**dict)`` builds.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
import torch

from glide_edu.diffusion import ModelVarType
from glide_edu.respace import DiffusionConfig, SpacedDiffusion, create_diffusion, space_timesteps
from glide_edu.schedules import get_named_beta_schedule

CHECKPOINT_DICT = {"steps": 1000, "noise_schedule": "cosine", "model_var_type": "learned_range"}


# ------------------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize(
    "data",
    [
        CHECKPOINT_DICT,
        {"steps": 1000, "noise_schedule": "cosine", "model_var_type": "fixed_small"},
        {"steps": 100, "noise_schedule": "linear", "timestep_respacing": "ddim25", "model_mean_type": "start_x"},
        {"steps": 1000, "noise_schedule": "squaredcos_cap_v2", "timestep_respacing": [10, 5]},
        {"steps": 1000, "timestep_respacing": "fast27", "model_var_type": "fixed_large"},
    ],
)
def test_dicts_round_trip_through_the_dataclass(data: dict[str, Any]) -> None:
    config = DiffusionConfig.from_dict(data)
    full = config.to_dict()
    assert {k: full[k] for k in data} == data  # every stored value survives unchanged
    assert set(full) == {f.name for f in dataclasses.fields(DiffusionConfig)}
    assert DiffusionConfig.from_dict(full) == config
    assert DiffusionConfig.from_dict(json.loads(json.dumps(full))) == config  # JSON-able as it stands


def test_enums_and_numpy_ints_are_stored_as_plain_values() -> None:
    config = DiffusionConfig(np.int64(50), "linear", np.int64(5), model_var_type=ModelVarType.FIXED_SMALL)
    assert config.to_dict() == {
        "steps": 50,
        "noise_schedule": "linear",
        "timestep_respacing": 5,
        "model_mean_type": "epsilon",
        "model_var_type": "fixed_small",
    }
    assert type(config.steps) is int and type(config.model_var_type) is str
    assert {config: "hashable"}[DiffusionConfig(50, "linear", 5, model_var_type="fixed_small")] == "hashable"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.steps = 10  # type: ignore[misc]


# ------------------------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "steps .*>= 1"),
        ({"steps": True}, "steps .*integer"),
        ({"steps": 10.5}, "steps .*integer"),
        ({"noise_schedule": "quadratic"}, "unknown noise schedule 'quadratic'; choose one of"),
        ({"steps": 10, "noise_schedule": "linear"}, "num_timesteps > 20"),
        ({"timestep_respacing": "fast"}, "unknown respacing 'fast'"),
        ({"timestep_respacing": "2000"}, "cannot take 2000 steps"),
        ({"timestep_respacing": True}, "timestep_respacing must be"),
        ({"timestep_respacing": ["a"]}, "timestep_respacing .* is not"),
        ({"model_mean_type": "noise"}, "unknown model_mean_type 'noise'; choose one of"),
        ({"model_var_type": "huge"}, "unknown model_var_type 'huge'; choose one of"),
        ({"timestep_respacing": "25", "num_inference_steps": 25}, "either timestep_respacing or num_inference_steps"),
    ],
)
def test_bad_values_are_refused_with_one_line_messages(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        DiffusionConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_from_dict_refuses_unknown_keys_and_non_dicts() -> None:
    with pytest.raises(ValueError, match=r"unknown DiffusionConfig keys \['schedule'\]; known keys are") as err:
        DiffusionConfig.from_dict({"steps": 1000, "schedule": "cosine"})
    assert "\n" not in str(err.value) and "'noise_schedule'" in str(err.value)
    with pytest.raises(ValueError, match="needs a dict, got list"):
        DiffusionConfig.from_dict([("steps", 1000)])  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------- same diffusion
def _assert_same_process(a: SpacedDiffusion, b: SpacedDiffusion) -> None:
    tables = [k for k, v in vars(a).items() if isinstance(v, np.ndarray)]
    assert "betas" in tables and "posterior_log_variance_clipped" in tables
    for name in tables:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.use_timesteps == b.use_timesteps and a.original_num_steps == b.original_num_steps
    assert (a.model_mean_type, a.model_var_type) == (b.model_mean_type, b.model_var_type)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    channels = 6 if a.model_var_type.is_learned else 3

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x.repeat(1, channels // 3, 1, 1) + 1e-3 * t.float().view(-1, 1, 1, 1))

    t = torch.tensor([a.num_timesteps - 1, 0])
    out_a, out_b = a.p_sample(model, x, t, noise=noise), b.p_sample(model, x, t, noise=noise)
    for key in ("sample", "pred_xstart", "variance"):
        torch.testing.assert_close(out_a[key], out_b[key], rtol=0, atol=0)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("var_type", ["fixed_small", "learned_range"])
@pytest.mark.parametrize("spacing", ["", "10", "fast27"])
def test_the_dataclass_builds_what_create_diffusion_builds(schedule: str, var_type: str, spacing: str) -> None:
    data = {"steps": 1000, "noise_schedule": schedule, "timestep_respacing": spacing, "model_var_type": var_type}
    from_config = DiffusionConfig.from_dict(data).create()
    from_dict = create_diffusion(**data)
    assert from_config.num_timesteps == {"": 1000, "10": 10, "fast27": 27}[spacing]
    _assert_same_process(from_config, from_dict)
    # and both are the process spelled out by hand (create_diffusion's body before it used the dataclass)
    by_hand = SpacedDiffusion(
        space_timesteps(1000, spacing), get_named_beta_schedule(schedule, 1000), model_var_type=var_type
    )
    _assert_same_process(from_config, by_hand)


def test_respaced_copies_and_create_overrides_the_spacing() -> None:
    base = DiffusionConfig.from_dict(CHECKPOINT_DICT)
    fast = base.respaced("fast27")
    assert base.timestep_respacing == "" and fast.timestep_respacing == "fast27"
    assert fast == dataclasses.replace(base, timestep_respacing="fast27")
    assert base.respaced([10, 5]).timestep_respacing == (10, 5) and base.respaced(None) == base
    _assert_same_process(base.create("10"), create_diffusion(**CHECKPOINT_DICT, timestep_respacing="10"))
    _assert_same_process(fast.create(), base.create(timestep_respacing="fast27"))
    assert base.create().num_timesteps == 1000  # create(...) left the config alone


def test_num_inference_steps_is_stored_as_the_respacing() -> None:
    config = DiffusionConfig(1000, "linear", num_inference_steps=25)
    assert config == DiffusionConfig(1000, "linear", 25)
    assert "num_inference_steps" not in config.to_dict()
    assert DiffusionConfig.from_dict({"steps": 1000, "noise_schedule": "linear", "num_inference_steps": 25}) == config
    _assert_same_process(config.create(), create_diffusion(1000, "linear", num_inference_steps=25))
