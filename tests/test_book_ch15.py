"""Chapter 15's helpers: the memory arithmetic, the per-GPU split and the config table read from the TOML files."""

from __future__ import annotations

import pytest

from glide_edu.book import ch15 as cx
from glide_edu.train_run import read_config


def test_training_memory_counts_bytes_per_parameter() -> None:
    assert sum(cx.training_memory(1).values()) == 20  # weights, grads, Adam m and v, one EMA: 4 bytes each
    assert sum(cx.training_memory(1, emas=3).values()) == 28
    assert sum(cx.training_memory(1, "fp16-weights").values()) == 24  # + fp16 weights and grads, fp32 masters
    assert cx.training_memory(10, "fp16-weights")["master weights"] == 40
    with pytest.raises(ValueError, match="scheme"):
        cx.training_memory(1, "int8")


def test_per_gpu_bytes_replicates_or_shards() -> None:
    parts = cx.training_memory(3.5e9)
    assert cx.per_gpu_bytes(parts, 8, "ddp") == 70e9
    assert cx.per_gpu_bytes(parts, 8, "fsdp") == 8.75e9
    assert cx.per_gpu_bytes({"w": 10}, 3, "fsdp") == 4  # the largest shard
    with pytest.raises(ValueError, match="ddp or fsdp"):
        cx.per_gpu_bytes(parts, 8, "pipeline")


def test_config_rows_come_from_the_files_and_count_on_the_meta_device() -> None:
    rows = {r["config"]: r for r in cx.config_rows(["digits-hybrid", "glide-base", "glide-upsample"])}
    assert rows["glide-base"]["params"] == 385_030_726 and rows["glide-upsample"]["params"] == 398_361_286
    assert rows["glide-base"]["mult"] == "1,2,3,4" and rows["glide-upsample"]["mult"] == "1,1,2,2,4,4"
    assert rows["glide-upsample"]["image"] == "256×256 (from 64)"
    digits = read_config("digits-hybrid")
    assert rows["digits-hybrid"]["params"] == 2_005_730
    assert rows["digits-hybrid"]["batch"] == digits["train"]["batch_size"]
    with pytest.raises(ValueError, match="unet and glide"):
        cx.count_parameters({"kind": "clip", "model": {}})
