"""Training a text-conditional GLIDE network — GLIDE's recipe at the book's scale ("GLIDE in miniature").

:class:`TextTrainer` is :class:`glide_edu.train.Trainer` with captions instead of class labels: each batch
carries GLIDE's ``tokens`` and ``mask``, and with probability ``p_uncond`` a caption is replaced by the empty
one (all padding, all-False mask) — GLIDE's fine-tuning recipe ("20 % of the captions replaced by the empty
sequence"), which makes one network both ε(x_t | c) and ε(x_t | ∅) for classifier-free guidance.

The miniature (:data:`MINI_OPTIONS`) has the released base model's structure and option names — ADM UNet
with scale-shift norm, GLIDE's caption transformer with padding embedding, its last-token projection added
to the timestep embedding and per-layer ``encoder_kv`` — at a width a CPU trains, on the book's emoji and
shapes (:mod:`glide_edu.captions`), 32×32, with CLIP's BPE word pieces (the vocabulary file ships inside the
open-clip-torch wheel: nothing to download). Byte-level tokens (``tokenizer = "bytes"``, the first shipped
miniature's) were measured against it on the same recipe from scratch: on 256 held-out pictures the error with
another picture's caption over the error with its own, at steps 500 / 1000 / 1500, was 1.005 / 1.017 / 1.026
(bytes) vs 1.012 / 1.024 / 1.039 (BPE) for shapes and 1.0005 / 1.001 / 1.002 vs 1.003 / 1.009 / 1.011 for
emoji — the byte model read emoji captions less at step 9500 (1.016) than the BPE one at 1500.

``python -m glide_edu.recipes glide-mini --run-dir R`` trains it resumably; snapshots and the final file are
GLIDE checkpoints in the small format (:func:`glide_edu.pretrained.save_glide_checkpoint`).

The same trainer trains GLIDE's other networks (:class:`GlideTask`, from the options' ``super_res`` and
``inpaint``): the upsampler sees the training image downsampled, the inpainting models a random mask.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glide_edu.captions import book_captions, tokenize_captions
from glide_edu.diffusion import GaussianDiffusion
from glide_edu.pretrained import save_glide_checkpoint
from glide_edu.prior import data_mean
from glide_edu.train import TrainConfig, Trainer
from glide_edu.warm_start import warm_start

MINI_OPTIONS: dict[str, Any] = {
    # the UNet (GLIDE's option names; attention at the 16×16 and 8×8 feature maps)
    "image_size": 32,
    "num_channels": 32,
    "num_res_blocks": 2,
    "channel_mult": "1,2,2",
    "attention_resolutions": "16,8",
    "num_heads": 1,
    "num_head_channels": 32,
    "num_heads_upsample": -1,
    "dropout": 0.1,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    # the caption transformer
    "text_ctx": 24,  # the longest caption (an emoji's) is 20 CLIP tokens
    "xf_width": 128,
    "xf_layers": 3,
    "xf_heads": 4,
    "xf_final_ln": True,
    "xf_padding": True,
    "n_vocab": 49408,
    "tokenizer": "clip",  # CLIP's BPE from the open-clip-torch wheel: reads captions faster than bytes (see below)
    # the diffusion (the released base model's: 1000 cosine steps, ε with learned-range Σ)
    "diffusion_steps": 1000,
    "noise_schedule": "squaredcos_cap_v2",
}
MINI_TRAIN = TrainConfig(steps=30000, batch_size=32, lr=3e-4, ema_rate=0.9995, ema_warmup=True, grad_clip=1.0,
                         loss_type="hybrid", log_every=100, checkpoint_every=250, keep_checkpoints=2)
P_UNCOND = 0.2
GRID_PROMPTS = ("red apple", "a grinning face", "a large red circle", "two blue squares",
                "a small green triangle above a purple square", "a yellow triangle", "a red heart", "")


@dataclass(frozen=True)
class GlideTask:
    """What a GLIDE network learns (its options' ``super_res`` / ``inpaint``) and the inputs a batch gets for it.

    * Upsamplers: ``low_res`` = the training image downsampled to ``low_res_size`` by area averaging (how
      improved-diffusion's ``super_res_train.py`` makes it); the network upsamples it bilinearly and
      concatenates it after x_t. GLIDE's 64 → 256 upsampler has ``low_res_size`` 64, a quarter of its size.
    * Inpainting: a random mask per image (:func:`glide_edu.inpaint.random_inpaint_masks`, 1 = known) and
      ``inpaint_image`` = x_0·mask; the network's input is [x_t, x_0·mask, mask(, low_res↑)], the official order.
    """

    super_res: bool = False
    inpaint: bool = False
    low_res_size: int = 0  # upsamplers only: the base model's resolution

    @classmethod
    def from_options(cls, options: dict[str, Any], low_res_size: int | None = None) -> GlideTask:
        """The task of a GLIDE option dictionary; an upsampler's ``low_res_size`` defaults to image_size / 4."""
        size, super_res = int(options["image_size"]), bool(options.get("super_res"))
        low = int(low_res_size or size // 4) if super_res else 0
        if super_res and not 1 <= low < size:
            raise ValueError(f"low_res_size = {low}: an upsampler's low-res input must be smaller than its "
                             f"image_size {size} (GLIDE: 64 for 256)")
        return cls(super_res, bool(options.get("inpaint")), low)

    @property
    def kind(self) -> str:
        """"base", "upsample", "base-inpaint" or "upsample-inpaint" (the released checkpoints' names)."""
        return {(False, False): "base", (True, False): "upsample", (False, True): "base-inpaint",
                (True, True): "upsample-inpaint"}[(self.super_res, self.inpaint)]

    def inputs(self, x0: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """The model inputs beyond the caption for a batch x0 (B, 3, S, S); the base model needs none (and no
        random numbers are drawn for it)."""
        from glide_edu.inpaint import random_inpaint_masks

        kwargs: dict[str, Tensor] = {}
        if self.inpaint:
            mask = random_inpaint_masks(x0.shape[0], x0.shape[-1], generator)  # (B, 1, S, S)
            kwargs |= {"inpaint_image": x0 * mask, "inpaint_mask": mask}
        if self.super_res:
            kwargs["low_res"] = F.interpolate(x0, size=self.low_res_size, mode="area")  # (B, 3, s, s)
        return kwargs

    def grid_inputs(self, images: Tensor) -> dict[str, Tensor]:
        """The fixed inputs of sample grids from ``images`` (n, 3, S, S): their low-res versions, and for
        inpainting the top half kept."""
        from glide_edu.inpaint import top_rows_mask

        kwargs: dict[str, Tensor] = {}
        if self.inpaint:
            mask = top_rows_mask(images.shape[-1], images.shape[-1] // 2, images.shape[0])
            kwargs |= {"inpaint_image": images * mask, "inpaint_mask": mask}
        if self.super_res:
            kwargs["low_res"] = F.interpolate(images, size=self.low_res_size, mode="area")
        return kwargs


def tokenizer_for(options: dict[str, Any]):
    """The tokenizer a GLIDE option dictionary names (``"tokenizer"``: "bytes"; "gpt2", GLIDE's own, the default;
    "clip", CLIP's BPE from the open-clip-torch wheel, in GLIDE's layout — no download for "bytes" and "clip")."""
    from glide_edu import tokenizers

    name = options.get("tokenizer", "gpt2")
    if name == "bytes":
        return tokenizers.byte_level_tokenizer()
    if name == "gpt2":
        return tokenizers.glide_tokenizer()
    if name == "clip":
        return tokenizers.clip_tokenizer()
    raise ValueError(f"unknown tokenizer {name!r} in the model's options; use 'bytes', 'gpt2' or 'clip'")


class TextTrainer(Trainer):
    """Train a text-conditional network on images with caption ``tokens``/``mask`` (N, text_ctx).

    ``weights`` (N,): sampling weights of the examples (default uniform); ``p_uncond``: probability of the
    empty caption; ``options``: the GLIDE options written into snapshots (needs ``run_dir``); ``task``: what
    the network learns (default: the options' task, else the base model's).
    """

    def __init__(self, model: nn.Module, diffusion: GaussianDiffusion, images: Tensor, tokens: Tensor, mask: Tensor,
                 config: TrainConfig | None = None, *, p_uncond: float = P_UNCOND, weights: Tensor | None = None,
                 options: dict[str, Any] | None = None, grid_prompts: tuple[Tensor, Tensor] | None = None,
                 task: GlideTask | None = None, **kwargs: Any) -> None:
        if tokens.shape != mask.shape or tokens.ndim != 2 or tokens.shape[0] != images.shape[0]:
            raise ValueError(f"tokens {tuple(tokens.shape)} and mask {tuple(mask.shape)} must both be "
                             f"({images.shape[0]}, text_ctx): one caption per image")
        if not 0.0 <= p_uncond < 1.0:
            raise ValueError(f"p_uncond={p_uncond}: give a probability in [0, 1), e.g. 0.2 as GLIDE")
        if weights is not None and (weights.shape != (images.shape[0],) or (weights < 0).any() or weights.sum() <= 0):
            raise ValueError("weights must be (N,) non-negative with a positive sum")
        self.tokens, self.mask, self.p_uncond, self.weights = tokens, mask.bool(), p_uncond, weights
        self.options, self.grid_prompts = options, grid_prompts
        self.task = task or (GlideTask.from_options(options) if options else GlideTask())
        if options is not None and not self.task.super_res and "x0_prior_mean" not in options:
            # the files it writes name the data's mean for the sampler's x̂₀ at the top (glide_edu.prior)
            mean = data_mean(images, weights)
            self.options = {**options, "x0_prior_mean": [round(v, 4) for v in mean]}
        self.empty_token = int(tokens[~mask.bool()].flatten()[0]) if (~mask.bool()).any() else 0
        super().__init__(model, diffusion, images, config, **kwargs)

    def batch(self) -> tuple[Tensor, dict[str, Tensor]]:
        n, b = self.images.shape[0], self.config.batch_size
        if self.weights is None:
            idx = torch.randint(0, n, (b,), generator=self.generator)
        else:
            idx = torch.multinomial(self.weights, b, replacement=True, generator=self.generator)
        tokens, mask = self.tokens[idx].clone(), self.mask[idx].clone()
        if self.p_uncond:
            drop = torch.rand(b, generator=self.generator) < self.p_uncond  # the empty caption: all padding
            tokens[drop], mask[drop] = self.empty_token, False
        x0 = self.images[idx]
        return x0, {"tokens": tokens, "mask": mask, **self.task.inputs(x0, self.generator)}

    def grid_images(self, n: int) -> Tensor:
        """(n, 3, S, S): the training images an upsampler's or inpainter's grid rows start from (fixed)."""
        return self.images[torch.arange(n) % self.images.shape[0]]

    def grid_kwargs(self, n: int) -> dict[str, Tensor]:
        if self.grid_prompts is None:
            raise ValueError("sample grids of a text model need grid_prompts=(tokens, mask)")
        tokens, mask = self.grid_prompts
        rows = torch.arange(n) % tokens.shape[0]
        extra = self.task.grid_inputs(self.grid_images(n)) if self.task.kind != "base" else {}
        return {"tokens": tokens[rows], "mask": mask[rows], **extra}

    def grid_model(self, model: nn.Module):
        """The EMA network with the data-mean x̂₀ at the top when the options name one, as the pipelines sample
        it (:meth:`glide_edu.pipelines.models.GlideModel.with_prior`)."""
        if not self.options:
            return model
        from glide_edu.pipelines.models import GlideModel

        return GlideModel.from_options(model, self.options, self.task.kind).with_prior(model)

    def snapshot_writer(self):
        """``write(path, ema, rate)`` for one EMA network as a GLIDE checkpoint (snapshots of a text model)."""
        if self.run_dir is None or self.options is None:
            raise ValueError("snapshots of a text model need a run_dir and its GLIDE options")

        def write(path: Path, ema: nn.Module, rate: float) -> Path:
            info = {"step": self.step, "ema_rate": rate, "p_uncond": self.p_uncond}
            return save_glide_checkpoint(path, ema, self.options, self.task.kind, info)

        return write


def text_trainer(options: dict[str, Any], images: Tensor, captions: list[str], config: TrainConfig, *,
                 weights: Tensor | None = None, p_uncond: float = P_UNCOND, run_dir: str | os.PathLike | None = None,
                 model_config: dict[str, Any] | None = None, task: GlideTask | None = None) -> TextTrainer:
    """A :class:`TextTrainer` for a GLIDE network built from ``options`` (seeded with ``config.seed``) on
    ``images`` (N, C, H, W) and their ``captions``, tokenised with the tokenizer the options name; ``task``
    (default: the options') says what it learns."""
    from glide_edu.nn.presets import create_glide_model
    from glide_edu.respace import DiffusionConfig

    tokenizer = tokenizer_for(options)
    tokens, mask = tokenize_captions(tokenizer, captions, int(options["text_ctx"]))
    grid = tokenizer.tokens_and_mask(list(GRID_PROMPTS), int(options["text_ctx"]))
    torch.manual_seed(config.seed)  # the initial weights
    model = create_glide_model(options)
    diffusion_config = DiffusionConfig(int(options["diffusion_steps"]), str(options["noise_schedule"]))
    return TextTrainer(model, diffusion_config.create(""), images, tokens, mask, config, p_uncond=p_uncond,
                       weights=weights, options=options, grid_prompts=grid, run_dir=run_dir, task=task,
                       model_config=model_config or {"glide_options": options},
                       diffusion_config=diffusion_config.to_dict())


def train_mini(out: str | os.PathLike, run_dir: str | os.PathLike | None = None, steps: int | None = None,
               seed: int = 0, n_shapes: int = 20000, snapshot_every: int = 0, sample_every: int = 0,
               options: dict[str, Any] | None = None, config: TrainConfig | None = None,
               progress: bool = True, init_from: str | os.PathLike | None = None,
               precision: str | None = None) -> Path:
    """Train the miniature GLIDE base model on the book's captions; write its EMA weights to ``out``.

    ``init_from``: a GLIDE file of this recipe (the shipped miniature or a snapshot) to continue from, weights
    and step numbering, when ``run_dir`` holds no checkpoint yet — see :mod:`glide_edu.warm_start`.
    ``precision``: autocast precision (default: the config's, fp32).
    """
    options = dict(options or MINI_OPTIONS)
    base = config or MINI_TRAIN
    cfg = replace(base, steps=base.steps if steps is None else steps, seed=seed, progress=progress,
                  snapshot_every=snapshot_every, sample_every=sample_every,
                  precision=base.precision if precision is None else precision)
    data = book_captions("train", n_shapes, seed)
    trainer = text_trainer(options, data.images, data.captions, cfg, weights=data.weights, run_dir=run_dir,
                           model_config={"glide_options": options, "n_shapes": n_shapes})
    warm = warm_start(trainer, init_from if trainer.step == 0 else None, trainer.options, continue_steps=True)
    start = time.perf_counter()
    history = trainer.train()
    info = {"command": "python -m glide_edu.recipes glide-mini", "steps": trainer.step, "p_uncond": P_UNCOND,
            "n_shapes": n_shapes, "train_seconds_this_run": round(time.perf_counter() - start, 1),
            "threads": torch.get_num_threads(), "final_loss": history[-1]["loss"] if history else None}
    if warm is not None:
        info["warm_start"] = warm
    return save_glide_checkpoint(out, trainer.ema_model, trainer.options, "base", info)
