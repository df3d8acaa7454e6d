"""Training throughput, peak memory and model FLOP utilisation of GLIDE's base model (385 M) at 64×64.

The real trainer (``glide_edu.train_text.TextTrainer``: hybrid loss, AdamW, EMA, clipping) on synthetic
pictures and captions, for each precision and batch size; a batch that does not fit is recorded as "OOM" and
the sweep goes on. Under ``torchrun`` it measures N GPUs (DDP, or FSDP with ``--parallel fsdp``; batch sizes are
global). MFU = model FLOPs per image (counted once with ``torch.utils.flop_counter`` on a forward + backward)
× images/s ÷ the GPUs' peak dense FLOP/s (``--peak-tflops``, else a table of known GPUs).

    python benchmarks/gpu_train.py --device cuda --precision bf16 fp16 --batch-sizes 16 32 64 128
    torchrun --nproc_per_node 8 benchmarks/gpu_train.py --device auto --precision bf16 --batch-sizes 256 512
    python benchmarks/gpu_train.py --tiny --device cpu --steps 2 --batch-sizes 2   # a smoke test on a CPU
    python benchmarks/gpu_train.py --estimate-memory                                # no GPU: the arithmetic

``--estimate-memory`` needs no GPU: it counts the bytes autograd saves for the backward pass of one image
(forward + loss at batch 2 on the CPU, per precision, with and without gradient checkpointing) and adds the
static memory of training — float32 weights, gradients, two Adam moments and the EMA copy, 16 bytes per
parameter — to estimate a GPU's peak memory per batch size (allocator overheads and workspaces not counted).

Writes JSON (``--out``, default benchmarks/results/gpu_train.json) with the machine and date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path

import torch

from glide_edu import distributed as ddp
from glide_edu.hub.registry import CHECKPOINTS
from glide_edu.nn.presets import create_glide_model
from glide_edu.respace import DiffusionConfig
from glide_edu.train import TrainConfig
from glide_edu.train_text import MINI_OPTIONS, TextTrainer

# Peak dense bf16/fp16 tensor-core FLOP/s by device-name fragment (vendor data sheets, SXM parts).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "V100": 125.0}


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def flops_per_image(model: torch.nn.Module, options: dict, device: torch.device) -> float:
    """Forward + backward FLOPs of the network for one image (batch 2, halved)."""
    from torch.utils.flop_counter import FlopCounterMode

    size, ctx = int(options["image_size"]), int(options["text_ctx"])
    x = torch.randn(2, 3, size, size, device=device)
    t = torch.tensor([10, 500], device=device)
    tokens = torch.zeros(2, ctx, dtype=torch.long, device=device)
    mask = torch.ones(2, ctx, dtype=torch.bool, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x, t, tokens=tokens, mask=mask).float().pow(2).mean().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def saved_bytes_per_image(options: dict, precision: str, checkpointing: bool) -> float:
    """Bytes autograd keeps for the backward pass, per image (one forward at batch 2 on the CPU)."""
    torch.manual_seed(0)
    model = create_glide_model(options).train()
    if checkpointing:
        model.enable_gradient_checkpointing()
    size, ctx = int(options["image_size"]), int(options["text_ctx"])
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()  # each storage once (views share it)
        return t

    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = model(torch.randn(2, 3, size, size), torch.tensor([10, 500]),
                    tokens=torch.zeros(2, ctx, dtype=torch.long), mask=torch.ones(2, ctx, dtype=torch.bool))
        out.float().pow(2).mean()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(v for k, v in seen.items() if k not in params) / 2


def estimate_memory(options: dict, batches: list[int]) -> dict:
    n = sum(p.numel() for p in create_glide_model(options).parameters())
    static = 16 * n  # float32 weights + gradients + Adam m, v + EMA
    rows = []
    for precision in ("fp32", "bf16"):
        for ckpt in (False, True):
            per_image = saved_bytes_per_image(options, precision, ckpt)
            rows.append({"precision": precision, "grad_checkpointing": ckpt,
                         "activations_gib_per_image": round(per_image / 2**30, 3),
                         "estimated_peak_gib": {b: round((static + b * per_image) / 2**30, 1) for b in batches}})
            print(json.dumps(rows[-1]), flush=True)
    return {"parameters": n, "static_gib": round(static / 2**30, 2), "rows": rows}


def measure(options: dict, precision: str, batch: int, steps: int, warmup: int, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = create_glide_model(options)
    size, ctx = int(options["image_size"]), int(options["text_ctx"])
    n = max(batch, 64)
    images = torch.rand(n, 3, size, size) * 2 - 1  # (n, 3, S, S) synthetic pictures
    tokens = torch.randint(0, int(options.get("n_vocab", 50257)), (n, ctx))
    mask = torch.ones(n, ctx, dtype=torch.bool)
    config = TrainConfig(steps=warmup + steps, batch_size=batch, lr=1e-4, loss_type="hybrid", progress=False,
                         device=args.device, precision=precision, parallel=args.parallel,
                         grad_checkpointing=args.grad_checkpointing)
    diffusion = DiffusionConfig(int(options["diffusion_steps"]), str(options["noise_schedule"])).create("")
    trainer = TextTrainer(model, diffusion, images, tokens, mask, config)
    device = trainer.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        trainer.train_step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    sync()
    seconds = time.perf_counter() - start
    row = {"precision": precision, "batch": batch, "world_size": trainer.world_size,
           "images_per_s": round(batch * steps / seconds, 2), "step_seconds": round(seconds / steps, 4)}
    if device.type == "cuda":
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", nargs="+", default=["bf16", "fp16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--parallel", default="ddp", choices=["ddp", "fsdp"])
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None, help="per GPU (default: the known-GPU table)")
    parser.add_argument("--tiny", action="store_true", help="the book's miniature instead of the 385 M base")
    parser.add_argument("--estimate-memory", action="store_true", help="no GPU needed: memory arithmetic")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu_train.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ddp.init_from_env()
    options = dict(MINI_OPTIONS) if args.tiny else {**CHECKPOINTS["base"].options, "n_vocab": 50257}
    if args.estimate_memory:
        result = {"benchmark": "gpu_train --estimate-memory", "model": "miniature" if args.tiny else "GLIDE base",
                  "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
                  **estimate_memory(options, args.batch_sizes)}
        out = args.out.with_name(args.out.stem + "_memory.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}")
        return
    rows = []
    for precision in args.precision:
        for batch in args.batch_sizes:
            try:
                rows.append(measure(options, precision, batch, args.steps, args.warmup, args))
            except torch.OutOfMemoryError:
                rows.append({"precision": precision, "batch": batch, "result": "OOM"})
                torch.cuda.empty_cache()
            if ddp.is_main_process():
                print(json.dumps(rows[-1]), flush=True)
    from glide_edu.train_config import resolve_training_device

    device = resolve_training_device(args.device)
    model = create_glide_model(options).to(device)
    flops = flops_per_image(model, options, device)
    peak = peak_tflops(device, args.peak_tflops)
    for row in rows:
        if "images_per_s" in row and peak:
            row["mfu"] = round(flops * row["images_per_s"] / (peak * 1e12 * row["world_size"]), 4)
    if ddp.is_main_process():
        result = {
            "benchmark": "gpu_train", "model": "miniature" if args.tiny else "GLIDE base 64x64",
            "parameters": sum(p.numel() for p in model.parameters()), "train_flops_per_image": flops,
            "peak_tflops_per_device": peak,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
            "rows": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
