"""CPU cost of one training step of GLIDE in miniature, by UNet width, in float32 and under bf16 autocast.

One step = the miniature's text transformer + Text2ImUNet forward, the hybrid loss, backward and AdamW, at
batch 32 on 32×32 pictures with 96-token captions — what ``python -m glide_edu.recipes glide-mini`` runs.
Widths and precisions are timed in alternation (so machine noise hits all alike); medians are reported.

    python benchmarks/mini_train_step.py --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from glide_edu.nn.presets import create_glide_model
from glide_edu.respace import DiffusionConfig
from glide_edu.train_text import MINI_OPTIONS

WIDTHS = {32: {"num_channels": 32, "num_head_channels": 32}, 64: {"num_channels": 64, "num_head_channels": 64}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    diffusion = DiffusionConfig(1000, "squaredcos_cap_v2").create("")
    runs = {}
    for width, opts in WIDTHS.items():
        torch.manual_seed(0)
        model = create_glide_model({**MINI_OPTIONS, **opts})
        runs[width] = (model, torch.optim.AdamW(model.parameters(), 1e-4))
    b, ctx = args.batch, MINI_OPTIONS["text_ctx"]
    x = torch.rand(b, 3, 32, 32) * 2 - 1
    tokens = torch.randint(0, 256, (b, ctx))
    mask = torch.arange(ctx)[None].expand(b, ctx) < 30

    def step(width: int, bf16: bool) -> float:
        model, opt = runs[width]
        start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            t = torch.randint(0, 1000, (b,))
            loss = diffusion.training_losses(model, x, t, model_kwargs={"tokens": tokens, "mask": mask},
                                             loss_type="hybrid")["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {f"c{w} {'bf16' if p else 'fp32'}": [] for w in WIDTHS for p in (False, True)}
    for key in times:  # warm-up
        step(int(key.split()[0][1:]), key.endswith("bf16"))
    for _ in range(args.repeats):
        for key in times:
            times[key].append(step(int(key.split()[0][1:]), key.endswith("bf16")))
    result = {k: round(statistics.median(v), 3) for k, v in times.items()}
    params = {f"c{w}": sum(p.numel() for p in runs[w][0].parameters()) for w in WIDTHS}
    print(json.dumps({"seconds_per_step": result, "params": params, "batch": b, "threads": args.threads,
                      "torch": torch.__version__, "machine": platform.machine()}, indent=2))


if __name__ == "__main__":
    main()
