"""CPU time to a fixed FID-proxy on the digits: glide_edu's recipe vs denoising-diffusion-pytorch's defaults.

Each framework trains on the same 16×16 training digits (``glide_edu.data.load_digits(16, "train")``) in
its own process with one thread; every ``--eval-every`` CPU-seconds of *training* the EMA model draws
``--n-samples`` digits with that framework's 100-step sampler and the FID-proxy against the training digits
is recorded (evaluation time is not counted). The result is the CPU time at which each run first reaches
``--target``; the ratio glide_edu / denoising-diffusion-pytorch is the benchmark (target ≤ 0.5).

* glide_edu: the shipped ``digits --loss simple`` recipe (ADM UNet, 2.0 M parameters, cosine schedule,
  L_simple, AdamW 5e-4, batch 64, EMA 0.999, grad clip 1), sampled with 100 respaced ancestral steps, Σ = β̃;
  ``--ema-warmup`` adds the EMA decay warm-up min(0.999, (1 + n)/(10 + n)) (``TrainConfig.ema_warmup``).
* denoising-diffusion-pytorch (lucidrains, v2): ``Unet(dim=64, dim_mults=(1, 2, 4, 8), channels=1)`` and
  ``GaussianDiffusion(image_size=16)`` with their defaults (1000 steps, sigmoid schedule, v-prediction),
  trained the way its ``Trainer`` does with its defaults (Adam 1e-4, betas 0.9/0.99, batch 16, grad-norm
  clip 1, ``ema_pytorch.EMA`` 0.995 every 10 steps), sampled with ``sampling_timesteps=100`` (its DDIM). The
  loop is written out here because its ``Trainer`` reads image folders; the only default changed is the
  horizontal-flip augmentation, which is off (a mirrored digit is not a digit).

denoising-diffusion-pytorch needs torchvision, which does not import beside the CPU torch of the book's
venv, so this runs in a separate venv with torch 2.14.1 + torchvision 0.29.1 (both frameworks, same venv):

    python -m venv ddpm-venv && ddpm-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 \
        denoising-diffusion-pytorch scikit-learn safetensors torchmetrics scipy tqdm
    PYTHONPATH=. ddpm-venv/bin/python benchmarks/time_to_fid.py run glide_edu --ema-warmup --eval-every 120 \
        --out ttf_glide.json &
    PYTHONPATH=. ddpm-venv/bin/python benchmarks/time_to_fid.py run ddpm --eval-every 300 --out ttf_ddpm.json &
    wait; python benchmarks/time_to_fid.py report ttf_glide.json ttf_ddpm.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor


def glide_edu_run(
    images: Tensor, ema_warmup: bool = False
) -> tuple[Callable[[], float], Callable[[int, torch.Generator], Tensor], dict]:
    """(train_step, sample, info) for glide_edu's digits recipe, optionally with the EMA warm-up."""
    from glide_edu.nn.unet import UNetModel
    from glide_edu.recipes import DIGITS_TRAIN, digits_configs
    from glide_edu.respace import create_diffusion
    from glide_edu.train import Trainer

    unet_cfg, diffusion_cfg = digits_configs("simple")
    model = UNetModel(unet_cfg)
    diffusion = create_diffusion(**diffusion_cfg)
    cfg = replace(DIGITS_TRAIN, steps=10**9, progress=False, loss_type="simple", checkpoint_every=10**9,
                  ema_warmup=ema_warmup)
    trainer = Trainer(model, diffusion, images, cfg)
    sampler = create_diffusion(**diffusion_cfg, timestep_respacing="100")

    def step() -> float:
        return float(trainer.train_step()["loss"])

    def sample(n: int, gen: torch.Generator) -> Tensor:
        ema = trainer.ema_model.eval()
        noise = torch.randn(n, 1, 16, 16, generator=gen)
        with torch.no_grad():
            return sampler.p_sample_loop(ema, noise.shape, noise=noise, generator=gen)

    params = sum(p.numel() for p in model.parameters())
    return step, sample, {"params": params, "batch": cfg.batch_size, "lr": cfg.lr, "sampler": "100 ancestral",
                          "ema_warmup": ema_warmup}


def ddpm_run(images: Tensor) -> tuple[Callable[[], float], Callable[[int, torch.Generator], Tensor], dict]:
    """(train_step, sample, info) for denoising-diffusion-pytorch with its defaults."""
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet
    from ema_pytorch import EMA

    model = Unet(dim=64, dim_mults=(1, 2, 4, 8), channels=1)
    diffusion = GaussianDiffusion(model, image_size=16, sampling_timesteps=100)
    opt = torch.optim.Adam(diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))
    ema = EMA(diffusion, beta=0.995, update_every=10)
    data01 = (images + 1) / 2  # its auto_normalize maps [0, 1] → [−1, 1]
    batch = 16
    gen = torch.Generator().manual_seed(0)

    def step() -> float:
        diffusion.train()
        idx = torch.randint(0, len(data01), (batch,), generator=gen)
        loss = diffusion(data01[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        ema.update()
        return float(loss.detach())

    def sample(n: int, g: torch.Generator) -> Tensor:
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))  # its sampler draws from the global RNG
        ema.ema_model.eval()
        with torch.no_grad():
            return ema.ema_model.sample(batch_size=n) * 2 - 1  # back to [−1, 1]

    params = sum(p.numel() for p in model.parameters())
    return step, sample, {"params": params, "batch": batch, "lr": 1e-4, "sampler": "100 DDIM (eta 0)"}


def run(framework: str, out: Path, target: float, eval_every: float, budget: float, n_samples: int,
        ema_warmup: bool = False) -> None:
    from glide_edu.data import load_digits
    from glide_edu.metrics import fid_proxy, load_feature_net

    torch.set_num_threads(1)
    torch.manual_seed(0)
    images, _ = load_digits(16, "train")
    step, sample, info = glide_edu_run(images, ema_warmup) if framework == "glide_edu" else ddpm_run(images)
    net = load_feature_net()
    log: list[dict] = []
    record = {"framework": framework, "target": target, "n_samples": n_samples, "info": info,
              "torch": torch.__version__,
              "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "date": time.strftime("%Y-%m-%d"),
              "evals": log, "reached_at_cpu_s": None}
    cpu, steps, next_eval = 0.0, 0, eval_every
    while cpu < budget:
        t0 = time.process_time()
        loss = step()
        cpu += time.process_time() - t0
        steps += 1
        if cpu >= next_eval:
            next_eval += eval_every
            w0 = time.perf_counter()
            fake = sample(n_samples, torch.Generator().manual_seed(1))
            fid = fid_proxy(images, fake, net)
            log.append({"cpu_s": round(cpu, 1), "steps": steps, "loss": loss, "fid_proxy": fid,
                        "eval_wall_s": round(time.perf_counter() - w0, 1)})
            print(json.dumps(log[-1]), flush=True)
            out.write_text(json.dumps(record, indent=1))
            if fid <= target:
                record["reached_at_cpu_s"] = round(cpu, 1)
                break
    out.write_text(json.dumps(record, indent=1))


def report(paths: list[Path]) -> None:
    recs = {r["framework"] + ("+warmup" if r["info"].get("ema_warmup") else ""): r
            for r in (json.loads(p.read_text()) for p in paths)}
    for name, r in recs.items():
        reached = r["reached_at_cpu_s"]
        last = r["evals"][-1] if r["evals"] else {}
        print(f"{name:10s} params {r['info']['params']:>10,}  batch {r['info']['batch']:>3}  "
              f"reached FID-proxy ≤ {r['target']} at: {f'{reached / 60:.1f} CPU-min' if reached else 'not reached'}"
              f"  (last eval: {last.get('cpu_s', 0) / 60:.1f} CPU-min, step {last.get('steps')}, "
              f"FID-proxy {last.get('fid_proxy', float('nan')):.1f})")
    d = recs.get("ddpm")
    for name, g in recs.items():
        if name == "ddpm" or not d or not g["reached_at_cpu_s"]:
            continue
        if d["reached_at_cpu_s"]:
            # each run crossed the target somewhere between its last eval above it and its first eval below it
            (g_lo, g_hi), (d_lo, d_hi) = _bracket(g), _bracket(d)
            print(f"ratio {name} / ddpm: {g_hi / d_hi:.2f} at the evaluations "
                  f"(crossing brackets ({g_lo:.0f}, {g_hi:.0f}] vs ({d_lo:.0f}, {d_hi:.0f}] CPU-s: "
                  f"ratio between {g_lo / d_hi:.2f} and {g_hi / max(d_lo, 1e-9):.2f})")
        else:
            print(f"ratio {name} / ddpm: < {g['reached_at_cpu_s'] / d['evals'][-1]['cpu_s']:.2f} (ddpm not reached)")


def _bracket(record: dict) -> tuple[float, float]:
    """(CPU-s of the last evaluation above the target, CPU-s of the first one at or below it)."""
    above = [e["cpu_s"] for e in record["evals"] if e["fid_proxy"] > record["target"]]
    return (max(above) if above else 0.0), record["reached_at_cpu_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("framework", choices=["glide_edu", "ddpm"])
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--target", type=float, default=50.0, help="FID-proxy to reach (200 samples vs training digits)")
    r.add_argument("--eval-every", type=float, default=180.0, help="CPU-seconds of training between evaluations")
    r.add_argument("--budget", type=float, default=3600.0, help="give up after this many CPU-seconds of training")
    r.add_argument("--n-samples", type=int, default=200)
    r.add_argument("--ema-warmup", action="store_true",
                   help="glide_edu only: TrainConfig(ema_warmup=True), min(0.999, (1+n)/(10+n)) as EMA decay")
    rep = sub.add_parser("report")
    rep.add_argument("paths", type=Path, nargs="+")
    args = ap.parse_args()
    if args.cmd == "run":
        run(args.framework, args.out, args.target, args.eval_every, args.budget, args.n_samples, args.ema_warmup)
    else:
        report(args.paths)


if __name__ == "__main__":
    main()
