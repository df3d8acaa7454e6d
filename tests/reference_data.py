"""Access to the GLIDE reference data in ``../shared`` (present in CI, absent in a user's clone).

Tests that need it call :func:`fixture` / :func:`shared_path`, which skip cleanly when the folder is
missing. ``GLIDE_EDU_SHARED`` may point elsewhere.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def shared_path() -> Path:
    """The shared/ folder beside the project, or skip the calling test."""
    path = Path(os.environ.get("GLIDE_EDU_SHARED", ROOT.parent / "shared"))
    if not (path / "reference" / "glide_text2im").is_dir():
        pytest.skip(f"reference data not found at {path} (set GLIDE_EDU_SHARED); skipped outside CI")
    return path


@cache
def _load(kind: str) -> tuple[dict, dict]:
    folder = shared_path() / "reference" / "glide_text2im" / "fixtures" / kind
    tensors = torch.load(folder / "tensors.pt", weights_only=True)
    meta = json.loads((folder / "meta.json").read_text())
    return tensors, meta


def fixture(kind: str) -> tuple[dict, dict]:
    """(tensors, meta) of fixtures/<kind>, or skip."""
    shared_path()
    return _load(kind)


def assert_matches(actual: torch.Tensor, key: str, tensors: dict, meta: dict) -> float:
    """assert_close against the recorded tensor with its meta.json tolerances; returns the max abs error."""
    expected = tensors[key]
    info = meta["tensors"][key]
    assert actual.dtype == expected.dtype, f"{key}: dtype {actual.dtype} != {expected.dtype}"
    torch.testing.assert_close(actual, expected, rtol=info.get("rtol", 1e-5), atol=info.get("atol", 1e-5))
    return float((actual.double() - expected.double()).abs().max()) if actual.numel() else 0.0
