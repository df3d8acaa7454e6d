"""Does bf16 autocast change the training? The digits recipe (hybrid loss) in fp32 and in bf16, two seeds each.

Each run trains ``--steps`` steps of ``python -m glide_edu.recipes digits --loss hybrid`` (batch 64, lr 5e-4) with
``TrainConfig(precision=…)``; the loss is averaged over windows of ``--window`` steps. The two seeds of one
precision give the seed noise of every window (|seed 0 − seed 1|); the question is whether the precisions
differ by more than that. Also reported: the wall time per step of each run (same process, alternated by seed).

    python benchmarks/bf16_loss_curve.py --steps 300 --window 50 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from glide_edu.data import load_digits
from glide_edu.recipes import DIGITS_TRAIN, digits_configs, unet_trainer


def window_means(losses: list[float], window: int) -> list[float]:
    return [sum(losses[i:i + window]) / window for i in range(0, len(losses) - window + 1, window)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    images, _ = load_digits(16, "train")
    unet_cfg, diffusion_cfg = digits_configs("hybrid")
    curves: dict[str, dict[int, list[float]]] = {"fp32": {}, "bf16": {}}
    seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for seed in args.seeds:
        for precision in curves:
            cfg = replace(DIGITS_TRAIN, steps=args.steps, seed=seed, precision=precision, loss_type="hybrid",
                          progress=False, log_every=1, checkpoint_every=0)
            trainer = unet_trainer(unet_cfg, diffusion_cfg, cfg, images)
            start = time.perf_counter()
            history = trainer.train()
            seconds[precision].append((time.perf_counter() - start) / args.steps)
            curves[precision][seed] = window_means([h["loss"] for h in history], args.window)
    s0, s1 = args.seeds[:2]
    seed_noise = [abs(a - b) for a, b in zip(curves["fp32"][s0], curves["fp32"][s1], strict=True)]
    seed_noise_bf16 = [abs(a - b) for a, b in zip(curves["bf16"][s0], curves["bf16"][s1], strict=True)]
    gap = [abs((a0 + a1) / 2 - (b0 + b1) / 2) for a0, a1, b0, b1 in
           zip(curves["fp32"][s0], curves["fp32"][s1], curves["bf16"][s0], curves["bf16"][s1], strict=True)]
    result = {
        "benchmark": "bf16_loss_curve", "steps": args.steps, "window": args.window, "threads": args.threads,
        "curves": {p: {str(s): [round(v, 5) for v in c] for s, c in by.items()} for p, by in curves.items()},
        "seed_noise_fp32": [round(v, 5) for v in seed_noise],
        "seed_noise_bf16": [round(v, 5) for v in seed_noise_bf16],
        "precision_gap_of_seed_means": [round(v, 5) for v in gap],
        "gap_within_seed_noise": all(g <= max(n0, n1)
                                     for g, n0, n1 in zip(gap, seed_noise, seed_noise_bf16, strict=True)),
        "seconds_per_step": {p: round(sum(v) / len(v), 4) for p, v in seconds.items()},
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
