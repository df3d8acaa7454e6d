"""benchmarks/gpu_train.py runs as-is (here on a CPU with the miniature): rows per precision and batch, the
FLOP count, and a memory estimate whose arithmetic holds (checkpointing keeps fewer activations)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_train.py"


def _run(*args: str) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_throughput_rows_and_flops(tmp_path) -> None:
    out = tmp_path / "g.json"
    _run("--device", "cpu", "--steps", "1", "--warmup", "0", "--batch-sizes", "2", "4", "--precision", "fp32",
         "--out", str(out))
    result = json.loads(out.read_text())
    assert [(r["precision"], r["batch"]) for r in result["rows"]] == [("fp32", 2), ("fp32", 4)]
    assert all(r["images_per_s"] > 0 and r["world_size"] == 1 for r in result["rows"])
    # forward + backward ≈ 3 × forward ≈ 6 FLOPs per parameter-use; the UNet reuses weights over pixels
    assert result["train_flops_per_image"] > 6 * result["parameters"]


def test_memory_estimate(tmp_path) -> None:
    _run("--estimate-memory", "--batch-sizes", "8", "--out", str(tmp_path / "g.json"))
    result = json.loads((tmp_path / "g_memory.json").read_text())
    assert result["static_gib"] == round(16 * result["parameters"] / 2**30, 2)
    rows = {(r["precision"], r["grad_checkpointing"]): r for r in result["rows"]}
    for precision in ("fp32", "bf16"):
        plain, ckpt = rows[(precision, False)], rows[(precision, True)]
        assert ckpt["activations_gib_per_image"] < plain["activations_gib_per_image"] / 2
        assert plain["estimated_peak_gib"]["8"] >= result["static_gib"]
