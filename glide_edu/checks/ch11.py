"""Checkers for the exercises of chapter 11 (pretrained GLIDE).

* :func:`check_glide_cfg` — GLIDE's classifier-free guidance on a doubled batch, ε channels only;
* :func:`check_known_region_clamp` — the inpainting notebook's ``denoised_fn``;
* :func:`check_quantize_8bit` — putting the base samples on the 8-bit grid before upsampling;
* :func:`check_pipeline_cost` — a prediction: rows and calls of each network in one text-to-image run.

Each checker runs the reader's function on fresh random inputs, compares with the library
(:func:`glide_edu.guidance.classifier_free_guidance`, :func:`glide_edu.inpaint.known_region_clamp`,
:func:`glide_edu.data.quantize_8bit`) and names the typical slip when the answer is wrong.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from glide_edu.checks import (
    ExerciseError,
    call_reader,
    expect_close,
    expect_integer,
    expect_shape,
    expect_tensor,
    passed,
    raise_if_matches,
    values_close,
)
from glide_edu.data import quantize_8bit
from glide_edu.guidance import classifier_free_guidance
from glide_edu.inpaint import known_region_clamp

__all__ = ["check_glide_cfg", "check_known_region_clamp", "check_pipeline_cost", "check_quantize_8bit", "pipeline_cost"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_glide_cfg(glide_cfg: Callable[[Tensor, float], Tensor]) -> bool:
    """``glide_cfg(model_out, s)``: model_out (2B, 6, H, W) = [cond rows; uncond rows] → guided (2B, 6, H, W)."""
    gen = _gen(11)
    for batch, scale in ((2, 3.0), (1, 5.0), (3, 1.5)):
        out = torch.randn(2 * batch, 6, 4, 4, generator=gen)
        expected = classifier_free_guidance(lambda x, t, out=out: out, scale)(torch.zeros(2 * batch, 3, 4, 4), None)
        got = expect_tensor(call_reader(glide_cfg, "glide_cfg(model_out, s)", out.clone(), scale), "glide_cfg output")
        if got.shape[0] == batch:
            raise ExerciseError("glide_cfg output: keep both halves (2B rows); the sampler drops the second half later")
        expect_shape(got, out.shape, "glide_cfg output", "(2B, 6, H, W)")
        if got.dtype != out.dtype:
            raise ExerciseError(
                f"glide_cfg output: dtype {str(got.dtype).removeprefix('torch.')}, but model_out is "
                f"{str(out.dtype).removeprefix('torch.')}; return the same dtype (the sampler feeds it back to the "
                "network): avoid .double(), torch.tensor(...) of Python floats and NumPy round trips"
            )
        cond, uncond = out[:batch], out[batch:]
        wrong_all = uncond + scale * (cond - uncond)
        wrong_from_cond = cond[:, :3] + scale * (cond[:, :3] - uncond[:, :3])
        wrong_swapped = cond[:, :3] + scale * (uncond[:, :3] - cond[:, :3])
        raise_if_matches(
            got,
            {
                "all six channels were guided; only ε (channels 0–2) is, the variance channels stay each row's own": (
                    torch.cat([wrong_all, wrong_all])
                ),
                "the guided ε starts from the conditional branch; it is ε_uncond + s·(ε_cond − ε_uncond)": torch.cat(
                    [torch.cat([wrong_from_cond, wrong_from_cond]), out[:, 3:]], dim=1
                ),
                "the halves are swapped: rows 0…B−1 are conditional, rows B…2B−1 unconditional": torch.cat(
                    [torch.cat([wrong_swapped, wrong_swapped]), out[:, 3:]], dim=1
                ),
            },
            "glide_cfg output",
        )
        if values_close(got[:batch], expected[:batch]) and not values_close(got[batch:], expected[batch:]):
            raise ExerciseError("glide_cfg output: write the guided ε into BOTH halves (the second half's ε too)")
        expect_close(got, expected, "glide_cfg output", hint="ε̂ = ε_u + s(ε_c − ε_u) on channels 0–2, both halves")
    return passed("glide_cfg", "ε guided on both halves, variance channels untouched")


def check_known_region_clamp(clamp: Callable[[Tensor, Tensor, Tensor], Tensor]) -> bool:
    """``clamp(x0, image, mask)`` → x̂_0 with the known pixels (mask 1) replaced by ``image``."""
    gen = _gen(12)
    x0 = torch.randn(2, 3, 8, 8, generator=gen)
    image = torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1
    mask = (torch.rand(2, 1, 8, 8, generator=gen) > 0.5).float()
    got = expect_tensor(call_reader(clamp, "clamp(x0, image, mask)", x0, image, mask), "clamped x̂_0")
    expected = known_region_clamp(image, mask)(x0)
    expect_shape(got, expected.shape, "clamped x̂_0", "(B, 3, H, W)")
    raise_if_matches(
        got,
        {
            "the mask is inverted: 1 marks KNOWN pixels, which take the image's value": x0 * mask + image * (1 - mask),
            "the generated region was dropped: keep x̂_0 where mask = 0": image * mask,
            "clip to [−1, 1] comes after this function (p_mean_variance does it), not inside": expected.clamp(-1, 1),
        },
        "clamped x̂_0",
    )
    expect_close(got, expected, "clamped x̂_0", hint="x̂_0·(1 − mask) + image·mask")
    return passed("known_region_clamp", "known pixels pinned, the rest left to the model")


def check_quantize_8bit(quantize: Callable[[Tensor], Tensor]) -> bool:
    """``quantize(x)`` for x in [−1, 1] → the nearest of the 256 levels −1 + k/127.5."""
    x = torch.rand(4, 3, 8, 8, generator=_gen(13)) * 2 - 1
    x[0, 0, 0, :4] = torch.tensor([-1.0, 1.0, 0.0, 1 / 255])
    got = expect_tensor(call_reader(quantize, "quantize(x)", x.clone()), "quantized x")
    expected = quantize_8bit(x)
    expect_shape(got, x.shape, "quantized x")
    raise_if_matches(
        got,
        {
            "values were left in 0…255; map them back to [−1, 1] (÷127.5 − 1)": ((x + 1) * 127.5).round(),
            "floor truncates; GLIDE rounds to the NEAREST level": ((x + 1) * 127.5).floor() / 127.5 - 1,
            "x ∈ [−1, 1] spans 255 steps of 1/127.5: multiply (x + 1) by 127.5, not x by 255": (x * 255).round() / 255,
        },
        "quantized x",
        atol=1e-6,
    )
    expect_close(got, expected, "quantized x", atol=1e-6, hint="round((x + 1)·127.5)/127.5 − 1")
    return passed("quantize_8bit", "base samples on the 8-bit grid the upsampler was trained on")


def pipeline_cost(batch_size: int, guidance_scale: float, num_inference_steps: int) -> dict[str, int]:
    """What a text-to-image run costs, counted on a tiny pipeline: rows and calls of each network."""
    from glide_edu.pipelines import Text2ImPipeline
    from glide_edu.pipelines.tiny import tiny_glide_model
    from glide_edu.tokenizers import byte_level_tokenizer

    base, up = tiny_glide_model("base"), tiny_glide_model("upsample")
    rows: dict[str, list[int]] = {"base": [], "up": []}
    hooks = [m.network.register_forward_hook(lambda mod, args, out, key=key: rows[key].append(int(args[0].shape[0])))
             for key, m in (("base", base), ("up", up))]
    try:
        Text2ImPipeline(base, up, byte_level_tokenizer(), device="cpu")(
            "a red circle", batch_size=batch_size, guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps, seed=0)
    finally:
        for h in hooks:
            h.remove()
    return {"base_rows": rows["base"][0], "base_calls": len(rows["base"]),
            "up_rows": rows["up"][0], "up_calls": len(rows["up"])}


def check_pipeline_cost(base_rows: object, base_calls: object, up_rows: object, up_calls: object,
                        batch_size: int = 2, guidance_scale: float = 3.0, num_inference_steps: int = 10) -> bool:
    """Your predicted rows per network call and number of calls of each stage, against a counted run."""
    answers = {"base_rows": base_rows, "base_calls": base_calls, "up_rows": up_rows, "up_calls": up_calls}
    got = {k: expect_integer(v, k) for k, v in answers.items()}
    truth = pipeline_cost(batch_size, guidance_scale, num_inference_steps)
    hints = {
        "base_rows": "with guidance each call evaluates the prompt AND the empty prompt: the batch is doubled",
        "base_calls": "one network call per respaced step — num_inference_steps of them",
        "up_rows": "the upsampler runs without guidance: one row per image",
        "up_calls": "the upsampler uses GLIDE's 'fast27' spacing whatever num_inference_steps is",
    }
    for key, value in got.items():
        if value != truth[key]:
            raise ExerciseError(f"{key} = {value}, but the counted run gives {truth[key]} — {hints[key]}")
    return passed("pipeline cost", f"base {truth['base_calls']} calls × {truth['base_rows']} rows, "
                  f"upsampler {truth['up_calls']} calls × {truth['up_rows']} rows")
