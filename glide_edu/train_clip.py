"""Training the book's CLIPs: a noised CLIP (GLIDE's), its clean control, and an independent evaluator.

CLIP (Radford et al.) trains an image encoder f and a text encoder g so that, in a batch of N captioned
pictures, the N × N matrix of scaled cosine similarities ``exp(τ)·f(x_i)·g(c_j)`` picks the right caption for
every picture and the right picture for every caption: a symmetric cross-entropy over rows and columns.

GLIDE's *noised* CLIP sees the picture as the diffusion sees it during sampling: ``x_t = q_sample(x_0, t)``
for t drawn uniformly from the base model's schedule, and t itself (the image encoder's first token is a
learned row ``w_t[t]``). Then ∇_{x_t} f(x_t, t)·g(c) is meaningful at every step of sampling — the premise
of CLIP guidance. The control is the same architecture trained on clean pictures only (t = 0), as an
ordinary CLIP is; the evaluation CLIP is a different architecture and seed, clean, used only for scoring
(a guided sampler can fool the CLIP it follows, not an independent one).

Details (``CLIP_TRAIN``): the temperature τ is learned from log(1/0.07) and capped at log(100) — CLIP's
rule — and the file records it (GLIDE's released CLIP sits at the cap, 100). Captions that occur twice in a
batch (shapes captions repeat) are not counted as each other's negatives. Models are the same classes as
the released CLIP (:class:`glide_edu.nn.clip.NoisedClip`), with byte tokens
(:class:`glide_edu.tokenizers.ByteClipTokenizer`).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from glide_edu.captions import book_captions
from glide_edu.fileio import atomic_write
from glide_edu.nn.clip import ClipConfig, NoisedClip
from glide_edu.respace import DiffusionConfig
from glide_edu.tokenizers import ByteClipTokenizer

# The noised CLIP and its clean control: a ViT on 4×4 patches of 32×32 pictures (64 patches + the t token).
MINI_CLIP = ClipConfig(logit_scale=100.0, beta_schedule="squaredcos_cap_v2", n_timesteps=1000, image_size=32,
                       patch_size=4, n_vocab=258, max_text_len=96, n_embd=128, n_head_state_text=32,
                       n_head_text=4, n_xf_blocks_text=3, n_head_state_image=32, n_head_image=4,
                       n_xf_blocks_image=4)
# The evaluator: another architecture (8×8 patches, wider and shallower, 6 heads) and another seed.
EVAL_CLIP = replace(MINI_CLIP, patch_size=8, n_head_state_image=32, n_head_image=6, n_xf_blocks_image=3,
                    n_head_state_text=32, n_head_text=6, n_xf_blocks_text=2, n_embd=96)
MAX_LOG_SCALE = math.log(100.0)


@dataclass(frozen=True)
class ClipTrainConfig:
    steps: int = 6000
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup: int = 200
    noised: bool = True  # False: clean pictures, t = 0 (the control and the evaluator)
    seed: int = 0
    n_shapes: int = 20000
    progress: bool = True
    checkpoint_every: int = 500  # with a run_dir: a resumable checkpoint this often (and at the end)
    eval_every: int = 0  # > 0: retrieval accuracy on a fixed pool (:func:`validation_pool`) into the history


# The three CLIPs of chapter 8 and 12: (architecture, training). Same batch and steps, so only the noise (noised
# vs clean) or the architecture and seed (the evaluator) differ.
CLIP_RECIPES: dict[str, tuple[ClipConfig, ClipTrainConfig]] = {
    "noised": (MINI_CLIP, ClipTrainConfig(batch_size=64, noised=True, seed=0, eval_every=500)),
    "clean": (MINI_CLIP, ClipTrainConfig(batch_size=64, noised=False, seed=0, eval_every=500)),
    "eval": (EVAL_CLIP, ClipTrainConfig(batch_size=64, noised=False, seed=1, eval_every=500)),
}
EVAL_TIMESTEPS = (0, 300, 600)  # the validation curve's noise levels (t of the 1000-step schedule)


def validation_pool(n_emoji: int = 128, n_shapes: int = 128, train_shapes: int = 20000, train_seed: int = 0
                    ) -> tuple[Tensor, list[str]]:
    """A fixed retrieval pool: ``n_emoji`` training emoji and ``n_shapes`` shapes scenes never trained on —
    another seed of the scene generator, minus the scenes whose picture is one of the ``train_shapes``
    training scenes (simple scenes recur: about 40 % of new draws copy a training picture)."""
    from glide_edu.emoji import load_emoji
    from glide_edu.shapes import load_shapes

    emoji = load_emoji("train")
    pick = torch.randperm(len(emoji.captions), generator=torch.Generator().manual_seed(0))[:n_emoji].tolist()
    seen = {x.numpy().tobytes() for x in load_shapes(train_shapes, train_seed, "train").images}
    new = load_shapes(4 * n_shapes, 12345, "train")
    rows = [i for i, x in enumerate(new.images) if x.numpy().tobytes() not in seen][:n_shapes]
    if len(rows) < n_shapes:
        raise ValueError(f"only {len(rows)} unseen scenes among {4 * n_shapes} draws; ask for fewer")
    images = torch.cat([emoji.images[pick], new.images[rows]])
    return images, [emoji.captions[i] for i in pick] + [new.captions[i] for i in rows]


def same_caption(captions: list[str]) -> Tensor:
    """(N, N) bool: whether captions i and j are the same text (via integer ids: O(N) Python, per training step)."""
    index: dict[str, int] = {}
    ids = torch.tensor([index.setdefault(c, len(index)) for c in captions])
    return ids[:, None] == ids[None, :]


def contrastive_loss(z_image: Tensor, z_text: Tensor, log_scale: Tensor, captions: list[str] | None = None) -> Tensor:
    """CLIP's symmetric cross-entropy on unit vectors (B, D); pairs with identical captions are no negatives."""
    logits = log_scale.exp() * z_image @ z_text.T  # (B, B): picture i against caption j
    if captions is not None:
        same = same_caption(captions).to(logits.device)
        logits = logits.masked_fill(same & ~torch.eye(len(captions), dtype=torch.bool, device=logits.device), -1e4)
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def retrieval_accuracy(clip: NoisedClip, images: Tensor, captions: list[str], t: int = 0, batch: int = 256,
                       seed: int = 0) -> float:
    """Top-1 accuracy of picking each picture's caption among the ``len(captions)`` given, at timestep t
    (pictures noised with q_sample at t > 0, with a fixed seed). A CLIP trained on clean pictures
    (``trained_on_noise`` False) is shown t = 0, as it would be when guiding."""
    diffusion = DiffusionConfig(clip.config.n_timesteps, clip.config.beta_schedule).create("")
    gen = torch.Generator().manual_seed(seed)
    tokens, lens = clip.tokenizer.tokens_and_lens(captions, clip.config.max_text_len)
    with torch.no_grad():
        z_text = clip.text_embeddings(tokens, lens)
        rows = []
        for i in range(0, len(images), batch):
            x = images[i: i + batch]
            tt = torch.full((x.shape[0],), t, dtype=torch.long)
            if t > 0:
                x = diffusion.q_sample(x, tt, noise=torch.randn(x.shape, generator=gen))
            rows.append(clip.image_embeddings(x, clip.shown_timesteps(tt)) @ z_text.T)
        sims = torch.cat(rows)
    # identical captions count as right answers
    right = same_caption(captions)
    return float(right[torch.arange(len(captions)), sims.argmax(1)].float().mean())


def save_clip(path: str | os.PathLike, clip: NoisedClip, info: dict[str, Any]) -> Path:
    """Both encoders (``image_encoder.*``, ``text_encoder.*``; the released key names inside) with the config,
    the tokenizer name and the learned scale in the metadata; float16 weights, atomic."""
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in clip.state_dict().items()}
    meta = {"kind": "noised-clip", "config": asdict(clip.config), "tokenizer": "bytes", "info": info}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"glide_edu": json.dumps(meta)}))


def load_clip_file(path: str | os.PathLike) -> NoisedClip:
    """A CLIP written by :func:`save_clip` (strict), in eval mode, with its byte tokenizer."""
    from glide_edu.pretrained import read_metadata

    meta = read_metadata(path)
    if meta.get("kind") != "noised-clip":
        raise ValueError(f"{path} holds a {meta.get('kind')!r} model, not a CLIP from glide_edu.train_clip")
    with safe_open(Path(path), framework="pt") as f:
        state = {k: f.get_tensor(k).float() for k in f.keys()}
    return _assembled(ClipConfig(**meta["config"]), state, meta.get("info", {}).get("train", {}).get("noised", True))


def _assembled(config: ClipConfig, state: dict[str, Tensor], noised: bool) -> NoisedClip:
    """A book CLIP from its config and weights (strict), with its byte tokenizer and training kind, in eval mode."""
    clip = NoisedClip(config)
    clip.load_state_dict(state, strict=True)
    clip.tokenizer = ByteClipTokenizer()
    clip.trained_on_noise = bool(noised)
    return clip.eval()


def shipped_clip(kind: str) -> NoisedClip:
    """One of the book's CLIPs (a :data:`CLIP_RECIPES` kind: ``noised``, ``clean``, ``eval``) from
    ``data/checkpoints/clip_<kind>.safetensors``."""
    from glide_edu.pretrained import shipped_checkpoint

    if kind not in CLIP_RECIPES:
        raise ValueError(f"unknown CLIP {kind!r}; the book ships {', '.join(CLIP_RECIPES)}")
    return load_clip_file(shipped_checkpoint(f"clip_{kind}"))


def clip_from_checkpoint(folder: str | os.PathLike) -> NoisedClip:
    """The CLIP of one run-folder checkpoint (``<run_dir>/ckpt-<step>``) of :func:`train_clip`, in eval mode:
    for curves over training steps and for comparing runs at equal steps."""
    from glide_edu.run_dir import read_checkpoint

    model_state, _, _, meta = read_checkpoint(Path(folder))
    scale = round(float(model_state.pop("log_scale").exp()), 4)
    return _assembled(replace(ClipConfig(**meta["model_config"]), logit_scale=scale), model_state,
                      meta["train_config"]["noised"])


def train_clip(out: str | os.PathLike, config: ClipConfig = MINI_CLIP, train: ClipTrainConfig | None = None,
               images: Tensor | None = None, captions: list[str] | None = None,
               run_dir: str | os.PathLike | None = None) -> Path:
    """Train a CLIP on the book's captions (or on ``images``/``captions``) and write it to ``out``.

    ``run_dir``: resumable checkpoints (weights, temperature, optimiser, schedule and RNG states) in the layout of
    :mod:`glide_edu.run_dir` — locked, atomic, damaged ones skipped; a stopped run resumes bit for bit."""
    cfg = train or ClipTrainConfig()
    if cfg.steps < 1 or cfg.batch_size < 2 or not (math.isfinite(cfg.lr) and cfg.lr > 0) or cfg.checkpoint_every < 1:
        raise ValueError(f"bad CLIP training options: steps={cfg.steps} (≥ 1), batch_size={cfg.batch_size} (≥ 2: "
                         f"a contrastive batch needs negatives), lr={cfg.lr} (finite, > 0), "
                         f"checkpoint_every={cfg.checkpoint_every} (≥ 1)")
    from glide_edu.run_dir import check_writable

    check_writable(Path(out).parent)  # one clear error before any training
    if images is None or captions is None:
        data = book_captions("train", cfg.n_shapes, cfg.seed)
        images, captions = data.images, data.captions
        weights = data.weights
    else:
        weights = torch.ones(len(captions))
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    clip = NoisedClip(config)
    clip.tokenizer = ByteClipTokenizer()
    tokens, lens = clip.tokenizer.tokens_and_lens(captions, config.max_text_len)
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    opt = torch.optim.AdamW([*clip.parameters(), log_scale], lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * min(i, cfg.steps) / cfg.steps)))
    diffusion = DiffusionConfig(config.n_timesteps, config.beta_schedule).create("")
    start, history, first = time.perf_counter(), [], 1
    run = _ClipRun(run_dir, asdict(config), asdict(cfg)) if run_dir is not None else None
    pool = validation_pool(train_shapes=cfg.n_shapes, train_seed=cfg.seed) if cfg.eval_every > 0 else None
    if run is not None:
        first, history = run.resume(clip, log_scale, opt, sched, gen)
    try:
        for step in tqdm(range(first, cfg.steps + 1), desc="clip", disable=not cfg.progress, leave=False,
                         initial=first - 1, total=cfg.steps):
            idx = torch.multinomial(weights, cfg.batch_size, replacement=False, generator=gen)
            x0 = images[idx]
            if cfg.noised:  # x_t ~ q(x_t | x_0) at t uniform over the base model's schedule
                t = torch.randint(0, config.n_timesteps, (cfg.batch_size,), generator=gen)
                x = diffusion.q_sample(x0, t, noise=torch.randn(x0.shape, generator=gen))
            else:
                t, x = torch.zeros(cfg.batch_size, dtype=torch.long), x0
            loss = contrastive_loss(clip.image_embeddings(x, t), clip.text_embeddings(tokens[idx], lens[idx]),
                                    log_scale, [captions[i] for i in idx.tolist()])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(clip.parameters(), 1.0)
            opt.step()
            sched.step()
            with torch.no_grad():
                log_scale.clamp_(max=MAX_LOG_SCALE)
            if step == 1 or step % 100 == 0 or step == cfg.steps:
                history.append({"step": step, "loss": round(loss.item(), 4), "scale": round(log_scale.exp().item(), 2)})
            if pool is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
                clip.eval()
                history.append({"step": step, "retrieval": {
                    str(t): round(retrieval_accuracy(clip, *pool, t=t), 4)
                    for t in (EVAL_TIMESTEPS if cfg.noised else (0,))}})
                clip.train()
            if run is not None and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
                run.save(step, clip, log_scale, opt, sched, gen, history)
    finally:
        if run is not None:
            run.lock.release()
    clip.config = replace(config, logit_scale=round(log_scale.exp().item(), 4))
    clip.logit_scale = log_scale.item()
    info = {"train": asdict(cfg), "seconds": round(time.perf_counter() - start, 1), "history": history,
            "threads": torch.get_num_threads()}
    return save_clip(out, clip, info)


class _ClipRun:
    """The run folder of a CLIP training: lock, resume, atomic checkpoints (:mod:`glide_edu.run_dir`)."""

    def __init__(self, run_dir: str | os.PathLike, model_config: dict, train_config: dict) -> None:
        from glide_edu.run_dir import RunLock, check_writable, clean_temporaries

        self.run_dir = Path(run_dir)
        check_writable(self.run_dir)
        self.lock = RunLock(self.run_dir)
        clean_temporaries(self.run_dir)
        self.meta = {"model_config": model_config, "train_config": train_config}

    def resume(self, clip: NoisedClip, log_scale: Tensor, opt: Any, sched: Any, gen: torch.Generator
               ) -> tuple[int, list[dict]]:
        """(first step to train, history so far): from the newest intact checkpoint, or (1, [])."""
        from glide_edu.run_dir import latest_checkpoint, read_checkpoint

        latest = latest_checkpoint(self.run_dir)
        if latest is None:
            return 1, []
        model_state, _, state, meta = read_checkpoint(latest)
        if meta["model_config"] != self.meta["model_config"] or any(
                meta["train_config"][k] != self.meta["train_config"][k] for k in ("seed", "noised", "batch_size")):
            raise ValueError(f"{latest} was written for another CLIP or training (model, seed, noised or batch "
                             "size differ); use another run_dir — nothing was overwritten")
        with torch.no_grad():
            log_scale.copy_(model_state.pop("log_scale"))
        clip.load_state_dict(model_state, strict=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        return int(meta["step"]) + 1, list(meta["history"])

    def save(self, step: int, clip: NoisedClip, log_scale: Tensor, opt: Any, sched: Any, gen: torch.Generator,
             history: list[dict]) -> None:
        from glide_edu.run_dir import write_checkpoint

        state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "generator": gen.get_state(),
                 "torch_rng": torch.get_rng_state()}
        weights = {**clip.state_dict(), "log_scale": log_scale.detach().clone()}
        write_checkpoint(self.run_dir, step, weights, {}, state, {**self.meta, "step": step, "history": history}, 2)


def add_clip_parser(sub: Any) -> None:
    """``python -m glide_edu.recipes clip --kind noised|clean|eval``: the sub-command of the recipes CLI."""
    clip = sub.add_parser("clip", help="the noised CLIP, its clean control or the evaluation CLIP (chapters 8, 12)")
    clip.add_argument("--kind", choices=sorted(CLIP_RECIPES), required=True)
    clip.add_argument("--out", type=Path, required=True, help="the CLIP file (.safetensors)")
    clip.add_argument("--run-dir", type=Path, default=None, help="keep resumable checkpoints here")
    clip.add_argument("--steps", type=int, default=None, help="default 6000")
    clip.add_argument("--threads", type=int, default=None)


def run_clip_recipe(args: Any) -> Path:
    config, train = CLIP_RECIPES[args.kind]
    if args.steps is not None:
        train = replace(train, steps=args.steps)
    return train_clip(args.out, config, train, run_dir=args.run_dir)
