"""Data parallelism on PyTorch's engine, tested with 2 CPU processes on gloo under ``torchrun``: the 2-process
run — DDP or FSDP — equals the 1-process run with the same global batch (float tolerance), and a 2-process run
stopped and resumed — also after SIGKILLs — equals an uninterrupted 2-process run bit for bit."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("ddp_worker.py")
STEPS = 10


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return env | {"OMP_NUM_THREADS": "1"}


def _run(run_dir: Path, out: Path, steps: int, nproc: int, parallel: str = "ddp") -> None:
    if nproc == 1:
        cmd = [sys.executable, str(WORKER)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(WORKER)]
    proc = subprocess.run([*cmd, str(run_dir), str(out), str(steps), parallel], env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, torch.Tensor]]:
    root = tmp_path_factory.mktemp("ddp")
    for name, nproc, parallel in (("one", 1, "ddp"), ("two", 2, "ddp"), ("fsdp", 2, "fsdp")):
        _run(root / name, root / f"{name}.safetensors", STEPS, nproc, parallel)
    out = {name: load_file(root / f"{name}.safetensors") for name in ("one", "two", "fsdp")}
    out["root"] = root  # type: ignore[assignment]
    return out


@pytest.mark.parametrize("name", ["two", "fsdp"])
def test_two_processes_equal_one_with_the_same_global_batch(runs, name) -> None:
    """Float tolerance, measured: the per-step losses agree to ~2e-7 (relative); the weights to ~1e-4, because
    Adam's step is ±lr whatever a gradient's size, so parameters with near-zero gradients (zero-initialised
    output convolutions) amplify summation-order differences. A sampler fed twice (a double gather) moves the
    losses by 0.1 and the weights by 8e-3 (measured), far outside these tolerances."""
    one, two = runs["one"], runs[name]
    assert one.keys() == two.keys()
    assert (one["sampler_history"] != 0).all(), "the loss-aware sampler never warmed up: its syncing is untested"
    torch.testing.assert_close(two["loss"], one["loss"], rtol=1e-5, atol=0)
    torch.testing.assert_close(two["sampler_history"], one["sampler_history"], rtol=1e-5, atol=1e-7)
    moved = max(float((one[k] - two[k]).abs().max()) for k in one if k.startswith(("model.", "ema.", "ema0.5.")))
    assert moved < 1e-3, f"2-process weights differ from 1-process ones by {moved}"
    assert float((one["loss"][0] - one["loss"][-1]).abs()) > 0.01  # it trained: the losses are not all alike


def test_two_process_stop_and_resume_is_bit_identical(runs) -> None:
    root: Path = runs["root"]  # type: ignore[assignment]
    _run(root / "resumed", root / "part.safetensors", 7, 2)  # stops at 7 (not a multiple of 3): saved at the end
    assert (root / "resumed" / "ckpt-0000007").is_dir()
    _run(root / "resumed", root / "resumed.safetensors", STEPS, 2)
    resumed = load_file(root / "resumed.safetensors")
    for key, value in runs["two"].items():
        if key != "loss":  # the resumed run's history starts at step 18
            assert torch.equal(resumed[key], value), key
    # rank 1's module RNG was saved with the checkpoint and restored (not reseeded)
    state = torch.load(root / "resumed" / f"ckpt-{STEPS:07d}" / "optimizer.pt", weights_only=True)
    assert state["torch_rng_ranks"].shape[0] == 2 and not torch.equal(*state["torch_rng_ranks"])


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_two_process_sigkills_then_resume_is_bit_identical(runs) -> None:
    root: Path = runs["root"]  # type: ignore[assignment]
    run_dir = root / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
           str(run_dir), str(root / "killed.safetensors"), str(STEPS)]
    rng = random.Random(7)
    cut_short = 0
    for _ in range(3):  # kill the launcher and both ranks at once, at a random moment after a new checkpoint
        before = set(run_dir.glob("ckpt-*"))
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.monotonic() + 120
        while set(run_dir.glob("ckpt-*")) <= before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        cut_short += not (run_dir / f"ckpt-{STEPS:07d}").exists()
    assert cut_short >= 2, "the runs finished before the kills: the test did not interrupt them"
    _run(run_dir, root / "killed.safetensors", STEPS, 2)
    killed = load_file(root / "killed.safetensors")
    for key, value in runs["two"].items():
        if key != "loss":
            assert torch.equal(killed[key], value), key


def test_fsdp_stop_and_resume_is_bit_identical_and_checkpoints_move_between_modes(runs) -> None:
    root: Path = runs["root"]  # type: ignore[assignment]
    _run(root / "fsdp_resumed", root / "fpart.safetensors", 7, 2, "fsdp")
    _run(root / "fsdp_resumed", root / "fsdp_resumed.safetensors", STEPS, 2, "fsdp")
    resumed = load_file(root / "fsdp_resumed.safetensors")
    for key, value in runs["fsdp"].items():
        if key != "loss":
            assert torch.equal(resumed[key], value), key
    # a checkpoint written by FSDP (gathered, one-process format) resumes under DDP, and the other way round
    _run(root / "fsdp_resumed", root / "as_ddp.safetensors", STEPS + 2, 2, "ddp")
    _run(root / "resumed", root / "as_fsdp.safetensors", STEPS + 2, 2, "fsdp")
    a, b = load_file(root / "as_ddp.safetensors"), load_file(root / "as_fsdp.safetensors")
    moved = max(float((a[k] - b[k]).abs().max()) for k in a if k.startswith("model."))
    assert moved < 1e-3
