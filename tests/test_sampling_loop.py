"""The single reverse-process loop behind the ancestral, DDIM and DDIM-inversion generators.

What the GLIDE parity tests rely on: a loop is lazy, draws x_T first (unless given) and then exactly one
noise tensor per step — before that step's model call, the last step included — walks the indices in the
right order with the right original timesteps, and is nothing more than its single step applied in turn.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from glide_edu.respace import create_diffusion
from glide_edu.sampling import SampleStep

SHAPE = (2, 1, 3, 3)


def _diffusion():  # 5 kept steps of a 50-step cosine process
    return create_diffusion(50, "cosine", "5", model_var_type="fixed_small")


def _recording(events: list[str]) -> tuple[Callable[..., Tensor], Callable[[Tensor], Tensor], list[Tensor]]:
    """A model and a noise source that log their calls (in order) into ``events``; the model also keeps its inputs."""
    inputs: list[Tensor] = []
    gen = torch.Generator().manual_seed(0)

    def model(x: Tensor, t: Tensor) -> Tensor:
        events.append(f"model{t.tolist()}")
        inputs.append(x.clone())
        return 0.3 * x + 0.01 * t.float().view(-1, 1, 1, 1)

    def noise_fn(like: Tensor) -> Tensor:
        events.append("noise")
        return torch.randn(like.shape, generator=gen)

    return model, noise_fn, inputs


@pytest.mark.parametrize("method", ["p_sample_loop_progressive", "ddim_sample_loop_progressive"])
def test_loops_are_lazy_and_draw_x_T_then_one_noise_before_each_model_call(method: str) -> None:
    d = _diffusion()
    events: list[str] = []
    model, noise_fn, _ = _recording(events)
    steps = getattr(d, method)(model, SHAPE, noise_fn=noise_fn)
    assert events == []  # nothing runs (or is drawn) before iteration
    out = list(steps)
    kept = [int(s) for s in d.timestep_map]  # the model sees original timesteps, last kept first
    per_step = [e for s in reversed(kept) for e in ("noise", f"model{[s, s]}")]
    assert events == ["noise", *per_step]
    assert len(out) == 5 and all(isinstance(s, SampleStep) for s in out)
    # a given x_T replaces the first draw, and only that one
    events.clear()
    list(getattr(d, method)(model, SHAPE, noise=torch.zeros(SHAPE), noise_fn=noise_fn))
    assert events == per_step


@pytest.mark.parametrize("method", ["p_sample_loop_progressive", "ddim_sample_loop_progressive"])
def test_sampling_loops_walk_down_and_feed_each_sample_to_the_next_step(method: str) -> None:
    d = _diffusion()
    events: list[str] = []
    model, noise_fn, inputs = _recording(events)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    out = list(getattr(d, method)(model, SHAPE, noise=x_T, noise_fn=noise_fn))
    assert [s.t for s in out] == [4, 3, 2, 1, 0]
    assert [s.timestep for s in out] == [int(d.timestep_map[i]) for i in (4, 3, 2, 1, 0)]
    assert out[0].timestep == 49 and out[-1].timestep == 0
    torch.testing.assert_close(inputs[0], x_T, rtol=0, atol=0)
    for k in range(4):
        torch.testing.assert_close(inputs[k + 1], out[k].sample, rtol=0, atol=0)


@pytest.mark.parametrize(
    "method, step", [("p_sample_loop_progressive", "p_sample"), ("ddim_sample_loop_progressive", "ddim_sample")]
)
def test_a_sampling_loop_is_its_single_step_applied_in_turn(method: str, step: str) -> None:
    d = _diffusion()
    model, _, _ = _recording([])
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    stream = [torch.randn(SHAPE, generator=torch.Generator().manual_seed(10 + k)) for k in range(5)]
    it = iter(stream)
    out = list(getattr(d, method)(model, SHAPE, noise=x_T, noise_fn=lambda like: next(it), temperature=0.5))
    x = 0.5 * x_T  # temperature scales x_T only
    for k, i in enumerate((4, 3, 2, 1, 0)):
        manual = getattr(d, step)(model, x, torch.full((2,), i), noise=stream[k])
        torch.testing.assert_close(out[k].sample, manual["sample"], rtol=0, atol=0)
        torch.testing.assert_close(out[k].pred_xstart, manual["pred_xstart"], rtol=0, atol=0)
        x = manual["sample"]


def test_inversion_walks_up_without_noise_and_matches_its_steps() -> None:
    d = _diffusion()
    events: list[str] = []
    model, _, inputs = _recording(events)
    x0 = torch.rand(SHAPE, generator=torch.Generator().manual_seed(3)) - 0.5
    out = list(d.ddim_reverse_loop_progressive(model, x0))
    assert [s.t for s in out] == [0, 1, 2, 3, 4]
    assert events == [f"model{[int(s), int(s)]}" for s in d.timestep_map]  # no noise is ever drawn
    x = x0
    for k in range(5):
        torch.testing.assert_close(inputs[k], x, rtol=0, atol=0)
        x = d.ddim_reverse_sample(model, x, torch.full((2,), k))["sample"]
        torch.testing.assert_close(out[k].sample, x, rtol=0, atol=0)
    torch.testing.assert_close(d.ddim_reverse_loop(model, x0), x, rtol=0, atol=0)


def test_steps_run_without_gradients() -> None:
    d = _diffusion()
    weight = torch.nn.Parameter(torch.tensor(0.5))
    model = lambda x, t: weight * x  # noqa: E731
    for loop in (d.p_sample_loop, d.ddim_sample_loop):
        assert not loop(model, SHAPE, generator=torch.Generator().manual_seed(0)).requires_grad
    assert not d.ddim_reverse_loop(model, torch.zeros(SHAPE)).requires_grad
