"""Chapter 15 only: scaling up — memory arithmetic of a training run, the book's configs beside the official
presets, a 2-process DDP run on CPU and the fp16 loss-scale trace of the trainer.

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m glide_edu.book.ch15 OUT STEPS

runs one rank of the chapter's data-parallel run (:func:`run_ddp` launches it); rank 0 writes the losses and
the final weights to ``OUT`` (safetensors).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glide_edu import distributed as ddp
from glide_edu.data import load_digits
from glide_edu.nn.unet import UNetConfig, UNetModel
from glide_edu.respace import create_diffusion
from glide_edu.train import TrainConfig, Trainer

__all__ = [
    "DDP_UNET",
    "config_rows",
    "count_parameters",
    "ddp_trainer",
    "per_gpu_bytes",
    "run_ddp",
    "training_memory",
]

# ------------------------------------------------------------------------------------- memory arithmetic
SCHEMES = ("autocast", "fp16-weights")


def training_memory(n_params: int, scheme: str = "autocast", emas: int = 1) -> dict[str, int]:
    """Bytes of the training state of an ``n_params`` model trained with AdamW (activations not included).

    ``"autocast"`` is this library's scheme (fp32, bf16 and fp16 alike): float32 weights — they are the master
    copy — float32 gradients, Adam's two float32 moments and ``emas`` float32 EMA copies. ``"fp16-weights"`` is
    the reference trainer's (guided-diffusion's ``MixedPrecisionTrainer``): the network's own weights and
    gradients in float16, plus float32 master weights and gradients that Adam and the EMA work on."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme {scheme!r}: choose one of {', '.join(SCHEMES)}")
    n = int(n_params)
    parts = {"weights": 4 * n, "gradients": 4 * n}
    if scheme == "fp16-weights":
        parts = {"weights": 2 * n, "gradients": 2 * n, "master weights": 4 * n, "master gradients": 4 * n}
    return parts | {"Adam m": 4 * n, "Adam v": 4 * n, "EMA": 4 * n * emas}


def per_gpu_bytes(parts: dict[str, int], n_gpus: int, parallel: str = "ddp") -> int:
    """Training-state bytes on each of ``n_gpus`` GPUs: DDP replicates every part, FSDP (ZeRO-3) shards them all."""
    total = sum(parts.values())
    if parallel == "ddp":
        return total
    if parallel == "fsdp":
        return -(-total // n_gpus)
    raise ValueError(f"parallel {parallel!r}: ddp or fsdp")


def count_parameters(config: dict[str, Any]) -> int:
    """Parameters of a shipped (or any) training config's network, built on the meta device (nothing allocated)."""
    from glide_edu.nn.presets import create_glide_model
    from glide_edu.train_run import glide_parts

    with torch.device("meta"):
        if config["kind"] == "glide":
            network = create_glide_model(glide_parts(config)[0])
        elif config["kind"] == "unet":
            model = dict(config["model"])
            for key in ("channel_mult", "attention_resolutions"):
                if key in model:
                    model[key] = tuple(model[key])
            network = UNetModel(UNetConfig(**model))
        else:
            raise ValueError(f"kind {config['kind']!r}: count_parameters handles unet and glide configs")
    return sum(p.numel() for p in network.parameters())


def _mult(value: Any, image_size: int) -> str:
    if isinstance(value, str) and not value:  # GLIDE's "": the default for the size
        value = {64: "1,2,3,4", 128: "1,1,2,3,4", 256: "1,1,2,2,4,4"}[image_size]
    return ",".join(str(v) for v in (value.split(",") if isinstance(value, str) else value))


def config_rows(names: list[str]) -> list[dict[str, Any]]:
    """One row per shipped config (read from its TOML file): the network's shape, its size and how it trains."""
    from glide_edu.train_run import read_config

    rows = []
    for name in names:
        cfg = read_config(name)
        m, t = cfg["model"], cfg["train"]
        glide = cfg["kind"] == "glide"
        size = m["image_size"]
        rows.append({
            "config": name,
            "image": f"{size}×{size}" + (f" (from {cfg['data'].get('low_res_size', size // 4)})"
                                         if m.get("super_res") else ""),
            "channels": m["num_channels"] if glide else m["model_channels"],
            "mult": _mult(m.get("channel_mult", ""), size),
            "res blocks": m["num_res_blocks"],
            "attention at": _mult(m["attention_resolutions"], size),
            "text": f"{m['xf_layers']}×{m['xf_width']}, ctx {m['text_ctx']}" if glide else "—",
            "params": count_parameters(cfg),
            "batch": t["batch_size"],
            "steps": t["steps"],
        })
    return rows


# ------------------------------------------------------------------------------------- data parallelism
DDP_UNET = UNetConfig(image_size=16, in_channels=1, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=(8,), dropout=0.0, learn_sigma=True)


def ddp_trainer(steps: int, run_dir: str | os.PathLike | None = None, precision: str = "fp32",
                batch_size: int = 16) -> Trainer:
    """The chapter's small run: a 16×16 UNet (one ResBlock per level) on 256 training digits, hybrid loss.

    Built the same way in every process (same seed), so 1 process and N processes start from equal weights
    and draw equal global batches; under ``torchrun`` the trainer becomes one DDP rank."""
    torch.manual_seed(0)
    images = load_digits()[0][:256]
    diffusion = create_diffusion(1000, "cosine", model_var_type="learned_range")
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=1e-3, progress=False, log_every=1,
                         loss_type="hybrid", precision=precision)
    return Trainer(UNetModel(DDP_UNET), diffusion, images, config, run_dir=run_dir,
                   model_config={"unet": asdict(DDP_UNET)}, diffusion_config={"steps": 1000})


def _worker(out: str, steps: int) -> None:
    """One rank: train, then rank 0 writes the per-step losses and the final weights (and the world size)."""
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    ddp.init_from_env(backend="gloo")
    trainer = ddp_trainer(steps)  # no run folder: nothing to write but the result below
    trainer.train()
    if ddp.is_main_process():
        state = {f"model.{k}": v.contiguous() for k, v in trainer.model.state_dict().items()}
        state["loss"] = torch.tensor([h["loss"] for h in trainer.history])
        state["world_size"] = torch.tensor([trainer.world_size])
        save_file(state, out)
    ddp.barrier()


def run_ddp(steps: int, nproc: int = 2, timeout: float = 300) -> dict[str, Tensor]:
    """Launch ``nproc`` CPU processes (gloo) with ``torch.distributed.run`` and return rank 0's results."""
    from safetensors.torch import load_file

    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env |= {"OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "ddp.safetensors"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "glide_edu.book.ch15", str(out), str(steps)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"the {nproc}-process run failed:\n{proc.stderr[-3000:]}")
        return load_file(out)


if __name__ == "__main__":
    _worker(sys.argv[1], int(sys.argv[2]))
