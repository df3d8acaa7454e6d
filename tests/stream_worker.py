"""One process of the streamed-data DDP test (``tests/test_streaming.py``), run under ``torchrun``: a tiny GLIDE
base model trained on webdataset shards; each rank writes the captions it trained on and its last logs.

    python tests/stream_worker.py SHARDS RUN_DIR OUT_DIR STEPS
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from glide_edu import distributed as ddp
from glide_edu.streaming import StreamConfig
from glide_edu.train import TrainConfig
from glide_edu.train_stream import stream_trainer

TINY = {"image_size": 16, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
        "attention_resolutions": "8", "num_head_channels": 32, "num_heads": 1, "num_heads_upsample": -1,
        "dropout": 0.0, "use_scale_shift_norm": True, "resblock_updown": True, "text_ctx": 32, "xf_width": 32,
        "xf_layers": 1, "xf_heads": 2, "xf_final_ln": True, "xf_padding": True, "n_vocab": 257,
        "tokenizer": "bytes", "diffusion_steps": 50, "noise_schedule": "squaredcos_cap_v2"}


def main(shards: str, run_dir: str, out: str, steps: int) -> None:
    torch.set_num_threads(1)
    ddp.init_from_env(backend="gloo")
    config = TrainConfig(steps=steps, batch_size=4, lr=1e-3, progress=False, log_every=1, loss_type="hybrid")
    trainer = stream_trainer(TINY, StreamConfig(shards, 16, shuffle_buffer=3), config, p_uncond=0.2, run_dir=run_dir)
    seen: list[str] = []
    draw = trainer.batch

    def batch():
        x0, kwargs = draw()
        seen.extend(trainer.last_captions)
        return x0, kwargs

    trainer.batch = batch
    trainer.train()
    record = {"captions": seen, "logs": trainer.history[-1], "world_size": trainer.world_size,
              "positions": {str(k): v for k, v in trainer.positions.items()}}
    Path(out, f"rank{trainer.rank}.json").write_text(json.dumps(record))
    ddp.barrier()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
