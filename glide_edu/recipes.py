"""Reproducible recipes for the small models the book ships (one command each).

    python -m glide_edu.recipes digits --loss simple --out data/checkpoints/digits_simple.safetensors
    python -m glide_edu.recipes digits --loss hybrid --out data/checkpoints/digits_hybrid.safetensors
    python -m glide_edu.recipes fid-features --out data/fid_digits.safetensors
    python -m glide_edu.recipes classifier --noised --out data/checkpoints/digits_classifier_noisy.safetensors
    python -m glide_edu.recipes classifier --clean --out data/checkpoints/digits_classifier_clean.safetensors
    python -m glide_edu.recipes digits-cfg --p-uncond 0.1 --out data/checkpoints/digits_cfg_p10.safetensors
    python -m glide_edu.recipes glide-mini --run-dir runs/mini --out data/checkpoints/glide_mini_base.safetensors
    python -m glide_edu.recipes folder --data my_images/ --image-size 32 --run-dir runs/mine --out mine.safetensors

``--out`` is always required: a recipe never overwrites a shipped file unless that path is given.

Both train the same ADM UNet (1.9 M parameters) on the 16×16 digits with a 1000-step cosine schedule;
``simple`` predicts ε with a fixed Σ (L_simple), ``hybrid`` also learns Σ (L_simple + λ·L_vlb, λ = 0.001).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from glide_edu.data import load_digits, load_image_folder
from glide_edu.fileio import sha256_file
from glide_edu.nn.unet import UNetConfig, UNetModel
from glide_edu.pretrained import CHECKPOINT_DIR, save_small_checkpoint
from glide_edu.respace import create_diffusion
from glide_edu.train import TrainConfig, Trainer
from glide_edu.train_clip import add_clip_parser, run_clip_recipe

DIGITS_UNET = UNetConfig(
    image_size=16,
    in_channels=1,
    model_channels=32,
    channel_mult=(1, 2, 2),
    num_res_blocks=2,
    attention_resolutions=(8, 4),
    num_head_channels=32,
    dropout=0.1,
)
# EMA 0.9995 *with* warm-up: a plain 0.999 average still carried a third of the weight of the first, untrained
# steps after 2,000 steps (data/results/digits_ema.json, chapter 3 §5.3).
DIGITS_TRAIN = TrainConfig(
    steps=2000, batch_size=64, lr=5e-4, ema_rate=0.9995, ema_warmup=True, grad_clip=1.0, log_every=100,
    checkpoint_every=500,
)


def diffusion_config(loss: str) -> dict:
    """The recipes' training diffusion: 1000 cosine steps; Σ learned for the hybrid loss, β̃ for L_simple."""
    return {
        "steps": 1000,
        "noise_schedule": "cosine",
        "model_var_type": "learned_range" if loss == "hybrid" else "fixed_small",
    }


def digits_configs(loss: str) -> tuple[UNetConfig, dict]:
    return replace(DIGITS_UNET, learn_sigma=loss == "hybrid"), diffusion_config(loss)


def require_out(out: str | Path | None, shipped: str) -> Path:
    """``out`` as a Path; a clear error when it is missing (recipes never default to a shipped file)."""
    if out is None:
        raise ValueError(f"give out=… (--out): where to write the weights; to replace the shipped one, give "
                         f"{CHECKPOINT_DIR.name}/{shipped}.safetensors under the data folder explicitly")
    return Path(out)


def train_digits(
    loss: str,
    steps: int | None = None,
    out: Path | None = None,
    run_dir: Path | None = None,
    seed: int = 0,
    progress: bool = True,
    sample_every: int = 0,
    snapshot_every: int = 0,
) -> Path:
    """Train the digits model with ``loss`` in {"simple", "hybrid"} and write the shipped checkpoint.

    ``snapshot_every`` (with ``run_dir``) keeps the EMA weights every that many steps in ``run_dir/snapshots`` —
    the training curve of chapter 3 is measured on them (``python -m glide_edu.book regenerate ch03``).
    """
    if loss not in ("simple", "hybrid"):
        raise ValueError(f"loss must be 'simple' or 'hybrid', got {loss!r}")
    unet_cfg, diffusion_cfg = digits_configs(loss)
    cfg = replace(DIGITS_TRAIN, steps=DIGITS_TRAIN.steps if steps is None else steps, seed=seed, progress=progress,
                  loss_type=loss, sample_every=sample_every, snapshot_every=snapshot_every)
    out = require_out(out, f"digits_{loss}")
    info = {"command": f"python -m glide_edu.recipes digits --loss {loss}",
            "weights": weights_note(cfg)}
    return _train_and_ship(unet_cfg, diffusion_cfg, cfg, out, run_dir, info)


def unet_trainer(unet_cfg: UNetConfig, diffusion_cfg: dict, cfg: TrainConfig, images: torch.Tensor,
                 labels: torch.Tensor | None = None, run_dir: Path | None = None, init: Path | None = None,
                 **trainer_kwargs) -> Trainer:
    """A :class:`Trainer` for the ADM UNet ``unet_cfg`` (seeded with ``cfg.seed``, or fine-tuned from ``init``)
    on ``images`` (N, C, H, W) and optional ``labels``, with the diffusion ``diffusion_cfg``."""
    torch.manual_seed(cfg.seed)
    model = UNetModel(unet_cfg)
    if init is not None:
        init_from(model, init)
    return Trainer(model, create_diffusion(**diffusion_cfg), images, cfg, labels=labels, run_dir=run_dir,
                   model_config={"unet": asdict(unet_cfg)}, diffusion_config=diffusion_cfg, **trainer_kwargs)


def _train_and_ship(
    unet_cfg: UNetConfig,
    diffusion_cfg: dict,
    cfg: TrainConfig,
    out: Path,
    run_dir: Path | None,
    info: dict,
    images: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    init: Path | None = None,
    **trainer_kwargs,
) -> Path:
    """Build the UNet (seeded with ``cfg.seed``), train it on ``images`` (default: the 16×16 training digits,
    unlabelled), write its EMA weights to ``out``.

    ``init``: start from the weights of this small checkpoint instead (fine-tuning; see :func:`init_from`).
    ``info`` (the command and notes) is completed with the steps, seconds, threads and final loss.
    """
    if images is None:
        images = load_digits(16, "train")[0]
    trainer = unet_trainer(unet_cfg, diffusion_cfg, cfg, images, labels, run_dir, init, **trainer_kwargs)
    start, first_step = time.perf_counter(), trainer.step  # (> 0 when a run folder was resumed)
    history = trainer.train()
    info = {
        **info,
        "steps": trainer.step,
        "resumed_from_step": first_step,
        "train_seconds": round(time.perf_counter() - start, 1),  # of this stretch, from resumed_from_step
        "threads": torch.get_num_threads(),
        "final_loss": history[-1]["loss"] if history else None,
    }
    return save_small_checkpoint(out, trainer.ema_model, unet_cfg, diffusion_cfg, info)


def init_from(model: UNetModel, path: Path) -> None:
    """Load an unconditional checkpoint into the class-conditional ``model``: every weight but the new label
    embedding, which starts at zero — so the fine-tuned model starts as the unconditional one for every label.
    """
    from glide_edu.pretrained import load_small_checkpoint
    from glide_edu.warm_start import check_fit

    source = load_small_checkpoint(path)[0].state_dict()
    check_fit(Path(path).name, model, source, fresh=("label_emb.weight",),
              fix="initialise from the unconditional model with the same UNet config")
    model.load_state_dict(source, strict=False)
    if model.num_classes is not None:
        torch.nn.init.zeros_(model.label_emb.weight)


def weights_note(cfg: TrainConfig) -> str:
    """What a shipped checkpoint's weights are, for its ``info``: derived from the training config."""
    return f"EMA {cfg.ema_rate}{' with warm-up' if cfg.ema_warmup else ''}, stored as float16"


NULL_LABEL = 10  # the learned "no label" embedding of the class-conditional digits models (classes 0–9)
# The class-conditional models train three times as long as the unconditional ones: at guidance scale 3 their
# FID-proxy was still falling and their recall rising at 2000 and 4000 steps (data/results/
# digits_cfg_convergence.json, chapter 6 §5.2), while s = 1 was flat from 1500 steps.
CFG_STEPS = 6000


def cfg_checkpoint_name(p_uncond: float) -> str:
    """``digits_cfg_p10`` for p_uncond = 0.1: the shipped class-conditional model trained with that dropout."""
    return f"digits_cfg_p{round(p_uncond * 100):02d}"


def train_digits_cfg(
    p_uncond: float,
    steps: int | None = None,
    out: Path | None = None,
    run_dir: Path | None = None,
    seed: int = 0,
    progress: bool = True,
    sample_every: int = 0,
    snapshot_every: int = 0,
    init: Path | None = None,
) -> Path:
    """Train the class-conditional model of chapter 6 (learned null label) with the digits recipe.

    Same UNet, diffusion and :data:`DIGITS_TRAIN` settings as ``digits --loss hybrid`` (but :data:`CFG_STEPS`
    steps) plus an 11-entry label embedding, trained from scratch. Each training label is replaced by
    ``NULL_LABEL`` with probability ``p_uncond`` so one network learns ε(x_t | y) and ε(x_t | ∅). ``init``
    instead fine-tunes an unconditional checkpoint (label embedding from zero, as GLIDE fine-tuned its base
    model); on the digits, 1000 such steps left the labels unused (class accuracy 0.095 at guidance scale 1,
    measured 2026-12-03), so the shipped
    models are trained from scratch.
    """
    if not 0.0 < p_uncond < 1.0:
        raise ValueError(f"p_uncond must lie strictly between 0 and 1, got {p_uncond}")
    unet_cfg, diffusion_cfg = digits_configs("hybrid")
    unet_cfg = replace(unet_cfg, num_classes=NULL_LABEL + 1)
    cfg = replace(DIGITS_TRAIN, steps=CFG_STEPS if steps is None else steps, seed=seed, progress=progress,
                  loss_type="hybrid", sample_every=sample_every, snapshot_every=snapshot_every)
    init = Path(init) if init is not None else None
    cfg.extra = {"p_uncond": p_uncond, "null_label": NULL_LABEL, "init": init.name if init else None}
    out = require_out(out, cfg_checkpoint_name(p_uncond))
    info = {
        "command": f"python -m glide_edu.recipes digits-cfg --p-uncond {p_uncond}",
        "p_uncond": p_uncond,
        "null_label": NULL_LABEL,
        "init": f"{init.name} (sha256 {sha256_file(init)})" if init else "from scratch",
        "weights": weights_note(cfg),
    }
    images, labels = load_digits(16, "train")
    return _train_and_ship(
        unet_cfg, diffusion_cfg, cfg, out, run_dir, info, images=images, labels=labels, init=init,
        label_dropout=p_uncond, null_label=NULL_LABEL,
    )


# Channel multipliers per resolution (guided-diffusion's defaults, 16×16 as the digits model).
FOLDER_CHANNEL_MULT = {16: (1, 2, 2), 32: (1, 2, 2, 2), 64: (1, 2, 3, 4), 128: (1, 1, 2, 3, 4), 256: (1, 1, 2, 2, 4, 4)}


def folder_unet(image_size: int, channels: int, model_channels: int, learn_sigma: bool,
                num_classes: int | None) -> UNetConfig:
    """An ADM UNet for ``image_size`` (one of :data:`FOLDER_CHANNEL_MULT`): attention at 32, 16 and 8 px."""
    if image_size not in FOLDER_CHANNEL_MULT:
        raise ValueError(f"--image-size {image_size} is not supported; choose one of {sorted(FOLDER_CHANNEL_MULT)}")
    if model_channels % 32:
        raise ValueError(f"--model-channels must be a multiple of 32 (GroupNorm(32)), got {model_channels}")
    return UNetConfig(
        image_size=image_size, in_channels=channels, model_channels=model_channels,
        channel_mult=FOLDER_CHANNEL_MULT[image_size], num_res_blocks=2,
        attention_resolutions=tuple(r for r in (32, 16, 8) if r < image_size),
        num_head_channels=min(64, model_channels), dropout=0.1, learn_sigma=learn_sigma, num_classes=num_classes,
    )


def folder_recipe(args: argparse.Namespace) -> dict:
    """Check the ``recipes folder`` options and read the images; the keyword arguments of ``_train_and_ship``.

    Raises ValueError / FileNotFoundError with a one-line message before any training starts.
    """
    if not 0.0 <= args.p_uncond < 1.0:
        raise ValueError(f"--p-uncond must lie in [0, 1), got {args.p_uncond}")
    data = load_image_folder(args.data, args.image_size, args.channels)
    if args.p_uncond and data.labels is None:
        raise ValueError("--p-uncond needs one sub-folder per class in --data (labels); this folder is flat")
    null = {"label_dropout": args.p_uncond, "null_label": len(data.classes)} if args.p_uncond else {}
    num_classes = None if data.labels is None else len(data.classes) + (1 if null else 0)
    unet_cfg = folder_unet(args.image_size, args.channels, args.model_channels, args.loss == "hybrid", num_classes)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, ema_rate=args.ema_rate,
                      ema_warmup=True, loss_type=args.loss, seed=args.seed, checkpoint_every=args.checkpoint_every,
                      sample_every=args.sample_every, log_every=100)
    if null:
        cfg.extra = {"p_uncond": args.p_uncond, "null_label": null["null_label"]}
    info = {"command": "python -m glide_edu.recipes folder", "data": Path(args.data).name,
            "images": len(data.images), "classes": data.classes,
            "weights": weights_note(cfg)}
    return {"unet_cfg": unet_cfg, "diffusion_cfg": diffusion_config(args.loss), "cfg": cfg, "out": args.out,
            "run_dir": args.run_dir, "info": info, "images": data.images, "labels": data.labels, **null}


OUT_HELP = "file to write (required; to replace a shipped file, give its path under data/)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m glide_edu.recipes", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="recipe", required=True)
    digits = sub.add_parser("digits", help="the 16×16 digits diffusion model of chapters 3–4")
    digits.add_argument("--loss", choices=["simple", "hybrid"], required=True)
    digits.add_argument("--steps", type=int, default=None, help=f"default {DIGITS_TRAIN.steps}")
    digits.add_argument("--out", type=Path, required=True, help=OUT_HELP)
    digits.add_argument("--run-dir", type=Path, default=None, help="keep resumable checkpoints here")
    digits.add_argument("--threads", type=int, default=None)
    digits.add_argument("--sample-every", type=int, default=0, metavar="N",
                        help="every N steps, save a grid of EMA samples to <run-dir>/samples (needs --run-dir)")
    digits.add_argument("--snapshot-every", type=int, default=0, metavar="N",
                        help="every N steps, keep the EMA weights in <run-dir>/snapshots (for a training curve)")
    digits.add_argument("--seed", type=int, default=0)
    cfgp = sub.add_parser("digits-cfg", help="the class-conditional digits model with label dropout (chapter 6)")
    cfgp.add_argument("--p-uncond", type=float, required=True, help="probability of the null label, e.g. 0.1")
    cfgp.add_argument("--steps", type=int, default=None, help=f"default {CFG_STEPS}")
    cfgp.add_argument("--out", type=Path, required=True, help=OUT_HELP)
    cfgp.add_argument("--run-dir", type=Path, default=None, help="keep resumable checkpoints here")
    cfgp.add_argument("--threads", type=int, default=None)
    cfgp.add_argument("--sample-every", type=int, default=0, metavar="N",
                      help="every N steps, save a grid of EMA samples to <run-dir>/samples (needs --run-dir)")
    cfgp.add_argument("--snapshot-every", type=int, default=0, metavar="N",
                      help="every N steps, keep the EMA weights in <run-dir>/snapshots (for a training curve)")
    cfgp.add_argument("--init", type=Path, default=None, help="fine-tune this unconditional checkpoint "
                      "instead of training from scratch (e.g. data/checkpoints/digits_hybrid.safetensors)")
    cfgp.add_argument("--seed", type=int, default=0)
    clf = sub.add_parser("classifier", help="the noisy (or clean control) digits classifier of chapter 5")
    noise_flag = clf.add_mutually_exclusive_group(required=True)
    noise_flag.add_argument("--noised", action="store_true", help="train on q_sample(x_0, t), t uniform")
    noise_flag.add_argument("--clean", action="store_true", help="the control: clean x_0, t = 0 only")
    clf.add_argument("--steps", type=int, default=None, help="default 6000 (--noised) or 1000 (--clean)")
    clf.add_argument("--out", type=Path, required=True, help=OUT_HELP)
    clf.add_argument("--threads", type=int, default=None)
    clf.add_argument("--seed", type=int, default=0)
    fold = sub.add_parser("folder", help="an ADM UNet on a folder of your own images (class sub-folders → labels)")
    fold.add_argument("--data", type=Path, required=True, help="folder of images, optionally one sub-folder per class")
    fold.add_argument("--image-size", type=int, required=True, help=f"one of {sorted(FOLDER_CHANNEL_MULT)}")
    fold.add_argument("--channels", type=int, default=3, choices=[1, 3])
    fold.add_argument("--loss", choices=["simple", "hybrid"], default="hybrid")
    fold.add_argument("--steps", type=int, default=10_000)
    fold.add_argument("--batch-size", type=int, default=32)
    fold.add_argument("--lr", type=float, default=1e-4)
    fold.add_argument("--ema-rate", type=float, default=0.9999, help="with warm-up min(rate, (1+n)/(10+n))")
    fold.add_argument("--model-channels", type=int, default=64)
    fold.add_argument("--p-uncond", type=float, default=0.0, help="label dropout for classifier-free guidance")
    fold.add_argument("--out", type=Path, required=True, help="the EMA weights + configs (.safetensors)")
    fold.add_argument("--run-dir", type=Path, default=None, help="keep resumable checkpoints here")
    fold.add_argument("--checkpoint-every", type=int, default=1000)
    fold.add_argument("--sample-every", type=int, default=0, metavar="N",
                      help="every N steps, save a grid of EMA samples to <run-dir>/samples (needs --run-dir)")
    fold.add_argument("--threads", type=int, default=None)
    fold.add_argument("--seed", type=int, default=0)
    mini = sub.add_parser("glide-mini", help="GLIDE in miniature: the 32x32 text-to-image model (chapter 7)")
    mini.add_argument("--out", type=Path, required=True, help="the EMA weights as a GLIDE file (.safetensors)")
    mini.add_argument("--run-dir", type=Path, default=None, help="keep resumable checkpoints here")
    mini.add_argument("--steps", type=int, default=None, help="default 30000")
    mini.add_argument("--snapshot-every", type=int, default=0, metavar="N",
                      help="every N steps, keep the EMA weights in <run-dir>/snapshots (for a training curve)")
    mini.add_argument("--sample-every", type=int, default=0, metavar="N",
                      help="every N steps, save a grid of EMA samples to <run-dir>/samples (needs --run-dir)")
    mini.add_argument("--threads", type=int, default=None)
    mini.add_argument("--seed", type=int, default=0)
    mini.add_argument("--init-from", type=Path, default=None, metavar="FILE",
                      help="continue from this GLIDE file's weights and step (e.g. the shipped miniature) when "
                           "--run-dir has no checkpoint yet: a warm start (Adam restarts), not a bit-exact resume")
    mini.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                      help="autocast (bf16: ~1.45x faster a step on AVX-512-BF16 CPUs; a resume records a change)")
    add_clip_parser(sub)
    pics = sub.add_parser("picture-features", help="the emoji/shapes feature network of the FID-proxy (chapter 12)")
    pics.add_argument("--out", type=Path, required=True, help=OUT_HELP)
    pics.add_argument("--epochs", type=int, default=8)
    pics.add_argument("--seed", type=int, default=0)
    pics.add_argument("--threads", type=int, default=None)
    feats = sub.add_parser("fid-features", help="the digit feature network of the FID-proxy (glide_edu.metrics)")
    feats.add_argument("--out", type=Path, required=True, help=OUT_HELP)
    feats.add_argument("--epochs", type=int, default=30)
    feats.add_argument("--seed", type=int, default=0)
    feats.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.recipe == "fid-features":
        from glide_edu.metrics import save_feature_net, train_feature_net

        net, accuracy = train_feature_net(args.epochs, args.seed)
        print(f"wrote {save_feature_net(net, args.out)} (test accuracy {accuracy:.4f})")
        return
    if args.recipe == "picture-features":
        from glide_edu.text_metrics import save_picture_net, train_picture_net

        net, accuracy = train_picture_net(args.epochs, args.seed)
        print(f"wrote {save_picture_net(net, args.out)} (accuracy on new shapes scenes {accuracy:.4f})")
        return
    if args.recipe == "clip":
        print(f"wrote {run_clip_recipe(args)}")
        return
    if args.recipe == "classifier":
        from glide_edu.train_classifier import train_and_save_classifier

        print(f"wrote {train_and_save_classifier(args.noised, args.steps, args.out, args.seed)}")
        return
    if getattr(args, "sample_every", 0) and args.run_dir is None:
        parser.error("--sample-every needs --run-dir: the grids are written to <run-dir>/samples")
    if getattr(args, "snapshot_every", 0) and args.run_dir is None:
        parser.error("--snapshot-every needs --run-dir: the snapshots are written to <run-dir>/snapshots")
    if args.recipe == "glide-mini":
        from glide_edu.train_text import train_mini

        path = train_mini(args.out, args.run_dir, args.steps, args.seed, snapshot_every=args.snapshot_every,
                          sample_every=args.sample_every, init_from=args.init_from, precision=args.precision)
    elif args.recipe == "folder":
        try:
            recipe = folder_recipe(args)
        except (ValueError, FileNotFoundError) as err:
            parser.error(str(err))
        path = _train_and_ship(**recipe)
    elif args.recipe == "digits-cfg":
        path = train_digits_cfg(args.p_uncond, args.steps, args.out, args.run_dir, args.seed,
                                sample_every=args.sample_every, snapshot_every=args.snapshot_every, init=args.init)
    else:
        path = train_digits(args.loss, args.steps, args.out, args.run_dir, args.seed, sample_every=args.sample_every,
                            snapshot_every=args.snapshot_every)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
