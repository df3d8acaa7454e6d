"""Small shipped checkpoints: one ``.safetensors`` file holding weights and the configs to rebuild the model.

The file's metadata (a str → str map in the safetensors header) carries ``glide_edu`` JSON with the
model config, the diffusion config and how the weights were made (command, time, metrics). Weights may be
stored in float16 to keep the book small; they are loaded into a float32 model.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from glide_edu.fileio import assets_dir, atomic_write
from glide_edu.nn.unet import UNetConfig, UNetModel
from glide_edu.respace import create_diffusion

DATA_DIR = assets_dir()
CHECKPOINT_DIR = DATA_DIR / "checkpoints"


def save_small_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    model_config: UNetConfig,
    diffusion_config: dict[str, Any],
    info: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float16,
    kind: str = "unet",
) -> Path:
    """Write weights + configs into one safetensors file, atomically (temp file, then rename).

    ``kind`` names the network class (``"unet"``; ``"classifier"`` for :mod:`glide_edu.nn.classifier`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "kind": kind,
        "model_config": asdict(model_config),
        "diffusion_config": diffusion_config,
        "info": info or {},
    }
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"glide_edu": json.dumps(meta)}))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``glide_edu`` metadata of a small checkpoint."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; see docs/checkpoints.md for how to make it")
    try:
        with safe_open(path, framework="pt") as f:
            raw = (f.metadata() or {}).get("glide_edu")
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path} is not a readable safetensors file ({err}); re-create or re-download it") from None
    if raw is None:
        raise ValueError(f"{path} has no glide_edu metadata; it was not written by save_small_checkpoint")
    return json.loads(raw)


def load_small_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model in eval mode, diffusion, metadata) from a file written by :func:`save_small_checkpoint`."""
    meta = read_metadata(path)
    mc = meta["model_config"]
    for key in ("attention_resolutions", "channel_mult"):
        if mc.get(key) is not None:
            mc[key] = tuple(mc[key])
    model = UNetModel(UNetConfig(**mc))
    with safe_open(Path(path), framework="pt") as f:
        state = {k: f.get_tensor(k).float() for k in f.keys()}
    model.load_state_dict(state, strict=True)
    diffusion = create_diffusion(**meta["diffusion_config"])
    return model.to(device).eval(), diffusion, meta


def shipped_checkpoint(name: str) -> Path:
    """Path of a checkpoint shipped in ``data/checkpoints`` (e.g. ``"digits_simple"``)."""
    path = CHECKPOINT_DIR / f"{name}.safetensors"
    if not path.exists():
        available = sorted(p.stem for p in CHECKPOINT_DIR.glob("*.safetensors"))
        raise FileNotFoundError(f"no shipped checkpoint {name!r}; available: {', '.join(available) or 'none'}")
    return path


def snapshots(run_dir: str | os.PathLike) -> dict[int, Path]:
    """{step: path} of the EMA snapshots a training run kept (``TrainConfig.snapshot_every``): the small
    checkpoints ``<run_dir>/snapshots/ema-step-<step>.safetensors``, in step order."""
    folder = Path(run_dir) / "snapshots"
    found = {}
    for path in folder.glob("ema-step-*.safetensors"):
        step = path.name[len("ema-step-"):-len(".safetensors")]
        if step.isdigit():
            found[int(step)] = path
    if not found:
        raise FileNotFoundError(f"no EMA snapshots in {folder}; train with --run-dir … --snapshot-every N first")
    return dict(sorted(found.items()))


def save_glide_checkpoint(
    path: str | os.PathLike,
    network: nn.Module,
    options: dict[str, Any],
    kind: str = "base",
    info: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """A text-conditional GLIDE network in the small format: its state dict (the official key names) with
    GLIDE's option dictionary (``options``, including ``"tokenizer"``) and ``kind`` ("base", "upsample", …)
    in the metadata, so :func:`load_glide_checkpoint` rebuilds it with
    :func:`glide_edu.nn.presets.create_glide_model` and loads it with ``strict=True``."""
    meta = {"kind": f"glide-{kind}", "options": options, "info": info or {}}
    state = {k: v.detach().to(dtype).contiguous() for k, v in network.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"glide_edu": json.dumps(meta)}))


def load_glide_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict, dict]:
    """(network in eval mode, GLIDE options, metadata) from a file written by :func:`save_glide_checkpoint`."""
    from glide_edu.nn.presets import create_glide_model

    meta = read_metadata(path)
    if not str(meta.get("kind", "")).startswith("glide-"):
        raise ValueError(f"{path} holds a {meta.get('kind')!r} model, not a GLIDE network; load it with "
                         "load_small_checkpoint")
    network = create_glide_model(meta["options"])
    with safe_open(Path(path), framework="pt") as f:
        state = {k: f.get_tensor(k).float() for k in f.keys()}
    network.load_state_dict(state, strict=True)
    return network.to(device).eval(), meta["options"], meta
