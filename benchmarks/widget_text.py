"""Latency of one update of the text-to-image prompt explorer (chapters 7, 8, 12; target ≤ 1.0 s on 2 cores).

The explorer (:class:`glide_edu.pipelines.explorer.PromptExplorer` on the shipped miniature) serves the
precomputed (prompt, method, scale) views of ``data/results/glide_mini_explorer.safetensors``; a prompt outside
that list is sampled live (4 pictures × 20 respaced steps, a doubled batch of 8 for CFG) with a progress bar.
This script times both, each over 20 different settings (one untimed warm-up):

* ``precomputed`` — what a reader moving the slider and switching the method waits for (includes the oracle's
  verdicts, which are recomputed when the views are loaded, not per update);
* ``live`` — a fresh prompt: the full sampling of one view.

``--clips``: chapter 8's explorer instead — CLIP guidance with the noised CLIP or the clean control
(``data/results/glide_mini_clip_explorer.safetensors``); its live views need the CLIP's gradient at every step.

    python benchmarks/widget_text.py [--threads 2] [--clips]
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch
from widget_timing import time_updates

from glide_edu.pipelines.mini import EXPLORER_CLIP_GRID, EXPLORER_GRID, EXPLORER_PROMPTS, mini_explorer


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--clips", action="store_true", help="chapter 8's CLIP-guided explorer")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    explorer = mini_explorer(progress=False, clips=args.clips)
    grid = EXPLORER_CLIP_GRID if args.clips else EXPLORER_GRID
    keys = [(p, m, s) for p, (m, scales) in itertools.product(EXPLORER_PROMPTS, grid.items())
            for s in (scales or (0.0,))]
    settings = [keys[(7 * i) % len(keys)] for i in range(args.updates)]
    pre = time_updates(lambda k: explorer(*k), settings, threads=args.threads, kind="precomputed")
    method, scale = ("clip", 4.0) if args.clips else ("cfg", 3.0)
    fresh = [(f"a {c} {s}", method, scale) for c, s in itertools.product(("red", "green", "purple", "blue", "yellow"),
                                                                       ("circle", "square", "triangle", "heart"))]
    live_explorer = mini_explorer(precomputed=False, progress=False, clips=args.clips)

    def sample_live(key: tuple[str, str, float]):
        live_explorer.cache.clear()  # every update samples
        return live_explorer(*key)

    live = time_updates(sample_live, fresh[: args.updates], threads=args.threads, kind="live",
                        samples=live_explorer.n, steps=live_explorer.steps)
    result = {"explorer": "clip" if args.clips else "cfg", "precomputed": pre, "live": live}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
