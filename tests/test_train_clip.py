"""The book's CLIP training: contrastive loss, noised vs clean inputs, the file format, guidance hook."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from glide_edu.nn.clip import NoisedClip
from glide_edu.shapes import load_shapes
from glide_edu.tokenizers import ByteClipTokenizer
from glide_edu.train_clip import (
    EVAL_CLIP,
    MINI_CLIP,
    ClipTrainConfig,
    clip_from_checkpoint,
    contrastive_loss,
    load_clip_file,
    retrieval_accuracy,
    train_clip,
)

TINY = replace(MINI_CLIP, n_embd=32, n_head_state_text=16, n_head_text=2, n_xf_blocks_text=1, n_head_state_image=16,
               n_head_image=2, n_xf_blocks_image=1, patch_size=8)


def test_contrastive_loss_is_log_n_at_chance_and_small_when_matched() -> None:
    z = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    assert contrastive_loss(z, z, torch.tensor(-50.0)).item() == pytest.approx(math.log(8), abs=1e-5)  # scale ≈ 0
    assert contrastive_loss(z, z, torch.tensor(math.log(100.0))).item() < 0.05
    # identical captions are not each other's negatives: duplicating row 0 as row 1 changes nothing for them
    captions = ["a", "a", *map(str, range(6))]
    zz = z.clone()
    zz[1] = zz[0]
    with_mask = contrastive_loss(zz, zz, torch.tensor(math.log(100.0)), captions)
    without = contrastive_loss(zz, zz, torch.tensor(math.log(100.0)))
    assert with_mask.item() < 0.05 < without.item()


def test_byte_clip_tokenizer_layout() -> None:
    tokens, lens = ByteClipTokenizer().tokens_and_lens(["Red  apple", ""], 16)
    assert tokens[0, :11].tolist() == [256, *b"red apple", 257] and lens.tolist() == [11, 2]
    assert tokens[0, 11:].eq(0).all() and tokens[1, :2].tolist() == [256, 257]
    with pytest.warns(UserWarning, match="only the first 2"):
        ByteClipTokenizer().tokens_and_lens("abcdef", 4)


@pytest.mark.parametrize("noised", [True, False])
def test_training_learns_and_the_file_round_trips(tmp_path: Path, noised: bool) -> None:
    data = load_shapes(64, seed=1)
    cfg = ClipTrainConfig(steps=60, batch_size=32, lr=2e-3, warmup=5, noised=noised, progress=False)
    before = NoisedClip(TINY)
    before.tokenizer = ByteClipTokenizer()
    path = train_clip(tmp_path / "c.safetensors", TINY, cfg, data.images, data.captions)
    clip = load_clip_file(path)
    assert 1 / 0.07 - 1 < clip.config.logit_scale <= 100.0  # learned from 1/0.07, capped at 100
    assert math.isclose(math.exp(clip.logit_scale), clip.config.logit_scale, rel_tol=1e-5)
    meta = json.loads(safe_open(str(path), "pt").metadata()["glide_edu"])
    assert meta["info"]["train"]["noised"] is noised and meta["tokenizer"] == "bytes"
    history = meta["info"]["history"]
    assert history[-1]["loss"] < history[0]["loss"] - 0.5, history
    assert clip.trained_on_noise is noised  # the file says how its CLIP was trained: guidance shows t = 0 if clean
    if not noised:  # clean pictures: 60 steps already pick most captions
        chance = retrieval_accuracy(before.eval(), data.images, data.captions)
        assert retrieval_accuracy(clip, data.images, data.captions) > chance + 0.3


def test_cond_fn_is_the_gradient_of_the_scaled_similarity() -> None:
    torch.manual_seed(0)
    clip = NoisedClip(TINY).eval()
    clip.tokenizer = ByteClipTokenizer()
    x, t = torch.randn(2, 3, 32, 32) * 0.5, torch.tensor([3, 700])
    g = clip.cond_fn(["a red circle", "two blue squares"], 2.0)(x, t)
    tokens, lens = clip.encode_prompts(["a red circle", "two blue squares"])
    xr = x.clone().requires_grad_(True)
    (clip.logits(clip.text_embeddings(tokens, lens), clip.image_embeddings(xr, t)).sum() * 2.0).backward()
    assert torch.allclose(g, xr.grad, atol=1e-6)


def test_a_clean_clip_is_shown_t_zero_when_guiding_and_when_scored() -> None:
    torch.manual_seed(0)
    clip = NoisedClip(TINY).eval()
    clip.tokenizer = ByteClipTokenizer()
    x, t = torch.randn(2, 3, 32, 32) * 0.5, torch.tensor([300, 700])
    as_noised, at_zero = clip.cond_fn("a red circle", 1.0)(x, t), clip.cond_fn("a red circle", 1.0)(x, 0 * t)
    assert not torch.allclose(as_noised, at_zero)  # the timestep token matters to a noised CLIP
    assert torch.equal(clip.cond_fn("a red circle", 1.0, clean=True)(x, t), at_zero)
    clip.trained_on_noise = False  # a control trained on clean pictures: t = 0 by default, everywhere
    assert torch.equal(clip.cond_fn("a red circle", 1.0)(x, t), at_zero)
    assert torch.equal(clip.cond_fn("a red circle", 1.0, clean=False)(x, t), as_noised)
    data = load_shapes(16, seed=3)
    scored = retrieval_accuracy(clip, data.images, data.captions, t=500)
    with torch.no_grad():  # the same noise (seed 0) by hand, shown t = 0
        noise = torch.randn(data.images.shape, generator=torch.Generator().manual_seed(0))
        x_t = _diffusion_of(clip).q_sample(data.images, torch.full((16,), 500), noise=noise)
        sims = clip.image_embeddings(x_t, 0) @ clip.text_embeddings(*clip.encode_prompts(data.captions)).T
    right = [data.captions[j] == data.captions[i] for i, j in enumerate(sims.argmax(1).tolist())]
    assert scored == pytest.approx(sum(right) / 16)


def _diffusion_of(clip: NoisedClip):
    from glide_edu.respace import DiffusionConfig

    return DiffusionConfig(clip.config.n_timesteps, clip.config.beta_schedule).create("")


def test_a_run_folder_checkpoint_loads_as_the_clip_of_that_step(tmp_path: Path) -> None:
    data = load_shapes(32, seed=2)
    cfg = ClipTrainConfig(steps=6, batch_size=8, lr=2e-3, warmup=2, progress=False, checkpoint_every=3, noised=False)
    final = load_clip_file(train_clip(tmp_path / "c.safetensors", TINY, cfg, data.images, data.captions,
                                      run_dir=tmp_path / "run"))
    at_end = clip_from_checkpoint(tmp_path / "run" / "ckpt-0000006")
    assert at_end.trained_on_noise is False and at_end.config == final.config
    tokens, lens = final.encode_prompts(data.captions[:4])
    with torch.no_grad():  # the file holds float16 weights, the checkpoint float32
        for a, b in ((final.image_embeddings(data.images[:4], 0), at_end.image_embeddings(data.images[:4], 0)),
                     (final.text_embeddings(tokens, lens), at_end.text_embeddings(tokens, lens))):
            assert torch.allclose(a, b, atol=2e-2) and not torch.allclose(a, b, atol=0)
    middle = clip_from_checkpoint(tmp_path / "run" / "ckpt-0000003")
    assert not torch.equal(middle.image_encoder.blocks["input"].w_pos, at_end.image_encoder.blocks["input"].w_pos)


def test_evaluator_is_another_architecture() -> None:
    a, b = NoisedClip(MINI_CLIP), NoisedClip(EVAL_CLIP)
    assert MINI_CLIP.patch_size != EVAL_CLIP.patch_size and MINI_CLIP.n_embd != EVAL_CLIP.n_embd
    assert {k: v.shape for k, v in a.state_dict().items()} != {k: v.shape for k, v in b.state_dict().items()}


def test_loading_a_non_clip_file_is_one_clear_error(tmp_path: Path) -> None:
    from glide_edu.nn.unet import UNetModel
    from glide_edu.pretrained import save_small_checkpoint
    from glide_edu.recipes import digits_configs

    unet_cfg, diffusion_cfg = digits_configs("simple")
    path = save_small_checkpoint(tmp_path / "u.safetensors", UNetModel(unet_cfg), unet_cfg, diffusion_cfg)
    with pytest.raises(ValueError, match="not a CLIP"):
        load_clip_file(path)


def test_a_stopped_clip_run_resumes_bit_for_bit(tmp_path: Path, monkeypatch) -> None:
    from safetensors.torch import load_file

    import glide_edu.train_clip as tc

    data = load_shapes(32, seed=2)
    cfg = ClipTrainConfig(steps=10, batch_size=8, lr=2e-3, warmup=3, progress=False, checkpoint_every=3)
    whole = train_clip(tmp_path / "whole.safetensors", TINY, cfg, data.images, data.captions)
    real, calls = tc.contrastive_loss, []

    def stop_at_eight(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt  # a stop in the middle of step 8: checkpoint 6 is the newest
        return real(*args, **kwargs)

    monkeypatch.setattr(tc, "contrastive_loss", stop_at_eight)
    with pytest.raises(KeyboardInterrupt):
        train_clip(tmp_path / "x.safetensors", TINY, cfg, data.images, data.captions, run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "latest").read_text() == "ckpt-0000006"
    monkeypatch.setattr(tc, "contrastive_loss", real)
    resumed = train_clip(tmp_path / "resumed.safetensors", TINY, cfg, data.images, data.captions,
                         run_dir=tmp_path / "run")
    a, b = load_file(whole), load_file(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = ClipTrainConfig(**{**cfg.__dict__, "seed": 1})
    with pytest.raises(ValueError, match="written for another CLIP or training"):
        train_clip(tmp_path / "y.safetensors", TINY, other, data.images, data.captions, run_dir=tmp_path / "run")


def test_text_encoder_drops_trailing_padding_exactly() -> None:
    """The causal text encoder only reads up to the longest caption of a batch: a short caption's features
    are the same alone (trimmed hard) as beside a caption that fills the whole context (no trimming)."""
    torch.manual_seed(0)
    clip = NoisedClip(TINY).eval()
    tok = ByteClipTokenizer()
    short = tok.tokens_and_lens(["a red circle"], TINY.max_text_len)
    full = tok.tokens_and_lens(["a red circle", "x" * (TINY.max_text_len - 2)], TINY.max_text_len)
    assert int(full[1].max()) == TINY.max_text_len
    with torch.no_grad():
        alone = clip.text_embeddings(*short)
        beside = clip.text_embeddings(*full)[:1]
    torch.testing.assert_close(alone, beside, atol=1e-6, rtol=1e-5)


def test_clip_recipes_differ_only_where_the_claims_need() -> None:
    from glide_edu.train_clip import CLIP_RECIPES

    (noised_arch, noised), (clean_arch, clean), (eval_arch, evaluator) = (
        CLIP_RECIPES["noised"], CLIP_RECIPES["clean"], CLIP_RECIPES["eval"])
    assert noised_arch == clean_arch and replace(noised, noised=False) == clean  # the control: only the noise
    assert eval_arch != noised_arch and evaluator.seed != noised.seed and not evaluator.noised
    assert evaluator.steps == noised.steps and evaluator.batch_size == noised.batch_size


def test_validation_pool_is_fixed_and_unseen() -> None:
    from glide_edu.shapes import load_shapes
    from glide_edu.train_clip import validation_pool

    images, captions = validation_pool(8, 16, train_shapes=3000)
    again, _ = validation_pool(8, 16, train_shapes=3000)
    assert images.shape == (24, 3, 32, 32) and torch.equal(images, again) and len(captions) == 24
    seen = {x.numpy().tobytes() for x in load_shapes(3000, 0, "train").images}
    assert not any(x.numpy().tobytes() in seen for x in images[8:])  # no shapes picture was trained on
    with pytest.raises(ValueError, match="unseen scenes"):
        validation_pool(0, 16, train_shapes=3000, train_seed=12345)  # the same draws: nothing is new


def test_clip_recipe_cli_trains_resumably_and_records_the_curve(tmp_path: Path) -> None:
    from glide_edu.pretrained import read_metadata
    from glide_edu.recipes import main

    main(["clip", "--kind", "eval", "--steps", "2", "--out", str(tmp_path / "e.safetensors"),
          "--run-dir", str(tmp_path / "run")])
    info = read_metadata(tmp_path / "e.safetensors")["info"]
    curve = [h for h in info["history"] if "retrieval" in h]
    assert [h["step"] for h in curve] == [2] and list(curve[0]["retrieval"]) == ["0"]
    assert 0.0 <= curve[0]["retrieval"]["0"] <= 1.0
    assert (tmp_path / "run" / "latest").exists()
    with pytest.raises(SystemExit):
        main(["clip", "--kind", "sharp", "--out", str(tmp_path / "x.safetensors")])
