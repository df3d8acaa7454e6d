"""The chapter-11 checkers accept correct answers and reject the typical wrong ones with a specific message."""

from __future__ import annotations

import pytest
import torch

from glide_edu.checks import ExerciseError
from glide_edu.checks.ch11 import check_glide_cfg, check_known_region_clamp, check_quantize_8bit


def glide_cfg(out, s, *, all_channels=False, from_cond=False, swap=False, first_half_only=False, one_half=False):
    b = out.shape[0] // 2
    eps, rest = (out, out[:, :0]) if all_channels else (out[:, :3], out[:, 3:])
    cond, uncond = eps[:b], eps[b:]
    if swap:
        cond, uncond = uncond, cond
    guided = (cond if from_cond else uncond) + s * (cond - uncond)
    if first_half_only:
        return torch.cat([guided, rest[:b]], dim=1)
    both = torch.cat([guided, uncond if one_half else guided])
    return torch.cat([both, rest], dim=1)


def test_cfg_accepts_the_right_answer() -> None:
    assert check_glide_cfg(glide_cfg)


@pytest.mark.parametrize(
    "wrong, message",
    [
        ({"all_channels": True}, "only ε"),
        ({"from_cond": True}, "starts from the conditional branch"),
        ({"swap": True}, "halves are swapped"),
        ({"first_half_only": True}, "keep both halves"),
        ({"one_half": True}, "BOTH halves"),
    ],
)
def test_cfg_rejects_typical_slips(wrong: dict, message: str) -> None:
    with pytest.raises(ExerciseError, match=message):
        check_glide_cfg(lambda out, s: glide_cfg(out, s, **wrong))


def test_cfg_reports_a_crash() -> None:
    with pytest.raises(ExerciseError, match="raised ZeroDivisionError"):
        check_glide_cfg(lambda out, s: 1 / 0)


def test_cfg_gives_feedback_on_a_float64_answer() -> None:
    """A right formula computed in float64 is a failed check with a message, not a crash of the checker."""
    with pytest.raises(ExerciseError, match="dtype float64, but model_out is float32; return the same dtype"):
        check_glide_cfg(lambda out, s: glide_cfg(out.double(), s))
    with pytest.raises(ExerciseError, match="halves are swapped"):  # a wrong float32 answer is still diagnosed
        check_glide_cfg(lambda out, s: glide_cfg(out, s, swap=True))


def test_clamp_accepts_and_rejects() -> None:
    assert check_known_region_clamp(lambda x0, image, mask: x0 * (1 - mask) + image * mask)
    cases = [
        (lambda x0, image, mask: x0 * mask + image * (1 - mask), "inverted"),
        (lambda x0, image, mask: image * mask, "generated region was dropped"),
        (lambda x0, image, mask: (x0 * (1 - mask) + image * mask).clamp(-1, 1), "comes after"),
        (lambda x0, image, mask: x0, "values differ"),
        (lambda x0, image, mask: x0[:, :1], "shape"),
    ]
    for fn, message in cases:
        with pytest.raises(ExerciseError, match=message):
            check_known_region_clamp(fn)


def test_quantize_accepts_and_rejects() -> None:
    assert check_quantize_8bit(lambda x: ((x + 1) * 127.5).round() / 127.5 - 1)
    cases = [
        (lambda x: ((x + 1) * 127.5).round(), "0…255"),
        (lambda x: ((x + 1) * 127.5).floor() / 127.5 - 1, "floor"),
        (lambda x: (x * 255).round() / 255, "multiply"),
        (lambda x: x.numpy(), "torch.Tensor"),
    ]
    for fn, message in cases:
        with pytest.raises(ExerciseError, match=message):
            check_quantize_8bit(fn)


def test_pipeline_cost_prediction() -> None:
    from glide_edu.checks.ch11 import check_pipeline_cost, pipeline_cost

    assert pipeline_cost(1, 1.0, 3) == {"base_rows": 1, "base_calls": 3, "up_rows": 1, "up_calls": 27}  # s = 1: no CFG
    assert check_pipeline_cost(4, 10, 2, 27)
    with pytest.raises(ExerciseError, match="doubled"):
        check_pipeline_cost(2, 10, 2, 27)
    with pytest.raises(ExerciseError, match="fast27"):
        check_pipeline_cost(4, 10, 2, 10)
    with pytest.raises(ExerciseError, match="without guidance"):
        check_pipeline_cost(4, 10, 4, 27)
    with pytest.raises(ExerciseError, match="placeholder"):
        check_pipeline_cost(..., 10, 2, 27)
