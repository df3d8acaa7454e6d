"""Precomputed results and widget views: schema and shipped-checkpoint checks, 8-bit view storage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glide_edu.fileio import assets_dir
from glide_edu.results import (
    StaleResultsError,
    checkpoint_provenance,
    kept_rows,
    load_image_views,
    load_results,
    save_image_views,
    write_results,
)

SHIPPED = assets_dir() / "checkpoints" / "digits_simple.safetensors"


def test_views_round_trip_at_8_bits(tmp_path: Path) -> None:
    images = torch.rand(3, 2, 1, 4, 4) * 2 - 1  # (V, n, C, H, W)
    keys = [{"digit": i, "readout": 0.5 * i} for i in range(3)]
    path = save_image_views(tmp_path / "v.safetensors", keys, images, "test/1",
                            {"checkpoints": {"m": checkpoint_provenance(SHIPPED)}})
    got_keys, got, provenance = load_image_views(path, "test/1", "make views")
    assert got_keys == keys and got.shape == images.shape
    assert (got - images).abs().max() <= 0.5 / 127.5 + 1e-6
    assert provenance["checkpoints"]["m"]["file"].endswith("digits_simple.safetensors")


def test_views_are_refused_when_missing_of_another_schema_or_stale(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make them with: make views"):
        load_image_views(tmp_path / "none.safetensors", "test/1", "make views")
    images = torch.zeros(1, 1, 1, 2, 2)
    path = save_image_views(tmp_path / "v.safetensors", [{}], images, "test/1", {})
    with pytest.raises(StaleResultsError, match="expected 'test/2'; regenerate it with: make views"):
        load_image_views(path, "test/2", "make views")
    stale = {"checkpoints": {"m": {"file": "data/checkpoints/digits_simple.safetensors", "sha256": "0" * 64}}}
    path = save_image_views(tmp_path / "s.safetensors", [{}], images, "test/1", stale)
    with pytest.raises(StaleResultsError, match="another digits_simple.safetensors"):
        load_image_views(path, "test/1", "make views")
    assert load_image_views(path, "test/1", "make views", check_checkpoints=False)[0] == [{}]
    with pytest.raises(ValueError, match="one view per key"):
        save_image_views(tmp_path / "bad.safetensors", [{}, {}], images, "test/1", {})


def test_json_results_share_the_checkpoint_check(tmp_path: Path) -> None:
    stale = {"checkpoints": {"m": {"file": "data/checkpoints/digits_simple.safetensors", "sha256": "0" * 64}}}
    path = write_results({"schema": "s/1", "provenance": stale}, tmp_path / "r.json")
    with pytest.raises(StaleResultsError, match="regenerate it with: again"):
        load_results(path, "s/1", "again")
    fresh = {"checkpoints": {"m": checkpoint_provenance(SHIPPED)}}
    assert load_results(write_results({"schema": "s/1", "provenance": fresh}, path), "s/1", "again")["schema"] == "s/1"


def test_an_earlier_result_is_extended_only_with_the_same_settings() -> None:
    earlier = {"config": {"n": 60, "seeds": [0, 1], "every": 1000, "note": "to 9000"}, "rows": [{"step": 1000}]}
    assert kept_rows(None, {"n": 60}) == []
    assert kept_rows(earlier, {"n": 60, "seeds": [0, 1], "every": 3000}) == [{"step": 1000}]  # spacing, remark free
    for config in ({"n": 100, "seeds": [0, 1]}, {"n": 60, "seeds": [0]}, {"n": 60, "seeds": [0, 1], "steps": 25},
                   {"n": 60}):
        with pytest.raises(ValueError, match="measure it anew"):
            kept_rows(earlier, config)
