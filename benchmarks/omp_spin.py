"""What OpenMP's waiting policy costs a 2-thread training step on an idle and on a busy 2-core machine.

PyTorch's CPU wheels for Linux parallelise with GNU OpenMP (libgomp), whose idle threads spin for a while
before sleeping. When another process holds a core (a background training run, a second CI job), the spinning
threads fight it for the CPU. This script times chapter 3's live-training step (its small UNet, batch 64,
AdamW) with two threads in a fresh process per setting — the default, ``GOMP_SPINCOUNT=1000`` (what the
Makefile exports) and ``OMP_WAIT_POLICY=PASSIVE`` — first on the idle machine, then with ``--load`` busy
single-threaded processes running beside it.

    python benchmarks/omp_spin.py [--load 2] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SETTINGS = {"default": {}, "GOMP_SPINCOUNT=1000": {"GOMP_SPINCOUNT": "1000"},
            "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}}

STEP = """
import time, torch
from glide_edu.nn.unet import UNetConfig, UNetModel
torch.set_num_threads(2); torch.manual_seed(0)
net = UNetModel(UNetConfig(image_size=16, in_channels=1, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                           attention_resolutions=(), num_head_channels=32, dropout=0.0))
opt = torch.optim.AdamW(net.parameters(), 1e-3)
x, t = torch.randn(64, 1, 16, 16), torch.randint(0, 1000, (64,))
for i in range({steps} + 5):
    if i == 5:
        start = time.perf_counter()
    loss = net(x, t).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
print((time.perf_counter() - start) / {steps})
"""

LOAD = "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True:\n    a = (a @ a).tanh()\n"


def step_seconds(extra_env: dict[str, str], steps: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")} | extra_env
    out = subprocess.run([sys.executable, "-c", STEP.format(steps=steps)], env=env, check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--load", type=int, default=2, help="busy single-threaded processes for the loaded run")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    for state in ("idle", f"{args.load} busy processes"):
        load = []
        if state != "idle":
            env = dict(os.environ, OMP_NUM_THREADS="1")
            load = [subprocess.Popen([sys.executable, "-c", LOAD], env=env) for _ in range(args.load)]
            time.sleep(3)
        try:
            results[state] = {name: round(step_seconds(env, args.steps), 3) for name, env in SETTINGS.items()}
        finally:
            for proc in load:
                proc.kill()
                proc.wait()
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
