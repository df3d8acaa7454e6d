"""One process of the DDP tests (``tests/test_ddp.py``): run it plainly for one process, under ``torchrun`` for
N. It trains a tiny class-conditional UNet with label dropout, the loss-aware timestep sampler and checkpoints,
and rank 0 writes the final weights, EMA, Adam moments and sampler history to one safetensors file.

    python tests/ddp_worker.py RUN_DIR OUT STEPS [ddp|fsdp]
"""

from __future__ import annotations

import sys
from dataclasses import asdict

import torch
from safetensors.torch import save_file

from glide_edu import distributed as ddp
from glide_edu.nn.unet import UNetConfig, UNetModel
from glide_edu.respace import create_diffusion
from glide_edu.train import TrainConfig, Trainer


def main(run_dir: str, out: str, steps: int, parallel: str = "ddp") -> None:
    torch.set_num_threads(1)
    ddp.init_from_env(backend="gloo")
    cfg = UNetConfig(image_size=16, in_channels=1, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                     attention_resolutions=(8,), dropout=0.0, learn_sigma=True, num_classes=5)
    torch.manual_seed(0)
    data = torch.Generator().manual_seed(1)
    images = torch.rand(64, 1, 16, 16, generator=data) * 2 - 1  # (64, 1, 16, 16)
    labels = torch.randint(0, 4, (64,), generator=data)
    diffusion = create_diffusion(4, "cosine", model_var_type="learned_range")  # 4 steps: the sampler warms up
    config = TrainConfig(steps=steps, batch_size=16, lr=1e-3, progress=False, log_every=1, checkpoint_every=3,
                         keep_checkpoints=2, loss_type="hybrid", schedule_sampler="loss-second-moment",
                         parallel=parallel, extra_ema_rates=[0.5])  # a second EMA: sharded, gathered, resumed
    trainer = Trainer(UNetModel(cfg), diffusion, images, config, labels=labels, run_dir=run_dir,
                      model_config={"unet": asdict(cfg)}, diffusion_config={"steps": 4},
                      label_dropout=0.2, null_label=4)
    trainer.train()
    sharded = trainer.fsdp
    model_state = ddp.full_state(trainer.model) if sharded else trainer.model.state_dict()
    ema_state = trainer.full_ema().state_dict()
    ema_fast = trainer.full_ema(0.5).state_dict()
    optimizer = (ddp.full_optimizer_state(trainer.model, trainer.optimizer) if sharded
                 else trainer.optimizer.state_dict())
    if ddp.is_main_process():
        state = {f"model.{k}": v for k, v in model_state.items()}
        state |= {f"ema.{k}": v for k, v in ema_state.items()}
        state |= {f"ema0.5.{k}": v for k, v in ema_fast.items()}
        for i, s in optimizer["state"].items():
            state |= {f"adam.{i}.{k}": v.reshape(-1) if v.ndim == 0 else v for k, v in s.items()}
        state["sampler_history"] = torch.from_numpy(trainer.sampler._history.copy())
        state["loss"] = torch.tensor([h["loss"] for h in trainer.history])
        save_file({k: v.contiguous() for k, v in state.items()}, out)
    ddp.barrier()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:5])
