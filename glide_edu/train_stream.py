"""Training a GLIDE network on webdataset shards streamed from disk (``[data] source = "webdataset"``).

:class:`StreamingTextTrainer` is :class:`~glide_edu.train_text.TextTrainer` fed by a
:class:`~glide_edu.streaming.ShardStream` instead of tensors in memory:

* **Per rank.** Each torchrun rank reads its own shards (and each of its DataLoader workers its own share of
  them) and trains on ``batch_size / world_size`` of its samples per step; its timesteps, noise, empty
  captions and inpainting masks come from a generator seeded with ``seed`` and the rank. (The in-memory path
  instead draws the global batch on every rank and slices it, which is why N processes equal one there; with
  disjoint data they cannot.)
* **Logged.** ``data_seen`` (samples trained on, all ranks), ``data_skipped`` (unreadable or uncaptioned
  samples passed over, all ranks) and ``data_epoch`` (the epoch every reader has reached) join the losses in
  ``metrics.csv``.
* **Resume.** A checkpoint keeps, per rank, each reader's (epoch, position) after the last sample trained
  on, the DataLoader's round-robin phase and the rank's generator. Resumed with the same shards, shuffle
  buffer, seed, number of processes and ``num_workers``, the run continues on exactly the samples the
  uninterrupted run would have seen — bit-identical weights on a deterministic device (tested). Re-reading
  the current epoch's shards up to the position costs reading their bytes again (no decoding). With any of
  those changed, positions do not carry over: every reader starts the next epoch (a fresh shard order) and a
  warning says so — the rest of the interrupted epoch is not seen, nothing is seen twice within an epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from glide_edu import distributed as ddp
from glide_edu.datasets import decode_sample, read_shard
from glide_edu.diffusion import GaussianDiffusion
from glide_edu.streaming import ShardStream, StreamConfig
from glide_edu.train import Trainer
from glide_edu.train_config import TrainConfig
from glide_edu.train_text import GlideTask, TextTrainer, tokenizer_for

RANK_SEED_STRIDE = 1_000_003  # rank r's batch generator is seeded with seed + r · this


class StreamingTextTrainer(TextTrainer):
    """Train a GLIDE network (``task``) on captioned images streamed from webdataset shards (module docs)."""

    local_batches = True
    LOG_FIELDS = ("data_seen", "data_skipped", "data_epoch")

    def __init__(self, model: nn.Module, diffusion: GaussianDiffusion, stream: StreamConfig, config: TrainConfig,
                 *, options: dict[str, Any], p_uncond: float, task: GlideTask | None = None, **kwargs: Any) -> None:
        if not 0.0 <= p_uncond < 1.0:
            raise ValueError(f"p_uncond={p_uncond}: give a probability in [0, 1), e.g. 0.2 as GLIDE")
        stream.validate()
        size = int(options["image_size"])
        if stream.image_size != size:
            raise ValueError(f"[data] image_size = {stream.image_size} but the model's image_size is {size}; "
                             "the shards' images are cropped to the model's size: make them equal")
        rank, world = ddp.rank_and_world()
        ShardStream(stream, 0, rank, world)  # one clear error now for too few shards, not in a worker later
        self.stream_config, self.options, self.p_uncond, self.weights = stream, options, p_uncond, None
        self.task = task or GlideTask.from_options(options)
        self.tokenizer, self.text_ctx = tokenizer_for(options), int(options["text_ctx"])
        self.empty_tokens = self.tokenizer.tokens_and_mask([""], self.text_ctx)[0][0]  # (text_ctx,) all padding
        self.grid_prompts, self._grid = None, None
        self.workers = max(1, stream.num_workers)
        self.positions: dict[int, tuple[int, int]] = {}  # reader → (epoch, pos) of the last sample trained on
        self.phase = self.seen = self.skipped = 0  # round-robin phase; samples trained on / skipped, this rank
        self.last_captions: list[str] = []
        self._items: Any = None
        self._warned_skips = False
        Trainer.__init__(self, model, diffusion, None, config, **kwargs)  # (resumes: load_data_state)

    # ------------------------------------------------------------------------------------------ data
    def _check_data(self, model: nn.Module, images: Any, labels: Any) -> None:  # checked in __init__
        pass

    def batch_seed(self) -> int:
        return self.config.seed + RANK_SEED_STRIDE * self.rank

    @property
    def sample_shape(self) -> tuple[int, ...]:
        size = self.stream_config.image_size
        return (self.stream_config.channels, size, size)

    def _open(self) -> Any:
        dataset = ShardStream(self.stream_config, self.config.seed, self.rank, self.world_size,
                              start=self.positions, rotate=self.phase)
        if self.stream_config.num_workers == 0:
            return iter(dataset)
        return iter(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=self.stream_config.num_workers))

    def _next_item(self) -> dict[str, Any]:
        if self._items is None:
            self._items = self._open()
        item = next(self._items)
        self.positions[int(item["reader"])] = (int(item["epoch"]), int(item["pos"]))
        self.phase = (self.phase + 1) % self.workers
        self.seen += 1
        self.skipped += int(item["skipped"])
        return item

    def batch(self) -> tuple[Tensor, dict[str, Tensor]]:
        """This rank's ``batch_size / world_size`` streamed samples, their captions (GLIDE truncates long ones
        to text_ctx), ``p_uncond`` of them emptied, and the task's inputs."""
        items = [self._next_item() for _ in range(self.config.batch_size // self.world_size)]
        x0 = torch.stack([item["image"] for item in items])  # (b, 3, S, S)
        self.last_captions = [item["caption"] for item in items]
        tokens, mask = self.tokenizer.tokens_and_mask(self.last_captions, self.text_ctx)  # (b, text_ctx) each
        if self.p_uncond:
            drop = torch.rand(len(items), generator=self.generator) < self.p_uncond
            tokens[drop], mask[drop] = self.empty_tokens, False
        return x0, {"tokens": tokens, "mask": mask, **self.task.inputs(x0, self.generator)}

    def train_step(self) -> dict[str, float]:
        logs = super().train_step()
        epoch = min((e for e, _ in self.positions.values()), default=0)
        counts = ddp.all_gather_cat(torch.tensor([[self.seen, self.skipped, epoch]], dtype=torch.int64))
        logs["data_seen"], logs["data_skipped"] = float(counts[:, 0].sum()), float(counts[:, 1].sum())
        logs["data_epoch"] = float(counts[:, 2].min())
        if logs["data_skipped"] and not self._warned_skips and self.rank == 0:
            warnings.warn(f"step {self.step}: {int(logs['data_skipped'])} unreadable or uncaptioned sample(s) skipped "
                          "so far; the running count is data_skipped in metrics.csv", stacklevel=2)
            self._warned_skips = True
        return logs

    # ------------------------------------------------------------------------------------- resuming
    def _fingerprint(self) -> Tensor:
        """What the stream positions are relative to: the shard list and the shuffle buffer (8 bytes)."""
        key = json.dumps([self.stream_config.shard_list(), self.stream_config.shuffle_buffer, self.config.seed])
        return torch.tensor(list(hashlib.sha256(key.encode()).digest()[:8]), dtype=torch.uint8)

    def data_state(self) -> dict[str, Tensor]:
        """Every rank's reader positions, phase and counts (world, 2·workers + 3), generators and the stream's
        fingerprint (collective)."""
        pos = torch.full((self.workers, 2), -1, dtype=torch.int64)
        for reader, (epoch, p) in self.positions.items():
            pos[reader - self.rank * self.workers] = torch.tensor([epoch, p])
        row = torch.cat([pos.flatten(), torch.tensor([self.phase, self.seen, self.skipped])])
        return {"stream_state": ddp.all_gather_cat(row[None]),
                "stream_generators": ddp.all_gather_cat(self.generator.get_state()[None]),
                "stream_fingerprint": self._fingerprint()}

    def load_data_state(self, state: dict[str, Any]) -> None:
        rows = state.get("stream_state")
        if rows is None:
            raise ValueError("this checkpoint was written by a run on in-memory data; a streamed run cannot "
                             "continue it: train into another run_dir")
        w = self.workers
        pos = rows[:, :2 * w].reshape(rows.shape[0], w, 2)  # (world, workers, 2)
        same = (rows.shape[0] == self.world_size and rows.shape[1] == 2 * w + 3
                and torch.equal(state["stream_fingerprint"], self._fingerprint()))
        if same:
            mine = rows[self.rank]
            self.positions = {self.rank * w + i: (int(e), int(p)) for i, (e, p) in enumerate(pos[self.rank].tolist())
                              if e >= 0}
            self.phase, self.seen, self.skipped = (int(v) for v in mine[2 * w:])
            self.generator.set_state(state["stream_generators"][self.rank].clone())
            return
        epoch = int(pos[..., 0].max()) + 1
        self.positions = {self.rank * w + i: (epoch, 0) for i in range(w)}
        self.phase = 0
        totals = rows[:, -2:].sum(0) if self.rank == 0 else torch.zeros(2, dtype=torch.int64)
        self.seen, self.skipped = int(totals[0]), int(totals[1])  # the run's totals, kept on rank 0
        self.generator.manual_seed(self.batch_seed() + 7919 * self.step)
        if self.rank == 0:
            warnings.warn(f"the checkpoint's stream positions were written for another shard list, shuffle buffer, "
                          f"seed, number of processes or num_workers: every reader starts epoch {epoch} (a new "
                          "shard order); the rest of the interrupted epoch is not seen", stacklevel=2)

    # ---------------------------------------------------------------------------------------- grids
    def _grid_samples(self, n: int) -> tuple[Tensor, list[str]]:
        """The first ``n`` readable samples of the shards in file order (repeated if fewer): fixed grid rows."""
        if self._grid is None or len(self._grid[1]) < n:
            images, captions = [], []
            for shard in self.stream_config.shard_list():
                for parts in read_shard(shard):
                    sample = decode_sample(parts, self.stream_config.image_size, self.stream_config.channels)
                    if sample is not None:
                        images.append(sample[0])
                        captions.append(sample[1])
                    if len(images) == n:
                        break
                if len(images) == n:
                    break
            if not images:
                raise ValueError("sample grids: the shards hold no readable captioned sample")
            rows = torch.arange(n) % len(images)
            self._grid = (torch.stack(images)[rows], [captions[i] for i in rows.tolist()])
        return self._grid[0][:n], self._grid[1][:n]

    def grid_images(self, n: int) -> Tensor:
        return self._grid_samples(n)[0]

    def grid_kwargs(self, n: int) -> dict[str, Tensor]:
        """Grid rows: the first shard samples' captions (and, for upsampling/inpainting, their pictures)."""
        images, captions = self._grid_samples(n)
        tokens, mask = self.tokenizer.tokens_and_mask(captions, self.text_ctx)
        extra = self.task.grid_inputs(images) if self.task.kind != "base" else {}
        return {"tokens": tokens, "mask": mask, **extra}


def stream_trainer(options: dict[str, Any], stream: StreamConfig, config: TrainConfig, *, p_uncond: float,
                   run_dir: str | os.PathLike | None = None, model_config: dict[str, Any] | None = None,
                   task: GlideTask | None = None) -> StreamingTextTrainer:
    """A :class:`StreamingTextTrainer` for a GLIDE network built from ``options`` (seeded with ``config.seed``)."""
    from glide_edu.nn.presets import create_glide_model
    from glide_edu.respace import DiffusionConfig

    torch.manual_seed(config.seed)  # the initial weights (the same on every rank; DDP broadcasts rank 0's)
    model = create_glide_model(options)
    diffusion_config = DiffusionConfig(int(options["diffusion_steps"]), str(options["noise_schedule"]))
    return StreamingTextTrainer(model, diffusion_config.create(""), stream, config, options=options, p_uncond=p_uncond,
                                task=task, run_dir=run_dir,
                                model_config=model_config or {"glide_options": options},
                                diffusion_config=diffusion_config.to_dict())
