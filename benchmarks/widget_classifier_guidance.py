"""Latency of one update of chapter 5's classifier-guidance explorer (target: median ≤ 1.0 s on 2 cores).

An update is one uncached call of :func:`glide_edu.book.ch05.guidance_view`: sample a grid of one
digit at one scale with the noisy (or clean) classifier's gradient — each of the respaced ancestral steps
runs the digits UNet forward and the classifier forward + backward — then the readouts (evaluation
accuracy, diversity). Updates cycle through digits, scales and both classifiers, as a reader would; one
warm-up call is not counted. The 1-minute load average is recorded next to the result: the machines are shared.

    python benchmarks/widget_classifier_guidance.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from glide_edu.book.ch05 import explorer_models, guidance_view

SCALES = (0.5, 1.0, 2.0, 4.0, 8.0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = explorer_models(args.steps, args.samples)
    guidance_view(models, 0, 1.0)  # warm-up
    load_start = os.getloadavg()[0]
    seconds = []
    for i in range(args.updates):
        classifier = "noisy" if i % 4 else "clean"
        start = time.perf_counter()
        guidance_view(models, (7 * i + 3) % 10, SCALES[i % len(SCALES)], classifier)
        seconds.append(time.perf_counter() - start)
    result = {
        "median_s": round(statistics.median(seconds), 3),
        "min_s": round(min(seconds), 3),
        "max_s": round(max(seconds), 3),
        "updates": args.updates,
        "samples": args.samples,
        "steps": args.steps,
        "threads": args.threads,
        "loadavg_1min_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
