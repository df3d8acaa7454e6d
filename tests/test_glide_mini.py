"""GLIDE in miniature: captioned data, the text trainer, the small GLIDE file format, pipeline and CLI."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from glide_edu.captions import book_captions, tokenize_captions, with_article
from glide_edu.fileio import sha256_file
from glide_edu.nn.presets import create_glide_model
from glide_edu.pretrained import load_glide_checkpoint, save_glide_checkpoint
from glide_edu.respace import DiffusionConfig
from glide_edu.train import TrainConfig
from glide_edu.train_text import MINI_OPTIONS, MINI_TRAIN, TextTrainer, tokenizer_for, train_mini

SMALL = {**MINI_OPTIONS, "num_channels": 32, "num_head_channels": 32, "num_res_blocks": 1, "xf_width": 32,
         "xf_layers": 1}


@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> Path:
    """A miniature-format file trained for 3 steps (structure, not quality)."""
    folder = tmp_path_factory.mktemp("mini")
    cfg = replace(MINI_TRAIN, batch_size=4, checkpoint_every=0)
    return train_mini(folder / "mini.safetensors", steps=3, n_shapes=64, options=SMALL, config=cfg, progress=False)


def test_captions_mix_both_sources_with_both_phrasings() -> None:
    data = book_captions("train", n_shapes=100, seed=0)
    n_emoji = data.source.count("emoji")
    assert data.images.shape == (len(data.captions), 3, 32, 32) and data.source.count("shapes") == 100
    assert "red apple" in data.captions and "a red apple" in data.captions and "an octopus" in data.captions
    emoji_mass = float(data.weights[:n_emoji].sum())
    assert emoji_mass == pytest.approx(0.5) and float(data.weights.sum()) == pytest.approx(1.0)
    assert with_article("eagle") == "an eagle" and with_article("dog") == "a dog"
    held = book_captions("heldout", n_shapes=10, seed=0)
    assert not set(held.captions[: held.source.count("emoji")]) & set(data.captions)


def test_every_caption_fits_the_miniature_context_unclipped() -> None:
    data = book_captions("train", n_shapes=500)
    tokens, mask = tokenize_captions(tokenizer_for(MINI_OPTIONS), data.captions, MINI_OPTIONS["text_ctx"])
    lengths = mask.sum(1)
    assert int(lengths.max()) <= MINI_OPTIONS["text_ctx"] and int(lengths.min()) > 0
    assert tokenizer_for(MINI_OPTIONS).decode(tokens[0, : lengths[0]].tolist()) == data.captions[0].lower()
    with pytest.raises(ValueError, match="longer than text_ctx=6 tokens"):
        tokenize_captions(tokenizer_for(MINI_OPTIONS), ["a small red circle above a blue square"], 6)


def _trainer(p_uncond: float, **kw) -> TextTrainer:
    torch.manual_seed(0)
    model = create_glide_model(SMALL)
    tok = tokenizer_for(SMALL)
    captions = ["a red circle", "two blue squares", "red apple", "a yellow triangle"]
    tokens, mask = tok.tokens_and_mask(captions, SMALL["text_ctx"])
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    diffusion = DiffusionConfig(1000, "squaredcos_cap_v2").create("")
    cfg = TrainConfig(steps=2, batch_size=256, progress=False, loss_type="hybrid")
    return TextTrainer(model, diffusion, images, tokens, mask, cfg, p_uncond=p_uncond, **kw)


def test_caption_dropout_rate_and_the_empty_caption() -> None:
    trainer = _trainer(0.2)
    _, kwargs = trainer.batch()
    empty = ~kwargs["mask"].any(1)
    assert 0.12 < float(empty.float().mean()) < 0.28  # 256 draws of p = 0.2
    assert (kwargs["tokens"][empty] == trainer.empty_token).all()
    assert trainer.empty_token == tokenizer_for(SMALL).end_token  # GLIDE pads with the end token
    assert not (~_trainer(0.0).batch()[1]["mask"].any(1)).any()


def test_weights_steer_which_examples_are_drawn() -> None:
    trainer = _trainer(0.0, weights=torch.tensor([1.0, 0.0, 0.0, 0.0]))
    _, kwargs = trainer.batch()
    assert (kwargs["tokens"] == trainer.tokens[0]).all()


@pytest.mark.parametrize("kw, message", [
    ({"p_uncond": 1.0}, "give a probability in"),
    ({"weights": torch.zeros(4)}, "positive sum"),
])
def test_bad_trainer_options(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _trainer(**{"p_uncond": 0.2, **kw})


def test_glide_file_round_trip_is_strict_and_exact(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = create_glide_model(SMALL).eval()
    path = save_glide_checkpoint(tmp_path / "g.safetensors", net, SMALL, "base", {"note": 1}, dtype=torch.float32)
    loaded, options, meta = load_glide_checkpoint(path)
    assert options == SMALL and meta["kind"] == "glide-base" and meta["info"] == {"note": 1}
    assert type(loaded) is type(net)
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_training_writes_a_resumable_run_and_snapshots(tmp_path: Path) -> None:
    cfg = replace(MINI_TRAIN, batch_size=4, checkpoint_every=2)
    run = tmp_path / "run"
    first = train_mini(tmp_path / "a.safetensors", run, steps=2, n_shapes=32, snapshot_every=2, options=SMALL,
                       config=cfg, progress=False)
    assert (run / "snapshots" / "ema-step-0000002.safetensors").is_file()
    again = train_mini(tmp_path / "b.safetensors", run, steps=4, n_shapes=32, options=SMALL, config=cfg,
                       progress=False)
    assert load_glide_checkpoint(first)[2]["info"]["steps"] == 2
    assert load_glide_checkpoint(again)[2]["info"]["steps"] == 4


def test_warm_start_continues_weights_and_step_numbering(small_file: Path, tmp_path: Path) -> None:
    cfg = replace(MINI_TRAIN, batch_size=4, checkpoint_every=0)
    start = load_glide_checkpoint(small_file)[0].state_dict()
    # zero further steps' worth: the continuation's target equals the file's step, so it only re-saves
    same = train_mini(tmp_path / "same.safetensors", steps=3, n_shapes=64, options=SMALL, config=cfg,
                      progress=False, init_from=small_file)
    for key, value in load_glide_checkpoint(same)[0].state_dict().items():
        assert torch.equal(value, start[key]), key  # float16 → float32 → float16 is exact
    run = tmp_path / "run"
    more = train_mini(tmp_path / "more.safetensors", run, steps=5, n_shapes=64, snapshot_every=1, options=SMALL,
                      config=cfg, progress=False, init_from=small_file)
    meta = load_glide_checkpoint(more)[2]["info"]
    assert meta["steps"] == 5 and meta["warm_start"] == {"file": small_file.name, "step": 3,
                                                         "sha256": sha256_file(small_file)}
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == [
        "ema-step-0000004.safetensors", "ema-step-0000005.safetensors"]
    changed = load_glide_checkpoint(more)[0].state_dict()
    assert any(not torch.equal(changed[k], start[k]) for k in start)


def test_warm_start_from_other_options_is_refused(small_file: Path, tmp_path: Path) -> None:
    cfg = replace(MINI_TRAIN, batch_size=4, checkpoint_every=0)
    other = {**SMALL, "xf_layers": 2}
    with pytest.raises(ValueError, match="other options \\(xf_layers\\)"):
        train_mini(tmp_path / "x.safetensors", steps=4, n_shapes=64, options=other, config=cfg, progress=False,
                   init_from=small_file)


def test_the_pipeline_runs_the_miniature_with_cfg(small_file: Path) -> None:
    from glide_edu.pipelines.mini import load_mini_model, mini_text2im

    model = load_mini_model(small_file)
    assert model.kind == "base" and model.image_size == 32 and model.text_ctx == SMALL["text_ctx"]
    pipe = mini_text2im(small_file)
    out = pipe("a red apple", batch_size=2, guidance_scale=3.0, num_inference_steps=4, seed=0, upsample=False)
    again = pipe("a red apple", batch_size=2, guidance_scale=3.0, num_inference_steps=4, seed=0, upsample=False)
    assert out.images[0].size == (32, 32) and len(out.images) == 2
    assert torch.equal(out.samples, again.samples)


def test_cli_samples_with_the_miniature(small_file: Path, tmp_path: Path, capsys) -> None:
    from glide_edu import cli

    out = tmp_path / "apple.png"
    argv = ["sample", "--model", "mini", "--model-file", str(small_file), "a red apple", "--steps", "4",
            "--batch-size", "2", "--seed", "0", "--out", str(out), "--quiet", "--device", "cpu"]
    assert cli.main(argv) == 0
    from PIL import Image

    assert Image.open(out).size == (64, 32)
    missing = [*argv[:4], str(tmp_path / "nope.safetensors"), *argv[5:]]
    with pytest.raises(SystemExit):
        cli.main(missing)
    assert "does not exist" in capsys.readouterr().err


def test_cli_precision_spelling_and_exclusivity(small_file: Path, tmp_path: Path, capsys) -> None:
    from glide_edu import cli

    base = ["sample", "--model", "mini", "--model-file", str(small_file), "a red apple", "--steps", "2",
            "--seed", "0", "--quiet", "--device", "cpu"]
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert cli.main([*base, "--precision", "bf16", "--out", str(a)]) == 0
    assert cli.main([*base, "--bf16", "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()  # the two spellings run the same thing
    with pytest.raises(SystemExit):
        cli.main([*base, "--precision", "fp32", "--bf16"])
    assert "not allowed with" in capsys.readouterr().err


def test_bf16_sample_is_within_35_db_of_fp32_from_the_same_noise() -> None:
    """``--precision bf16`` (bfloat16 autocast) changes the picture only by rounding: PSNR ≥ 35 dB against
    float32 from the same seed, on the shipped miniature (the issue's bar for the full pipeline), at 50 steps for
    two seeds. Ancestral sampling amplifies rounding chaotically: with 10 steps the same comparison gives 32–39 dB
    depending on seed and checkpoint (docs/benchmarks.md), so a few-step, one-seed check says more about the
    seed than about bf16."""
    from glide_edu.pipelines.mini import mini_text2im

    pipe = mini_text2im()
    for seed in (0, 1):
        kw = {"batch_size": 2, "guidance_scale": 3.0, "num_inference_steps": 50, "seed": seed, "upsample": False}
        fp32 = pipe(["a red circle", "red apple"], **kw).samples
        bf16 = pipe(["a red circle", "red apple"], bf16=True, **kw).samples
        mse = (((fp32 - bf16) * 127.5) ** 2).mean()
        psnr = 10 * torch.log10(255.0**2 / mse.clamp_min(1e-12))
        assert psnr >= 35.0, f"bf16 vs fp32, seed {seed}: PSNR {psnr:.1f} dB"
        assert not torch.equal(fp32, bf16)  # bf16 really ran


def test_unknown_tokenizer_name_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown tokenizer 'words'"):
        tokenizer_for({"tokenizer": "words"})


def test_cli_without_the_miniature_file_is_one_line_error(monkeypatch, tmp_path: Path, capsys) -> None:
    from glide_edu import cli
    from glide_edu.pipelines import mini

    monkeypatch.setattr(mini, "MINI_CHECKPOINT", "no_such_model")
    code = cli.main(["sample", "--model", "mini", "a red apple", "--out", str(tmp_path / "x.png"), "--quiet",
                     "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "no shipped checkpoint 'no_such_model'" in err


def test_zero_steps_is_refused_not_the_default(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"steps=0 \(need ≥ 1\)"):
        train_mini(tmp_path / "x.safetensors", steps=0, n_shapes=8, options=SMALL, progress=False)
    assert not (tmp_path / "x.safetensors").exists()


def test_training_writes_the_data_mean_for_the_samplers_prior(small_file: Path, tmp_path: Path) -> None:
    from glide_edu.pipelines.mini import load_mini_model
    from glide_edu.prior import data_mean

    data = book_captions("train", 64, 0)
    expected = [round(v, 4) for v in data_mean(data.images, data.weights)]
    options = load_glide_checkpoint(small_file)[1]
    assert options["x0_prior_mean"] == expected and options["x0_prior_mean"][0] > 0.5  # pictures on white
    assert load_mini_model(small_file).x0_prior_mean == tuple(expected)
    # a file written before the prior existed still warm-starts a run (the prior is the sampler's, not the network's)
    network, options, _ = load_glide_checkpoint(small_file)
    old = save_glide_checkpoint(tmp_path / "old.safetensors", network, {k: v for k, v in options.items()
                                                                        if k != "x0_prior_mean"}, "base", {"step": 3})
    cfg = replace(MINI_TRAIN, batch_size=4, checkpoint_every=0)
    again = train_mini(tmp_path / "again.safetensors", steps=3, n_shapes=64, options=SMALL, config=cfg,
                       progress=False, init_from=old)
    assert load_glide_checkpoint(again)[1]["x0_prior_mean"] == expected


def test_the_prior_keeps_the_shipped_miniatures_samples_near_the_data_mean() -> None:
    """Without the data-mean x̂₀ at the top, the miniature's samples average near 0 (colour fields); with it,
    near the mean of its white-background training pictures (glide_edu.prior)."""
    from glide_edu.pipelines.mini import mini_text2im
    from glide_edu.prior import data_mean

    data = book_captions("train", 2000, 0)
    mu = torch.tensor(data_mean(data.images, data.weights))
    pipe = mini_text2im()
    prompts = ["a large red circle", "two green squares", "a small blue triangle on the left", "a yellow square"]
    kw = {"batch_size": 1, "guidance_scale": 3.0, "num_inference_steps": 25, "seed": 0, "upsample": False}
    gaps = {}
    for prior in (True, False):
        pipe.base = replace(pipe.base, x0_prior_mean=tuple(mu.tolist()) if prior else None)
        samples = pipe(prompts, **kw).samples  # (4, 3, 32, 32)
        gaps[prior] = float((samples.mean(dim=(0, 2, 3)) - mu).abs().mean())
    assert gaps[True] < 0.5 * gaps[False], gaps


def test_training_grids_sample_with_the_prior() -> None:
    from glide_edu.train_text import text_trainer

    data = book_captions("train", 16, 0)
    cfg = replace(MINI_TRAIN, batch_size=4, checkpoint_every=0, progress=False)
    trainer = text_trainer(SMALL, data.images, data.captions, cfg, weights=data.weights)
    net = trainer.ema_model.eval()
    fn = trainer.grid_model(net)
    x, kw = torch.randn(2, 3, 32, 32), trainer.grid_kwargs(2)
    with torch.no_grad():
        top = trainer.diffusion.p_mean_variance(fn, x, torch.tensor([990, 990]), clip_denoised=False, model_kwargs=kw)
        low_plain, low = net(x, torch.tensor([10, 10]), **kw), fn(x, torch.tensor([10, 10]), **kw)
    mu = torch.tensor(trainer.options["x0_prior_mean"]).view(1, 3, 1, 1)
    assert torch.allclose(top["pred_xstart"], mu.expand(2, -1, 32, 32), atol=1e-3)
    assert torch.equal(low, low_plain)
