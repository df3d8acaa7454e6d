"""``glide-edu train CONFIG``: train a model of the book from a configuration file (TOML or JSON).

A config names what to build, on which data, with which options — the same dataclasses the recipes use::

    kind = "unet"                       # "unet": ADM UNet (optionally class-conditional); "glide": a GLIDE
                                        # network (base, upsampler, inpainting: [model] super_res / inpaint);
                                        # "clip": a CLIP (noised or clean); "classifier": the noisy classifier
    [data]                              # source = "digits" | "folder" | "book-captions" | "caption-folder" |
                                        # "webdataset" (tar shards, streamed: shards, image_size, …)
    [model]                             # UNetConfig fields ("unet"), GLIDE option names ("glide"),
                                        # preset = "mini" | "eval" and ClipConfig fields ("clip"), or
                                        # ClassifierConfig fields ("classifier")
    [diffusion]                         # steps, noise_schedule, model_var_type ("unet"; "classifier": the
                                        # diffusion it classifies noised images of)
    [train]                             # TrainConfig fields: steps, batch_size, lr, ema_rate, … (ClipTrainConfig,
                                        # ClassifierTrainConfig for those kinds)
    [log]                               # tensorboard = true: also TensorBoard event files (metrics.csv always)

The book's models ship as configs (``glide-edu train --list``): ``glide-edu train digits-hybrid --run-dir R
--out F`` reproduces ``python -m glide_edu.recipes digits --loss hybrid``. ``--set train.steps=500`` changes
one value. A run folder that already holds checkpoints is continued only with ``--resume``; ``--init-from FILE``
starts a new run from FILE's weights (fine-tuning a shipped or released network; ``--continue-steps``
also takes over its step, continuing the same recipe from a snapshot). Under ``torchrun``
the same command trains data-parallel (:mod:`glide_edu.distributed`); rank 0 writes the files.
Logged scalars go to ``<run_dir>/metrics.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

from glide_edu.train_kinds import (  # noqa: F401  (re-exported: the config checks are part of this module's API)
    GLIDE_DATA,
    KINDS,
    SAMPLING_OPTIONS,
    SECTIONS,
    SOURCES,
    ConfigError,
    _dataclass,
    check_config,
    classifier_parts,
    clip_parts,
    glide_parts,
    stream_parts,
)

# torch and the models are imported where they are used: `glide-edu --help` stays fast.


def shipped_configs() -> dict[str, Path]:
    """{name: path} of the configs that ship with glide-edu (the book's models)."""
    folder = resources.files("glide_edu") / "configs"
    return {Path(p.name).stem.replace("_", "-"): Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def read_config(source: str | Path) -> dict[str, Any]:
    """A config as a dict: a ``.toml`` / ``.json`` file, or the name of a shipped config."""
    path = Path(source)
    if not path.exists():
        named = shipped_configs().get(str(source))
        if named is None:
            raise ConfigError(f"no config file {source} and no shipped config of that name; shipped: "
                              f"{', '.join(sorted(shipped_configs()))}")
        path = named
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    if path.suffix != ".toml":
        raise ConfigError(f"{path.name}: a config is a .toml or .json file")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ConfigError("reading TOML on Python 3.10 needs `pip install tomli`; or write the config as "
                              ".json") from None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path.name} is not valid TOML: {err}") from None


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``section.key=value`` (value read as TOML/JSON where it parses, else as a string) → a changed copy."""
    config = json.loads(json.dumps(config))
    for item in overrides:
        key, sep, text = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in SECTIONS:
            raise ConfigError(f"--set {item!r}: write SECTION.KEY=VALUE with SECTION one of {', '.join(SECTIONS)}, "
                              "e.g. --set train.steps=500")
        try:
            value = json.loads(text.replace("'", '"')) if text not in ("true", "false") else text == "true"
        except json.JSONDecodeError:
            value = text
        config.setdefault(section, {})[name] = value
    return config


def build(config: dict[str, Any], run_dir: Path | None) -> tuple[Any, dict[str, Any]]:
    """(Trainer, what to write at the end) for a checked config."""
    from glide_edu.nn.unet import UNetConfig
    from glide_edu.recipes import unet_trainer
    from glide_edu.train import TrainConfig

    check_config(config)
    data, train_cfg = config["data"], _dataclass(TrainConfig, config.get("train", {}), "train")
    if config["kind"] == "glide":
        from glide_edu.captions import book_captions
        from glide_edu.train_text import text_trainer

        options, task, p_uncond = glide_parts(config)
        spec = {"format": "glide", "options": options, "kind": task.kind}
        low = {"low_res_size": task.low_res_size} if task.super_res else {}  # an upsampler's task is run-defining
        if data["source"] == "webdataset":  # tar shards, streamed: nothing held in memory
            from glide_edu.train_stream import stream_trainer

            trainer = stream_trainer(options, stream_parts(config, options), train_cfg, p_uncond=p_uncond,
                                     run_dir=run_dir, model_config={"glide_options": options, **low}, task=task)
            return trainer, spec
        n_shapes = int(data.get("n_shapes", 20000))
        if data["source"] == "caption-folder":  # your own captioned images (glide_edu.datasets), in memory
            from glide_edu.datasets import load_captioned_folder

            if "path" not in data:
                raise ConfigError("[data] source = 'caption-folder' needs path = 'my_captioned_images/'")
            captions = load_captioned_folder(data["path"], int(options["image_size"]))  # uniform sampling
        else:
            captions = book_captions("train", n_shapes, train_cfg.seed)
        trainer = text_trainer(options, captions.images, captions.captions, train_cfg,
                               weights=getattr(captions, "weights", None), p_uncond=p_uncond, run_dir=run_dir,
                               model_config={"glide_options": options, "n_shapes": n_shapes, **low}, task=task)
        return trainer, spec
    from glide_edu.data import load_digits, load_image_folder
    if data["source"] == "digits":
        images, labels = load_digits(16, "train")
    else:
        if "path" not in data:
            raise ConfigError("[data] source = 'folder' needs path = 'my_images/' (and image_size, channels)")
        folder = load_image_folder(data["path"], int(data.get("image_size", 32)), int(data.get("channels", 3)))
        images, labels = folder.images, folder.labels
    p_uncond = float(data.get("p_uncond", 0.0))
    if not data.get("labels", False):
        labels = None
    if p_uncond and labels is None:
        raise ConfigError("[data] p_uncond needs labels = true (and a labelled source)")
    unet_cfg = _dataclass(UNetConfig, config.get("model", {}), "model")
    dconf = {"steps": 1000, "noise_schedule": "cosine", "model_var_type": "learned_range"} | config.get("diffusion", {})
    null = {"label_dropout": p_uncond, "null_label": int(labels.max()) + 1} if p_uncond else {}
    want = None if labels is None else int(labels.max()) + 1 + bool(p_uncond)
    if unet_cfg.num_classes != want:
        raise ConfigError(f"[model] num_classes = {unet_cfg.num_classes} but the data need {want} "
                          + ("(no labels)" if want is None else "(the classes, plus the null label with p_uncond)"))
    trainer = unet_trainer(unet_cfg, dconf, train_cfg, images, labels, run_dir, **null)  # as the recipes build it
    return trainer, {"format": "small", "unet": unet_cfg, "diffusion": dconf}


class RunLog:
    """Rank 0 appends each logged step's scalars to ``<run_dir>/metrics.csv`` (header on first write) and, with
    ``tensorboard``, to TensorBoard event files in ``<run_dir>/tensorboard`` (``tensorboard --logdir …``)."""

    FIELDS = ("step", "loss", "mse", "vb", "grad_norm", "skipped", "loss_scale")

    def __init__(self, run_dir: Path | None, every: int, tensorboard: bool = False, extra: tuple[str, ...] = (),
                 start_step: int = 0) -> None:
        self.path = run_dir / "metrics.csv" if run_dir is not None else None
        self.every, self.writer = max(1, every), None
        self.fields = (*self.FIELDS, *extra)  # extra: a trainer's own columns (streamed data: data_seen, …)
        if tensorboard:
            if run_dir is None:
                raise ConfigError("tensorboard logging needs --run-dir (the event files go to <run-dir>/tensorboard)")
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("tensorboard = true needs the tensorboard package: pip install tensorboard") from None
            from glide_edu import distributed as ddp

            if ddp.is_main_process():  # a resumed run replaces the events logged after its checkpoint
                purge = start_step + 1 if start_step else None
                self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)
        if start_step:
            self.drop_after(start_step)

    def drop_after(self, step: int) -> int:
        """Remove the rows a stopped run logged after its last checkpoint (``step``), which the resumed run logs
        again, so that ``metrics.csv`` holds each step once; rewritten atomically. Returns how many went."""
        from glide_edu import distributed as ddp
        from glide_edu.fileio import atomic_write

        if self.path is None or not self.path.exists() or not ddp.is_main_process():
            return 0
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or list(self.fields), list(reader)
        keep = [r for r in rows if not r.get("step") or float(r["step"]) <= step]
        if len(keep) < len(rows):
            def write(tmp: str) -> None:
                with open(tmp, "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=fields)
                    writer.writeheader()
                    writer.writerows(keep)

            atomic_write(self.path, write)  # fsynced; a failure leaves the old file
        return len(rows) - len(keep)

    def __call__(self, trainer: Any, logs: dict[str, float]) -> None:
        if self.path is None or trainer.rank != 0 or trainer.step % self.every:
            return
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.fields), extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(logs)
        if self.writer is not None:
            for key, value in logs.items():
                if key != "step":
                    self.writer.add_scalar(f"train/{key}", value, trainer.step)
            self.writer.flush()


def train_from_config(config: dict[str, Any], out: Path, run_dir: Path | None, resume: bool = False,
                      init_from: Path | None = None, continue_steps: bool = False) -> Path:
    """Train what ``config`` describes; rank 0 writes the EMA weights to ``out`` (small or GLIDE format).
    ``init_from``: start from that file's weights (and with ``continue_steps`` its step; :mod:`glide_edu.warm_start`)
    instead of a fresh network."""
    from glide_edu import distributed as ddp
    from glide_edu.pretrained import save_glide_checkpoint, save_small_checkpoint
    from glide_edu.run_dir import check_writable, latest_checkpoint
    from glide_edu.warm_start import warm_start

    check_config(config)
    if continue_steps and init_from is None:
        raise ConfigError("--continue-steps goes with --init-from FILE (the file whose step the run continues)")
    if run_dir is not None and not resume and run_dir.exists() and latest_checkpoint(run_dir) is not None:
        raise ConfigError(f"{run_dir} already holds a run; add --resume to continue it, or give another --run-dir")
    if ddp.is_main_process():
        check_writable(out.parent)
    if init_from is not None and config["kind"] in ("clip", "classifier"):
        raise ConfigError(f"--init-from works for kind = 'unet' and 'glide' runs, not {config['kind']!r} ones")
    if config["kind"] == "clip":
        return _train_clip(config, out, run_dir)
    if config["kind"] == "classifier":
        return _train_classifier(config, out, run_dir, resume)
    trainer, spec = build(config, run_dir)
    started_from = warm_start(trainer, init_from, getattr(trainer, "options", None) or spec.get("options"),
                              continue_steps=continue_steps)
    start = time.perf_counter()
    log = RunLog(run_dir, trainer.config.log_every, bool(config.get("log", {}).get("tensorboard", False)),
                 getattr(trainer, "LOG_FIELDS", ()), start_step=trainer.step)
    history = trainer.train(callback=log)
    info = {"command": "glide-edu train", "config": config, "steps": trainer.step,
            "train_seconds_this_run": round(time.perf_counter() - start, 1), "world_size": trainer.world_size,
            "final_loss": history[-1]["loss"] if history else None,
            **({"init_from": started_from} if started_from else {})}
    ema = trainer.full_ema()  # (FSDP: gathered on every rank; rank 0 writes)
    if trainer.rank == 0:
        if spec["format"] == "glide":
            save_glide_checkpoint(out, ema, getattr(trainer, "options", None) or spec["options"], spec["kind"], info)
        else:
            save_small_checkpoint(out, ema, spec["unet"], spec["diffusion"], info)
    ddp.barrier()
    return out


def _train_clip(config: dict[str, Any], out: Path, run_dir: Path | None) -> Path:
    """A CLIP (:func:`glide_edu.train_clip.train_clip`; its loss and validation curve go into the file)."""
    from glide_edu import distributed as ddp
    from glide_edu.train_clip import train_clip

    if ddp.rank_and_world()[1] > 1:
        raise ConfigError("CLIP training runs in one process; start it without torchrun")
    clip_config, train = clip_parts(config)
    data = config["data"]
    if data["source"] == "caption-folder":
        from glide_edu.datasets import load_captioned_folder

        if "path" not in data:
            raise ConfigError("[data] source = 'caption-folder' needs path = 'my_captioned_images/'")
        folder = load_captioned_folder(data["path"], clip_config.image_size)
        return train_clip(out, clip_config, train, folder.images, folder.captions, run_dir=run_dir)
    return train_clip(out, clip_config, train, run_dir=run_dir)  # the book's captions, emoji/shapes weighted


def _train_classifier(config: dict[str, Any], out: Path, run_dir: Path | None, resume: bool) -> Path:
    """The noisy (or clean) classifier of chapter 5 (:func:`glide_edu.train_classifier.classifier_run`): one
    process, minutes on a CPU, no checkpoints; with a run_dir its history goes to ``metrics.csv``."""
    from glide_edu import distributed as ddp
    from glide_edu.train_classifier import classifier_run

    if ddp.rank_and_world()[1] > 1:
        raise ConfigError("classifier training runs in one process; start it without torchrun")
    if resume:
        raise ConfigError("a classifier run keeps no checkpoints to resume (it trains in minutes); run it again "
                          "without --resume")
    model, train, diffusion = classifier_parts(config)
    path, history = classifier_run(out, model, train, diffusion, info={"command": "glide-edu train", "config": config})
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        with (run_dir / "metrics.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["step", "loss", "accuracy"])
            writer.writeheader()
            writer.writerows(history)
    return path


def add_parser(modes: Any, formatter: type) -> argparse.ArgumentParser:
    """The ``train`` mode of ``glide-edu``'s parser."""
    train = modes.add_parser("train", help="train a model of the book from a config file (torchrun: data-parallel)",
                             description=__doc__, formatter_class=formatter)
    add_arguments(train)
    return train


def main_cli(args: argparse.Namespace) -> int:
    """``glide-edu train``: 0, or 1 after a one-line error (a bad config is refused before any training)."""
    import sys
    import textwrap

    try:
        path = run_cli(args)
    except (ValueError, OSError, RuntimeError) as err:
        message = " ".join(str(err).split())
        print(f"glide-edu train: error: {textwrap.shorten(message, 400)}", file=sys.stderr)
        return 1
    if path is not None:
        print(f"wrote {path}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="a .toml/.json config, or a shipped config's name (see --list)")
    parser.add_argument("--out", type=Path, help="file to write: the EMA weights (.safetensors)")
    parser.add_argument("--run-dir", type=Path, default=None, help="resumable checkpoints, metrics.csv, snapshots")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    parser.add_argument("--init-from", type=Path, default=None, metavar="FILE",
                        help="start from FILE's weights (a .safetensors of the book or an official .pt): fine-tuning")
    parser.add_argument("--continue-steps", action="store_true",
                        help="with --init-from: also take FILE's step (continue the same recipe from a snapshot)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="change one value, e.g. --set train.steps=500 (repeatable)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps (= --set train.device=…)")
    parser.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16"],
                        help="bf16 / fp16 autocast, float32 master weights (= --set train.precision=…)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per process")
    parser.add_argument("--list", action="store_true", help="list the shipped configs and exit")


def run_cli(args: argparse.Namespace) -> Path | None:
    """The ``train`` mode of ``glide-edu``: the written file (None after ``--list`` and on ranks > 0); raises
    ConfigError/ValueError/OSError."""
    if args.list:
        configs = {name: read_config(path) for name, path in sorted(shipped_configs().items())}
        width = max(map(len, configs))
        print(f"{'config':{width}s}  {'kind':10s} description")
        for name, config in configs.items():
            print(f"{name:{width}s}  {config.get('kind', '?'):10s} {config.get('description', '')}")
        return None
    if args.config is None or args.out is None:
        raise ConfigError("give a CONFIG and --out FILE (e.g. glide-edu train digits-hybrid --out model.safetensors)")
    import torch

    from glide_edu import distributed as ddp

    if args.threads:
        torch.set_num_threads(args.threads)
    ddp.init_from_env()
    sets = list(args.set) + [f"train.{k}={json.dumps(v)}" for k in ("device", "precision")
                             if (v := getattr(args, k)) is not None]
    config = apply_overrides(read_config(args.config), sets)
    path = train_from_config(config, args.out, args.run_dir, args.resume, args.init_from, args.continue_steps)
    return path if ddp.is_main_process() else None  # rank 0 wrote it and says so
