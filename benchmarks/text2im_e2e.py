"""The whole text-to-image sample — base with classifier-free guidance, the 8-bit hand-over, the upsampler —
glide_edu in float32 and in bfloat16 against OpenAI's reference pipeline (``glide_text2im``), end to end.

Full-size official presets (``base`` 385,030,726 and ``upsample`` 398,361,286 parameters) with random weights
(:func:`glide_cpu.build`): the released checkpoints are not needed, since time depends on the shapes only.
Both implementations get the *same* weights (glide_edu's state dict loads into the reference's models with
``strict=True``), the same GPT-2 BPE tokens and the same noise (glide_edu's ``seed`` draws the normals the
reference notebook draws after ``torch.manual_seed(seed)``), so the float32 images must agree and the
bfloat16 image can be compared with the float32 one pixel by pixel.

The reference is run the way its ``text2im`` notebook runs it, on the CPU (``use_fp16=False``): tokens and
mask for the prompt and the empty prompt, a guided ``model_fn`` over the doubled batch, ``p_sample_loop`` with
respacing ``--base-respacing``, 8-bit quantisation, then the upsampler's ``ddim_sample_loop`` from
0.997·N(0, I) with ``--upsample-respacing``. It is not a dependency of glide_edu: pass a checkout of
https://github.com/openai/glide-text2im with ``--reference-src`` (its GPT-2 vocabulary files must be in
``glide_text2im/tokenizer/``); without it only glide_edu's two precisions run.

Runs alternate (reference, fp32, bf16, reference, …) so that load on the machine hits each alike; the
reported time of each is the median over ``--repeats``. PSNR is over the final 256×256 images in 8-bit units.

    python benchmarks/text2im_e2e.py --reference-src ~/src/glide-text2im --vocab-dir ~/vocab \\
        --threads 2 --base-respacing 100 --upsample-respacing fast27 --json e2e.json

The defaults are the notebook's (100 base steps, fast27); every step costs the same, so a run with fewer
steps (``--base-respacing 10 --upsample-respacing 4``) measures the same ratio in a tenth of the time.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from glide_cpu import build_glide  # noqa: E402

from glide_edu.pipelines import Text2ImPipeline  # noqa: E402
from glide_edu.tokenizers import glide_tokenizer  # noqa: E402

PROMPT = "an oil painting of a corgi"
UPSAMPLE_TEMPERATURE = 0.997


def psnr_8bit(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of two image batches in [−1, 1], measured in 8-bit units (peak 255)."""
    mse = (((a.float() - b.float()) * 127.5) ** 2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def reference_runner(src: Path, base: Any, upsampler: Any, args: argparse.Namespace) -> Callable[[], Tensor]:
    """The reference notebook's text-to-image sample as a function of nothing (the seed is fixed)."""
    sys.path.insert(0, str(src))
    from glide_text2im.model_creation import (  # type: ignore[import-not-found]
        create_model_and_diffusion,
        model_and_diffusion_defaults,
        model_and_diffusion_defaults_upsampler,
    )

    def make(defaults: dict[str, Any], respacing: str, weights: dict[str, Tensor]) -> tuple[Any, Any, dict]:
        options = {**defaults, "use_fp16": False, "timestep_respacing": respacing}
        model, diffusion = create_model_and_diffusion(**options)
        model.load_state_dict(weights, strict=True)
        return model.eval(), diffusion, options

    model, diffusion, options = make(model_and_diffusion_defaults(), args.base_respacing, base.network.state_dict())
    model_up, diffusion_up, options_up = make(model_and_diffusion_defaults_upsampler(), args.upsample_respacing,
                                              upsampler.network.state_dict())
    scale = args.guidance_scale

    def tokens_and_mask(m: Any, ctx: int, prompt: str) -> tuple[list[int], list[bool]]:
        return m.tokenizer.padded_tokens_and_mask(m.tokenizer.encode(prompt) if prompt else [], ctx)

    def guided(x_t: Tensor, ts: Tensor, **kwargs: Any) -> Tensor:
        half = x_t[: len(x_t) // 2]
        out = model(torch.cat([half, half]), ts, **kwargs)
        eps, rest = out[:, :3], out[:, 3:]
        cond, uncond = torch.split(eps, len(eps) // 2)
        half_eps = uncond + scale * (cond - uncond)
        return torch.cat([torch.cat([half_eps, half_eps]), rest], dim=1)

    def run() -> Tensor:
        torch.manual_seed(args.seed)
        t, m = tokens_and_mask(model, options["text_ctx"], PROMPT)
        tu, mu = tokens_and_mask(model, options["text_ctx"], "")
        kwargs = {"tokens": torch.tensor([t, tu]), "mask": torch.tensor([m, mu], dtype=torch.bool)}
        size = options["image_size"]
        with torch.no_grad():
            x = diffusion.p_sample_loop(guided, (2, 3, size, size), device=torch.device("cpu"), clip_denoised=True,
                                        progress=False, model_kwargs=kwargs, cond_fn=None)[:1]
            model.del_cache()
            t, m = tokens_and_mask(model_up, options_up["text_ctx"], PROMPT)
            kwargs = {"low_res": ((x + 1) * 127.5).round() / 127.5 - 1, "tokens": torch.tensor([t]),
                      "mask": torch.tensor([m], dtype=torch.bool)}
            shape = (1, 3, options_up["image_size"], options_up["image_size"])
            up = diffusion_up.ddim_sample_loop(model_up, shape, noise=torch.randn(shape) * UPSAMPLE_TEMPERATURE,
                                               device=torch.device("cpu"), clip_denoised=True, progress=False,
                                               model_kwargs=kwargs, cond_fn=None)
            model_up.del_cache()
        return up

    return run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-src", type=Path, default=None, help="a checkout of openai/glide-text2im")
    parser.add_argument("--vocab-dir", type=Path, default=None,
                        help="GPT-2 vocabulary (encoder.json[.gz], vocab.bpe[.gz])")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--base-respacing", default="100")
    parser.add_argument("--upsample-respacing", default="fast27")
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    base, upsampler = build_glide("base", seed=0), build_glide("upsample", seed=1)
    pipe = Text2ImPipeline(base, upsampler, glide_tokenizer(args.vocab_dir))
    call = {"guidance_scale": args.guidance_scale, "respacing": args.base_respacing,
            "upsample_respacing": args.upsample_respacing, "upsample_temperature": UPSAMPLE_TEMPERATURE,
            "seed": args.seed}
    runs: dict[str, Callable[[], Tensor]] = {}
    if args.reference_src is not None:
        runs["reference fp32"] = reference_runner(args.reference_src, base, upsampler, args)
    runs["glide_edu fp32"] = lambda: pipe(PROMPT, **call).samples
    runs["glide_edu bf16"] = lambda: pipe(PROMPT, bf16=True, **call).samples

    times: dict[str, list[float]] = {name: [] for name in runs}
    images: dict[str, Tensor] = {}
    for r in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            images[name] = fn()
            times[name].append(time.perf_counter() - start)
            print(f"repeat {r + 1}: {name}: {times[name][-1]:.1f} s", flush=True)

    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "torch": torch.__version__, "threads": args.threads, "prompt": PROMPT,
        "base_respacing": args.base_respacing, "upsample_respacing": args.upsample_respacing,
        "guidance_scale": args.guidance_scale, "repeats": args.repeats,
        "seconds": {name: {"median": statistics.median(t), "runs": [round(x, 2) for x in t]}
                    for name, t in times.items()},
    }
    peer = "reference fp32" if "reference fp32" in times else "glide_edu fp32"
    result["speedup_vs_" + peer.replace(" ", "_")] = {
        name: round(statistics.median(times[peer]) / statistics.median(t), 3) for name, t in times.items()
    }
    result["psnr_db_vs_glide_edu_fp32"] = {
        name: round(psnr_8bit(images[name], images["glide_edu fp32"]), 2) for name in images if name != "glide_edu fp32"
    }
    result["max_abs_diff_vs_glide_edu_fp32"] = {
        name: (images[name].float() - images["glide_edu fp32"]).abs().max().item() for name in images
    }
    print(json.dumps(result, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
