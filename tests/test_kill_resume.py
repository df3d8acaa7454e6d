"""SIGKILL a training run at 20+ random moments, resume it each time: the end state equals an uninterrupted
run's bit for bit (one process, CPU, deterministic) — weights, EMA, optimiser and RNG."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glide_edu.nn.unet import UNetConfig, UNetModel
from glide_edu.respace import create_diffusion
from glide_edu.train import TrainConfig, Trainer

STEPS = 40
STUCK = 3  # kills in a row that found no new checkpoint: the next child runs until it writes one, then is killed
WRITE_TIMEOUT = 180.0  # seconds a child gets to write one checkpoint before the test calls it hung


def _child(run_dir: str, conn) -> None:  # runs in a forked process (imports already done by the parent)
    import faulthandler
    import sys

    faulthandler.dump_traceback_later(WRITE_TIMEOUT - 30, exit=False, file=sys.stderr)  # a stall shows where it is
    torch.set_num_threads(1)
    cfg = UNetConfig(image_size=16, in_channels=1, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                     attention_resolutions=(8,), dropout=0.1, learn_sigma=True)
    torch.manual_seed(0)
    images = torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    model = UNetModel(cfg)
    diffusion = create_diffusion(100, "cosine", model_var_type="learned_range")
    config = TrainConfig(steps=STEPS, batch_size=4, progress=False, log_every=1, checkpoint_every=1,
                         keep_checkpoints=2, loss_type="hybrid", schedule_sampler="loss-second-moment",
                         ema_warmup=True)
    trainer = Trainer(model, diffusion, images, config, run_dir=run_dir, model_config={"unet": asdict(cfg)},
                      diffusion_config={"steps": 100})
    conn.send(trainer.step)
    trainer.train()


def _start(run_dir: Path):
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # its first use imports torch._dynamo (~2 s): once, here
    ctx = multiprocessing.get_context("fork")  # no interpreter start-up: a kill every few hundred ms is cheap
    parent, child_end = ctx.Pipe()
    process = ctx.Process(target=_child, args=(str(run_dir), child_end))
    process.start()
    return process, parent


def _newest_step(run_dir: Path) -> int:
    """The step ``latest`` points at (-1 before the first checkpoint); the pointer is replaced last, atomically."""
    pointer = run_dir / "latest"
    try:
        return int(pointer.read_text().strip().split("-")[1])
    except FileNotFoundError:
        return -1


def _wait_for_checkpoint_after(run_dir: Path, step: int, process) -> None:
    """Block until the child writes a checkpoint newer than ``step`` (or fail, naming the stall)."""
    deadline = time.monotonic() + WRITE_TIMEOUT
    while _newest_step(run_dir) <= step:
        assert process.is_alive() or process.exitcode == 0, f"the child died (exit code {process.exitcode})"
        if not process.is_alive():
            return
        assert time.monotonic() < deadline, (
            f"the child wrote no checkpoint after step {step} in {WRITE_TIMEOUT:.0f} s: a hung child (its stack is "
            "on stderr), not a slow one")
        time.sleep(0.05)


def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    folder = run_dir / f"ckpt-{STEPS:07d}"
    state = torch.load(folder / "optimizer.pt", weights_only=True)
    flat = {f"model.{k}": v for k, v in load_file(folder / "model.safetensors").items()}
    flat |= {f"ema.{k}": v for k, v in load_file(folder / "ema.safetensors").items()}
    flat |= {f"adam.{i}.{k}": v for i, s in state["optimizer"]["state"].items() for k, v in s.items()}
    flat |= {"torch_rng": state["torch_rng"], "generator": state["generator"],
             "sampler_history": state["sampler_history"], "ema_n": state["ema_n_averaged"]}
    return flat


@pytest.mark.filterwarnings("ignore:removed .* half-written checkpoint:UserWarning")
@pytest.mark.filterwarnings("ignore:.*newest intact checkpoint:UserWarning")
def test_twenty_random_sigkills_leave_the_run_bit_identical(tmp_path: Path) -> None:
    reference = tmp_path / "uninterrupted"
    process, _ = _start(reference)
    process.join(timeout=600)
    assert process.exitcode == 0
    killed = tmp_path / "killed"
    rng = random.Random(12345)
    kills, resumed_from, stuck = 0, [], 0
    while True:
        process, conn = _start(killed)
        assert conn.poll(120), "the child never became ready"
        resumed_from.append(conn.recv())  # the step it resumed from (checkpoint loaded)
        if kills >= 20 and resumed_from[-1] >= STEPS - 5:
            process.join(timeout=600)  # let the last stretch finish
            assert process.exitcode == 0
            break
        # On a loaded machine the first step and save of a fresh child can outlast the kill window; then every
        # kill lands before a checkpoint and the run never advances. After STUCK such kills in a row, the next
        # child first writes one checkpoint (bounded wait), so the loop always ends.
        if stuck >= STUCK:
            _wait_for_checkpoint_after(killed, resumed_from[-1], process)
        time.sleep(rng.uniform(0.0, 0.4))  # a few training steps: inside a step, a save, a rename, the pointer…
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.join(timeout=60)
        if process.exitcode == 0:
            break
        stuck = stuck + 1 if _newest_step(killed) <= resumed_from[-1] else 0
    assert kills >= 20, f"only {kills} kills"
    assert len(set(resumed_from)) > 5  # the kills fell at many different steps
    assert not list(killed.glob(".ckpt-*"))  # leftovers were cleaned on each start
    want, got = _final_state(reference), _final_state(killed)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
