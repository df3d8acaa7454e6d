"""A training run's folder: its checkpoints, the ``latest`` pointer, a lock, and what survives a crash.

Layout::

    <run_dir>/ckpt-0001000/{model,ema}.safetensors, optimizer.pt, trainer.json
    <run_dir>/latest            the name of the newest complete checkpoint (replaced atomically, last)
    <run_dir>/.lock             held (flock) by the one trainer using the folder
    <run_dir>/.ckpt-…           a checkpoint being written; renamed into place when complete

Nothing is lost by a kill at any moment: a checkpoint is written into a temporary folder that is renamed
into place, and ``latest`` is replaced after it. What a kill can leave — a temporary folder, a ``latest``
naming a folder that is gone, a truncated file in the newest checkpoint (a full disk) — is handled on the
next start: temporaries are removed (:func:`clean_temporaries`), and :func:`latest_checkpoint` falls back
to the newest *intact* checkpoint with a warning instead of failing.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from glide_edu.fileio import atomic_write_text

CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "optimizer.pt", "trainer.json")


class RunDirBusy(RuntimeError):
    """Another trainer holds this run folder."""


class RunLock:
    """An exclusive lock on ``<run_dir>/.lock`` for the trainer's lifetime (released when the process ends,
    however it ends): a second trainer on the same folder is refused instead of interleaving checkpoints."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        import fcntl

        self.path = Path(run_dir) / ".lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")  # noqa: SIM115  (held open on purpose: the lock lives with the file)
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise RunDirBusy(f"run folder {self.path.parent} is in use by {holder}; wait for it to finish or "
                                 "give another --run-dir") from None
            raise
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"trainer pid {os.getpid()}")
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            self._file.close()


def clean_temporaries(run_dir: str | os.PathLike) -> list[str]:
    """Remove half-written checkpoint folders (``.ckpt-*``) a killed trainer left; returns their names."""
    removed = []
    for tmp in Path(run_dir).glob(".ckpt-*"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp.name)
    return removed


def is_intact(path: Path) -> bool:
    """Whether a checkpoint folder has all its files, readable: JSON parses, safetensors headers parse, and
    ``optimizer.pt`` is a complete zip archive (its central directory is at the end: truncation breaks it)."""
    import zipfile

    try:
        if not all((path / name).is_file() for name in CHECKPOINT_FILES):
            return False
        json.loads((path / "trainer.json").read_text())
        for name in ("model.safetensors", "ema.safetensors"):
            with safe_open(path / name, framework="pt") as f:
                f.keys()
        with zipfile.ZipFile(path / "optimizer.pt") as z:
            return z.testzip() is None
    except Exception:  # any damage means "not intact"
        return False


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest intact checkpoint: the one ``latest`` names, else (with a warning) the newest intact
    ``ckpt-*`` folder; None when the run has none yet."""
    run_dir = Path(run_dir)
    pointer = run_dir / "latest"
    named = run_dir / pointer.read_text().strip() if pointer.exists() else None
    if named is not None and is_intact(named):
        return named
    candidates = sorted((p for p in run_dir.glob("ckpt-*") if p.is_dir()), reverse=True)
    fallback = next((p for p in candidates if is_intact(p)), None)
    if named is not None or candidates:
        what = f"{pointer} names {named.name}, which is missing or damaged" if named else "the run has no pointer"
        if fallback is None and named is not None:
            raise FileNotFoundError(f"{what}, and no other checkpoint in {run_dir} is intact; delete {pointer} "
                                    "to start over")
        if fallback is not None and fallback != named:
            warnings.warn(f"{what}; resuming from {fallback.name}, the newest intact checkpoint", stacklevel=2)
    return fallback


def write_checkpoint(run_dir: Path, step: int, model_state: Mapping[str, Tensor], ema_state: Mapping[str, Tensor],
                     state: dict[str, Any], meta: dict[str, Any], keep: int) -> Path:
    """Write ``ckpt-<step>`` atomically, point ``latest`` at it, keep the newest ``keep`` checkpoints."""
    run_dir.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{step:07d}"
    final = run_dir / name
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{name}."))
    try:
        save_file({k: v.detach().contiguous() for k, v in model_state.items()}, tmp / "model.safetensors")
        save_file({k: v.detach().contiguous() for k, v in ema_state.items()}, tmp / "ema.safetensors")
        torch.save(state, tmp / "optimizer.pt")
        (tmp / "trainer.json").write_text(json.dumps(meta, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(run_dir / "latest", name)
    olds = sorted(p for p in run_dir.glob("ckpt-*") if p.is_dir() and p.name != name)
    for old in olds[: max(0, len(olds) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Any], dict[str, Any]]:
    """(model state, EMA state, optimiser/RNG state, trainer.json) of a checkpoint folder."""
    meta = json.loads((path / "trainer.json").read_text())
    state = torch.load(path / "optimizer.pt", weights_only=True)
    return load_file(path / "model.safetensors"), load_file(path / "ema.safetensors"), state, meta


def check_writable(folder: str | os.PathLike, need_bytes: int = 0) -> None:
    """One clear error, before any training, when ``folder`` cannot be written or lacks ``need_bytes`` free."""
    folder = Path(folder)
    probe_dir = folder if folder.exists() else next((p for p in folder.parents if p.exists()), Path("."))
    if not probe_dir.is_dir():
        raise NotADirectoryError(f"cannot make {folder}: {probe_dir} is a file, not a folder; choose another path")
    if not os.access(probe_dir, os.W_OK):
        raise PermissionError(f"cannot write to {folder} ({probe_dir} is not writable); choose another folder")
    free = shutil.disk_usage(probe_dir).free
    if free < need_bytes:
        raise OSError(errno.ENOSPC, f"{probe_dir} has {free / 2**20:.0f} MB free but a checkpoint needs about "
                      f"{need_bytes / 2**20:.0f} MB; free space or choose another folder")
