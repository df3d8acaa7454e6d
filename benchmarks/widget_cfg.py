"""Latency of one update of chapter 6's classifier-free-guidance explorer (target: median ≤ 1.0 s on 2 cores).

One update is :func:`glide_edu.book.ch06.cfg_grid` uncached: 8 samples of one digit at one guidance
scale (10 respaced ancestral steps, one doubled batch of 16 per step) plus the live readouts (clean-classifier
accuracy, diversity). The 20 updates visit 20 different (digit, scale) settings, as a reader moving the
slider and the dropdown would; one warm-up call is not counted. The load average is recorded with the result,
because these machines are shared.

    python benchmarks/widget_cfg.py    # 1 thread: on a 2-core box shared with other jobs, 2 threads are slower
"""

from __future__ import annotations

import argparse
import json

import torch
from widget_timing import time_updates

from glide_edu.book.ch06 import cfg_grid, load_cfg_model
from glide_edu.metrics import load_feature_net

SCALES = (0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--p-uncond", type=float, default=0.1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cm, net = load_cfg_model(args.p_uncond), load_feature_net()
    settings = [((3 * i + 1) % 10, SCALES[i % len(SCALES)]) for i in range(args.updates)]
    result = time_updates(
        lambda setting: cfg_grid(cm, *setting, n=args.samples, steps=args.steps, net=net),
        settings,
        samples=args.samples,
        steps=args.steps,
        threads=args.threads,
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
