"""Precomputed results the chapters read: where they live, how they record provenance, how stale ones are refused.

Evaluations that take minutes or hours (sampler tables, guidance sweeps, training curves) are computed once by
``python -m glide_edu.book regenerate chNN`` and written as JSON into ``data/results/``. Each file records
how it was made under ``provenance``: the command, date, torch version, machine, seconds, and for every
checkpoint it used the file name and SHA-256. :func:`load_results` checks the schema and those hashes
against the shipped checkpoints, so a chapter never shows numbers of weights it does not ship.

Every sampler comparison starts from :func:`initial_noise` so that two settings given the same seed start
from the same x_T (common random numbers). Training curves are summarised per step over seeds by
:func:`curve_summary`, and :func:`plateau_step` finds where a curve stops moving beyond its noise.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glide_edu.fileio import asset_path, assets_dir, atomic_write, atomic_write_text, sha256_file

__all__ = [
    "RESULTS_DIR",
    "StaleResultsError",
    "checkpoint_provenance",
    "initial_noise",
    "load_results",
    "run_provenance",
    "write_results",
]

RESULTS_DIR = asset_path("results")


class StaleResultsError(ValueError):
    """A results file was computed with other checkpoints than the shipped ones (or has another schema)."""


def initial_noise(n: int, seed: int, image_size: int = 16, channels: int = 1) -> Tensor:
    """x_T ~ N(0, I) for ``n`` samples from ``seed``, (n, channels, size, size): the same for every sampler."""
    return torch.randn(n, channels, image_size, image_size, generator=torch.Generator().manual_seed(seed))


def _display_path(path: str | os.PathLike) -> str:
    """``data/<relative path>`` for a shipped file, else just the file name (no machine paths in results)."""
    path = Path(path).resolve()
    try:
        return "data/" + path.relative_to(assets_dir().resolve()).as_posix()
    except ValueError:
        return path.name


def checkpoint_provenance(path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """{"file", "sha256"[, "info"]} of a checkpoint used by an evaluation (``info``: how it was trained)."""
    entry: dict[str, Any] = {"file": _display_path(path), "sha256": sha256_file(path)}
    if meta is not None:
        entry["info"] = dict(meta.get("info", {}))
    return entry


def run_provenance(command: str, start: float, extends: Mapping[str, Any] | None = None,
                   **extra: Any) -> dict[str, Any]:
    """The run's record: command, UTC date, seconds since ``start`` (perf_counter), torch/python/machine/threads.
    ``extends``: an earlier result whose rows this one keeps; its provenance is kept under ``"extends"``."""
    if extends is not None:
        extra["extends"] = extends["provenance"]
    return {
        "command": command,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        **extra,
    }


# config keys that do not change what a row means: which snapshots were measured, and a free-text remark
NOT_SETTINGS = ("every", "note")


def check_extendable(extend: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Refuse to extend an earlier result unless its ``config`` equals ``config`` apart from :data:`NOT_SETTINGS`."""
    have = {k: v for k, v in extend["config"].items() if k not in NOT_SETTINGS}
    want = {k: v for k, v in config.items() if k not in NOT_SETTINGS}
    if have != want:
        raise ValueError(f"cannot extend a result measured with {have} by one with {want}; measure it anew "
                         "instead of extending it")


def kept_rows(extend: Mapping[str, Any] | None, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``extend`` (an earlier result of the same measurement, or None) once its settings are checked
    against ``config`` (:func:`check_extendable`): a run that went on is measured only on its new snapshots."""
    if extend is None:
        return []
    check_extendable(extend, config)
    return list(extend["rows"])


def write_results(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``results`` as indented UTF-8 JSON, atomically."""
    return atomic_write_text(path, json.dumps(results, indent=1, ensure_ascii=False) + "\n")


def load_results(
    path: str | os.PathLike, schema: str, regenerate: str, check_checkpoints: bool = True
) -> dict[str, Any]:
    """Read a results file, check its ``schema`` and (by default) that its checkpoints are the shipped ones.

    ``regenerate`` is the command that rebuilds the file; every error message ends with it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no results at {path.name}; regenerate them with: {regenerate}")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("schema") != schema:
        raise StaleResultsError(
            f"{path.name} has schema {data.get('schema')!r}, expected {schema!r}; regenerate it with: {regenerate}"
        )
    if check_checkpoints:
        check_shipped_checkpoints(path, data.get("provenance", {}), regenerate)
    return data


def check_shipped_checkpoints(path: str | os.PathLike, provenance: Mapping[str, Any], regenerate: str) -> None:
    """Raise :class:`StaleResultsError` unless every checkpoint in ``provenance`` is the shipped file."""
    for entry in provenance.get("checkpoints", {}).values():
        shipped = Path(assets_dir(), *Path(entry["file"]).parts[1:]) if entry["file"].startswith("data/") else None
        if shipped is None or not shipped.exists() or sha256_file(shipped) != entry["sha256"]:
            raise StaleResultsError(
                f"{Path(path).name} was computed with another {Path(entry['file']).name} than the one shipped; "
                f"regenerate it with: {regenerate}"
            )


def save_image_views(path: str | os.PathLike, keys: Sequence[Mapping[str, Any]], images: Tensor, schema: str,
                     provenance: Mapping[str, Any]) -> Path:
    """Precomputed widget views: ``images`` (V, n, C, H, W) in [−1, 1] stored as 8-bit, one JSON ``key`` per
    view (its settings and readouts), the ``schema`` and ``provenance`` in the metadata (atomic write)."""
    from safetensors.torch import save_file

    if images.ndim != 5 or images.shape[0] != len(keys):
        raise ValueError(f"images {tuple(images.shape)} must be (V, n, C, H, W) with one view per key ({len(keys)})")
    pixels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).contiguous()
    meta = {"glide_edu": json.dumps({"schema": schema, "views": list(keys), "provenance": dict(provenance)})}
    return atomic_write(path, lambda tmp: save_file({"images": pixels}, tmp, metadata=meta))


def load_image_views(path: str | os.PathLike, schema: str, regenerate: str, check_checkpoints: bool = True
                     ) -> tuple[list[dict[str, Any]], Tensor, dict[str, Any]]:
    """(keys, images (V, n, C, H, W) in [−1, 1], provenance) of :func:`save_image_views`; refused, with the
    ``regenerate`` command, when missing, of another schema or made with other checkpoints than the shipped."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no precomputed views at {path.name}; make them with: {regenerate}")
    with safe_open(path, framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("glide_edu", "{}"))
        images = f.get_tensor("images") if meta else None
    if meta.get("schema") != schema:
        raise StaleResultsError(f"{path.name} has schema {meta.get('schema')!r}, expected {schema!r}; "
                                f"regenerate it with: {regenerate}")
    if check_checkpoints:
        check_shipped_checkpoints(path, meta.get("provenance", {}), regenerate)
    return meta["views"], images.float() / 127.5 - 1, meta["provenance"]


def curve_summary(rows: Sequence[Mapping[str, Any]], metric: str = "fid_proxy") -> dict[int, tuple[float, float]]:
    """{step: (mean over seeds, half the range over seeds)} of ``metric`` — the curve and its noise."""
    by_step: dict[int, list[float]] = {}
    for row in rows:
        by_step.setdefault(int(row["step"]), []).append(float(row[metric]))
    return {s: (sum(v) / len(v), (max(v) - min(v)) / 2) for s, v in sorted(by_step.items())}


def plateau_step(summary: Mapping[int, tuple[float, float]]) -> int | None:
    """The first step from which the curve stays flat within its noise: every *later* step's mean lies within the
    two half-ranges of this step's mean. ``summary`` is :func:`curve_summary`'s output. ``None`` when no step
    before the last one qualifies — the curve has not yet flattened (the last step alone proves nothing)."""
    steps = sorted(summary)
    for i, k in enumerate(steps[:-1]):
        mean_k, half_k = summary[k]
        if all(abs(summary[j][0] - mean_k) <= summary[j][1] + half_k for j in steps[i + 1:]):
            return k
    return None
