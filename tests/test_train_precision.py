"""The trainer's devices and numerics: bf16 / fp16 autocast with float32 master weights and loss maths, fp16
dynamic loss scaling that skips an overflowing step, micro-batches that add up to the batch, the lr schedule,
gradient checkpointing that really recomputes, and clear errors for impossible settings."""

from __future__ import annotations

import copy
from dataclasses import asdict

import pytest
import torch

from glide_edu.nn.unet import UNetConfig, UNetModel
from glide_edu.respace import create_diffusion
from glide_edu.train import TrainConfig, Trainer
from glide_edu.train_config import lr_at, resolve_training_device

CFG = UNetConfig(image_size=16, in_channels=1, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                 attention_resolutions=(8,), learn_sigma=True, dropout=0.0)


def _trainer(tmp_path=None, model=None, **options) -> Trainer:
    torch.manual_seed(0)
    images = torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    config = TrainConfig(**({"steps": 3, "batch_size": 8, "progress": False, "log_every": 1,
                             "loss_type": "hybrid"} | options))
    return Trainer(model or UNetModel(CFG), create_diffusion(100, "cosine", model_var_type="learned_range"), images,
                   config, run_dir=tmp_path, model_config={"unet": asdict(CFG)})


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_keeps_float32_weights_and_tracks_the_fp32_loss(precision) -> None:
    ref, low = _trainer(), _trainer(precision=precision)
    for _ in range(2):  # (step 1's output is exactly 0 in any precision: the output convolution starts at zero)
        a, b = ref.train_step(), low.train_step()
    assert all(p.dtype == torch.float32 for p in low.model.parameters())  # master weights
    assert abs(b["loss"] - a["loss"]) / a["loss"] < 0.02, (a, b)  # same batch: the loss within 2 %
    assert b["loss"] != a["loss"]  # it did run in reduced precision
    seen = {}
    low.model.input_blocks[1].register_forward_hook(lambda m, i, o: seen.update(dtype=o.dtype))
    low.train_step()
    assert seen["dtype"] == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def test_fp16_overflow_skips_the_step_and_halves_the_scale(tmp_path) -> None:
    trainer = _trainer(tmp_path, precision="fp16", checkpoint_every=1)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)  # scaled gradients overflow float32
    before, ema_before = _weights(trainer), copy.deepcopy(trainer.ema_model.state_dict())
    logs = trainer.train_step()
    assert logs["skipped"] == 1.0 and trainer.scaler.get_scale() == 2.0**99 and trainer.skipped_steps == 1
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert all(torch.equal(ema_before[k], v) for k, v in trainer.ema_model.state_dict().items())
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    logs = trainer.train_step()
    assert "skipped" not in logs and trainer.skipped_steps == 0
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    trainer.save()  # the loss scale is resumed with the run
    trainer.lock.release()
    resumed = _trainer(tmp_path, precision="fp16", checkpoint_every=1)
    assert resumed.scaler.get_scale() == trainer.scaler.get_scale() and resumed.step == trainer.step


def test_micro_batches_add_up_to_the_batch() -> None:
    whole, parts = _trainer(), _trainer(micro_batch=3)  # 8 = 3 + 3 + 2: uneven chunks too
    a, b = whole.train_step(), parts.train_step()
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-6) and b["mse"] == pytest.approx(a["mse"], rel=1e-6)
    for (name, p), q in zip(whole.model.named_parameters(), parts.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-6, msg=name)


def test_lr_warm_up_and_anneal() -> None:
    cfg = TrainConfig(lr=1e-3, warmup_steps=4, lr_anneal_steps=10)
    expected = [2.5e-4, 4.5e-4, 7e-4, 5e-4, 0.0, 0.0]  # warm-up × anneal
    assert [round(lr_at(cfg, s), 6) for s in (0, 1, 3, 5, 10, 12)] == expected
    assert lr_at(TrainConfig(lr=3e-4), 1000) == 3e-4
    trainer = _trainer(lr=1e-3, warmup_steps=4)
    trainer.train_step()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(2.5e-4)


def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients() -> None:
    cfg = UNetConfig(**{**asdict(CFG), "dropout": 0.1})
    plain, ckpt = UNetModel(cfg), UNetModel(cfg)
    ckpt.load_state_dict(plain.state_dict())
    ckpt.enable_gradient_checkpointing()
    calls = {"plain": 0, "ckpt": 0}  # pre-hooks: a recomputation stops early, before a forward hook would fire
    plain.input_blocks[1].register_forward_pre_hook(lambda *a: calls.__setitem__("plain", calls["plain"] + 1))
    ckpt.input_blocks[1].register_forward_pre_hook(lambda *a: calls.__setitem__("ckpt", calls["ckpt"] + 1))
    x, t = torch.randn(4, 1, 16, 16), torch.randint(0, 100, (4,))
    for model in (plain, ckpt):
        torch.manual_seed(3)  # the same dropout masks, and checkpointing replays them in the recomputation
        model(x, t).pow(2).mean().backward()
    assert calls == {"plain": 1, "ckpt": 2}  # the block ran again in the backward pass
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)
    with torch.no_grad():
        ckpt(x, t)
    assert calls["ckpt"] == 3  # no recomputation outside training
    trainer = _trainer(grad_checkpointing=True)
    assert trainer.model.gradient_checkpointing


@pytest.mark.parametrize("options, message", [
    ({"precision": "fp8"}, "precision='fp8' (choose one of fp32, bf16, fp16)"),
    ({"micro_batch": -1}, "micro_batch=-1"),
    ({"warmup_steps": -5}, "warmup_steps=-5"),
    ({"device": "gpu0"}, "device='gpu0' (use auto, cpu, cuda, cuda:N or mps)"),
])
def test_impossible_settings_are_refused_up_front(options, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**options).validate()


def test_devices() -> None:
    assert resolve_training_device("cpu") == torch.device("cpu")
    auto = resolve_training_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="sees no CUDA GPU; use device='auto' or 'cpu'"):
            resolve_training_device("cuda")
