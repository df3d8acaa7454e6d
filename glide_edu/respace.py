"""Respacing: sample with fewer steps than the model was trained with (Improved DDPM §4).

Keep a subset S = {s_0 < … < s_{K−1}} of the original T steps and rebuild a K-step process with the same
ᾱ at the kept steps: β'_i = 1 − ᾱ_{s_i}/ᾱ_{s_{i−1}}. The network still expects *original* timesteps, so
:class:`SpacedDiffusion` hands the model (and any ``cond_fn``) ``timestep_map[i] = s_i``.

Respacing strings (GLIDE's ``timestep_respacing``):

* ``""`` — no respacing (all T steps);
* ``"N"`` — N steps evenly spread over [0, T−1] (= diffusers' ``timestep_spacing="linspace"``);
* ``"a,b,c"`` — split T into equal sections and take a, b, c evenly spread steps from each;
* ``"ddimN"`` — a uniform integer stride giving exactly N steps (DDIM paper; diffusers' ``"leading"``);
* ``"fast27"`` — GLIDE's upsampler spacing: ``"10,10,3,2,2"`` with step T−1 replaced by T−3.

A whole process is described by a :class:`DiffusionConfig` (T, schedule, respacing, mean and variance
types); ``DiffusionConfig.from_dict(meta["diffusion_config"]).create()`` and the older
``create_diffusion(**meta["diffusion_config"])`` build the same :class:`SpacedDiffusion`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import InitVar, dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from glide_edu.diffusion import GaussianDiffusion, Model, ModelMeanType, ModelVarType, _as_enum
from glide_edu.schedules import get_named_beta_schedule

RESPACING_HELP = '"" (no respacing), "N", "a,b,c" section counts, "ddimN" or "fast27"'


def _section_steps(num_timesteps: int, section_counts: Sequence[int]) -> list[int]:
    """Evenly spread ``section_counts[i]`` steps over the i-th of len(section_counts) equal sections."""
    if not section_counts:
        raise ValueError(f"no section counts given; use {RESPACING_HELP}")
    n_sections = len(section_counts)
    if n_sections > num_timesteps:
        raise ValueError(f"cannot split {num_timesteps} steps into {n_sections} sections")
    base, extra = divmod(num_timesteps, n_sections)
    steps: list[int] = []
    start = 0
    for i, count in enumerate(section_counts):
        size = base + (1 if i < extra else 0)
        if count < 1:
            raise ValueError(f"section counts must be >= 1, got {count} in {list(section_counts)}")
        if count > size:
            raise ValueError(
                f"cannot take {count} steps from a section of {size} steps "
                f"(T={num_timesteps}, sections {list(section_counts)}); use at most {size}"
            )
        stride = 1.0 if count == 1 else (size - 1) / (count - 1)
        # Python's round (banker's rounding) is what the reference uses; keep it for identical maps.
        steps.extend(start + round(k * stride) for k in range(count))
        start += size
    return steps


def space_timesteps(num_timesteps: int, section_counts: str | int | Iterable[int]) -> set[int]:
    """The set of original steps kept by a respacing (see the module docstring for the strings)."""
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be an integer >= 1, got {num_timesteps!r}")
    T = int(num_timesteps)
    if isinstance(section_counts, (int, np.integer)) and not isinstance(section_counts, bool):
        return set(_section_steps(T, [int(section_counts)]))
    if isinstance(section_counts, str):
        spec = section_counts.strip().lower()
        if spec == "":
            return set(range(T))
        if spec.startswith("ddim"):
            num = spec[len("ddim") :]
            if not num.isdigit() or int(num) < 1:
                raise ValueError(
                    f"bad respacing {section_counts!r}: 'ddim' must be followed by a step count, e.g. 'ddim25'"
                )
            target = int(num)
            for stride in range(1, T + 1):
                if len(range(0, T, stride)) == target:
                    return set(range(0, T, stride))
            raise ValueError(
                f"cannot create exactly {target} steps with an integer stride from T={T}; "
                f"use a plain '{target}' respacing instead"
            )
        if spec == "fast27":
            if T < 5 * 10:
                raise ValueError(f"'fast27' needs T >= 50 (it takes 10 steps from a fifth of T), got T={T}")
            steps = set(_section_steps(T, [10, 10, 3, 2, 2]))
            steps.discard(T - 1)
            steps.add(T - 3)
            return steps
        if not re.fullmatch(r"\d+(\s*,\s*\d+)*", spec):
            raise ValueError(f"unknown respacing {section_counts!r}; use {RESPACING_HELP}")
        section_counts = [int(part) for part in spec.split(",")]
    counts = [int(c) for c in section_counts]  # type: ignore[union-attr]
    return set(_section_steps(T, counts))


class _WrappedModel:
    """Calls ``model`` with original timesteps ``timestep_map[t]`` instead of respaced indices."""

    def __init__(self, model: Model, timestep_map: np.ndarray) -> None:
        self.model = model
        self.timestep_map = timestep_map
        self._maps: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def __call__(self, x: Tensor, ts: Tensor, **kwargs: Any) -> Any:
        key = (ts.device, ts.dtype)
        if key not in self._maps:
            self._maps[key] = torch.as_tensor(self.timestep_map, device=ts.device, dtype=ts.dtype)
        return self.model(x, self._maps[key][ts], **kwargs)


class SpacedDiffusion(GaussianDiffusion):
    """A diffusion that keeps only ``use_timesteps`` of a base process, with betas rebuilt from ᾱ.

    Args:
        use_timesteps: original steps to keep (e.g. from :func:`space_timesteps`).
        betas: the base process's β_1…β_T.
        model_mean_type / model_var_type: as :class:`GaussianDiffusion`.
    """

    def __init__(self, use_timesteps: Iterable[int], betas: Any, **kwargs: Any) -> None:
        base = GaussianDiffusion(betas, **kwargs)
        kept = sorted(set(int(s) for s in use_timesteps))
        if not kept:
            raise ValueError("use_timesteps is empty; keep at least one step")
        if kept[0] < 0 or kept[-1] >= base.num_timesteps:
            raise ValueError(f"use_timesteps must lie in 0..{base.num_timesteps - 1}, got {kept[0]}..{kept[-1]}")
        self.use_timesteps = set(kept)
        self.original_num_steps = base.num_timesteps
        abar = base.alphas_cumprod[kept]
        new_betas = 1.0 - abar / np.append(1.0, abar[:-1])
        super().__init__(new_betas, **kwargs)
        self.timestep_map = np.asarray(kept, dtype=np.int64)

    def _wrap_model(self, model: Model) -> Model:
        if isinstance(model, _WrappedModel):
            return model
        return _WrappedModel(model, self.timestep_map)


Respacing = str | int | tuple[int, ...]


def _normalized_respacing(spacing: str | int | Iterable[int] | None) -> Respacing:
    """A hashable copy of a respacing: str and int as given (None → ""), any other iterable → tuple of ints."""
    if spacing is None:
        return ""
    if isinstance(spacing, bool):
        raise ValueError(f"timestep_respacing must be a string, an int or section counts, got {spacing!r}")
    if isinstance(spacing, (str, int, np.integer)):
        return spacing if isinstance(spacing, str) else int(spacing)
    try:
        return tuple(int(c) for c in spacing)
    except (TypeError, ValueError):
        raise ValueError(f"timestep_respacing {spacing!r} is not {RESPACING_HELP}") from None


@dataclass(frozen=True)
class DiffusionConfig:
    """The options of :func:`create_diffusion` as a frozen, validated, JSON-able record.

    ``DiffusionConfig(**meta["diffusion_config"]).create()`` builds the same (respaced) process as
    ``create_diffusion(**meta["diffusion_config"])``. ``num_inference_steps=N`` (diffusers' name) is accepted
    at construction and stored as ``timestep_respacing=N``.
    """

    steps: int = 1000  # T, the training process's length
    noise_schedule: str = "squaredcos_cap_v2"  # "linear", "cosine" or "squaredcos_cap_v2"
    timestep_respacing: Respacing = ""  # see the module docstring
    model_mean_type: str = ModelMeanType.EPSILON.value  # "epsilon" or "start_x"
    model_var_type: str = ModelVarType.LEARNED_RANGE.value  # "fixed_small", "fixed_large", "learned", …
    num_inference_steps: InitVar[int | None] = None

    def __post_init__(self, num_inference_steps: int | None) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) or self.steps < 1:
            raise ValueError(f"steps (num_timesteps) must be an integer >= 1, e.g. 1000; got {self.steps!r}")
        spacing = self.timestep_respacing
        if num_inference_steps is not None:
            if spacing not in ("", None):
                raise ValueError("give either timestep_respacing or num_inference_steps, not both")
            spacing = int(num_inference_steps)
        get_named_beta_schedule(self.noise_schedule, int(self.steps))  # refuses unknown names, linear T <= 20
        spacing = _normalized_respacing(spacing)
        space_timesteps(int(self.steps), spacing)  # refuses bad respacings
        mean_type = _as_enum(self.model_mean_type, ModelMeanType, "model_mean_type").value
        var_type = _as_enum(self.model_var_type, ModelVarType, "model_var_type").value
        for name, value in (("steps", int(self.steps)), ("timestep_respacing", spacing)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "model_mean_type", mean_type)
        object.__setattr__(self, "model_var_type", var_type)

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON values (section counts as a list), for checkpoint metadata."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if isinstance(out["timestep_respacing"], tuple):
            out["timestep_respacing"] = list(out["timestep_respacing"])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiffusionConfig:
        """The config of a dict as stored in checkpoints (missing keys take the defaults; unknown keys are refused)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"DiffusionConfig.from_dict needs a dict, got {type(data).__name__}")
        known = [f.name for f in fields(cls)] + ["num_inference_steps"]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown DiffusionConfig keys {unknown}; known keys are {known}")
        return cls(**data)

    def respaced(self, timestep_respacing: str | int | Iterable[int] | None) -> DiffusionConfig:
        """A copy that keeps another subset of steps (``""`` or None: all T)."""
        return replace(self, timestep_respacing=_normalized_respacing(timestep_respacing))

    def create(self, timestep_respacing: str | int | Iterable[int] | None = None) -> SpacedDiffusion:
        """Build the process: β from the schedule, the kept steps, then :class:`SpacedDiffusion`.

        ``timestep_respacing``, if given, overrides this config's (as :meth:`respaced` would).
        """
        if timestep_respacing is not None:
            return self.respaced(timestep_respacing).create()
        betas = get_named_beta_schedule(self.noise_schedule, self.steps)
        return SpacedDiffusion(
            space_timesteps(self.steps, self.timestep_respacing),
            betas,
            model_mean_type=self.model_mean_type,
            model_var_type=self.model_var_type,
        )


def create_diffusion(
    steps: int = 1000,
    noise_schedule: str = "squaredcos_cap_v2",
    timestep_respacing: str | int | Iterable[int] = "",
    model_mean_type: ModelMeanType | str = ModelMeanType.EPSILON,
    model_var_type: ModelVarType | str = ModelVarType.LEARNED_RANGE,
    num_inference_steps: int | None = None,
) -> SpacedDiffusion:
    """A (respaced) diffusion from GLIDE-style options: ``DiffusionConfig(...).create()``.

    ``num_inference_steps=N`` (diffusers' name) is the same as ``timestep_respacing=str(N)``.
    """
    config = DiffusionConfig(
        steps, noise_schedule, timestep_respacing, model_mean_type, model_var_type, num_inference_steps
    )
    return config.create()
