"""CPU training throughput: glide_edu's ADM UNet vs diffusers' UNet2DModel, same run, same budget.

Both networks get the digits model's shape (16×16, 1 → 2 channels for learned Σ, widths 32/64/64, two
ResBlocks per level, attention at 8×8 and 4×4, scale-shift norm) and their parameter counts must agree
within 5 %. One "step" is forward + hybrid-loss-sized MSE backward + AdamW update at the same batch. The
two are timed in alternation so that machine noise hits both alike; the result is the ratio of medians.

    python benchmarks/unet_throughput.py --threads 2 --batch 64 --repeats 15
    python benchmarks/unet_throughput.py --precisions fp32 bf16   # each model in each precision, all alternated

``--precisions``: fp32 and/or bf16 (CPU autocast to bfloat16; weights, optimiser and loss stay float32, as the
trainer runs ``precision = "bf16"``). The result names the CPU and whether it has native bf16 (AVX-512 BF16 or
AMX), without which bf16 autocast is a large loss.

Needs ``pip install diffusers`` (not a dependency of glide_edu).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from glide_edu.nn.unet import UNetConfig, UNetModel


def glide_edu_unet() -> torch.nn.Module:
    cfg = UNetConfig(image_size=16, in_channels=1, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2,
                     attention_resolutions=(8, 4), num_head_channels=32, learn_sigma=True)
    return UNetModel(cfg)


def diffusers_unet() -> torch.nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=16, in_channels=1, out_channels=2, layers_per_block=2, block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        resnet_time_scale_shift="scale_shift", norm_num_groups=32, attention_head_dim=32,
        downsample_type="resnet", upsample_type="resnet",  # ADM: resampling inside ResBlocks
    )


def step_fn(model: torch.nn.Module, batch: int, is_diffusers: bool, bf16: bool = False):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, 16, 16)
    t = torch.randint(0, 1000, (batch,))
    target = torch.randn(batch, 2, 16, 16)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x, t).sample if is_diffusers else model(x, t)
        loss = torch.nn.functional.mse_loss(out.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        return platform.processor() or "?"


def native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {"glide_edu": glide_edu_unet(), "diffusers": diffusers_unet()}
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    mismatch = abs(params["glide_edu"] / params["diffusers"] - 1)
    if mismatch > 0.05:
        raise SystemExit(f"parameter counts differ by {mismatch:.1%} (> 5 %): {params}")
    steps = {f"{k} {p}": step_fn(m, args.batch, k == "diffusers", p == "bf16")
             for p in args.precisions for k, m in models.items()}
    for _ in range(args.warmup):
        for s in steps.values():
            s()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.repeats):
        for k, s in steps.items():
            t0 = time.perf_counter()
            s()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "unet_training_throughput",
        "threads": args.threads, "batch": args.batch, "repeats": args.repeats,
        "parameters": params,
        "images_per_s": {k: round(args.batch / v, 1) for k, v in med.items()},
        "ratio_glide_edu_over_diffusers": {p: round(med[f"diffusers {p}"] / med[f"glide_edu {p}"], 3)
                                           for p in args.precisions},
        "ratio_glide_edu_best_over_diffusers_best": round(min(v for k, v in med.items() if k.startswith("diffusers"))
                                                          / min(v for k, v in med.items() if k.startswith("glide")), 3),
        "torch": torch.__version__, "machine": platform.machine(), "cpu_count": torch.get_num_threads(),
        "cpu": cpu_name(), "native_bf16": native_bf16(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
