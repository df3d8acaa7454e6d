"""The ``glide-edu`` command line, run for real on tiny official-format checkpoint files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glide_edu.cli import main
from glide_edu.pipelines.tiny import tiny_clip, tiny_glide_model, tiny_registry
from glide_edu.tokenizers import byte_level_tokenizer

QUICK = ["--steps", "3", "--upsample-steps", "2", "--seed", "0", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The six official file names, each holding a tiny model's plain state dict (torch.save)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    registry = tiny_registry()
    for name in ("base", "upsample", "base-inpaint", "upsample-inpaint"):
        torch.save(tiny_glide_model(name).network.state_dict(), folder / registry[name].file)
    clip = tiny_clip()
    torch.save(clip.image_encoder.state_dict(), folder / registry["clip/image-enc"].file)
    torch.save(clip.text_encoder.state_dict(), folder / registry["clip/text-enc"].file)
    return folder


def _run(args: list[str], **hooks) -> int:
    return main(args, registry=hooks.pop("registry", tiny_registry()), **hooks)


def test_sample_writes_a_png_with_the_real_tokenizer(checkpoint_dir: Path, tmp_path: Path, capsys) -> None:
    from tests.reference_data import shared_path

    vocab_dir = shared_path() / "reference" / "glide_text2im" / "vocab"
    out = tmp_path / "corgi.png"
    code = _run(
        ["sample", "an oil painting of a corgi", "--guidance-scale", "3", "--out", str(out)]
        + ["--checkpoint-dir", str(checkpoint_dir), "--vocab-dir", str(vocab_dir), *QUICK]
    )
    assert code == 0, capsys.readouterr().err
    assert Image.open(out).size == (32, 32)  # the tiny upsampler's size
    assert f"wrote {out}" in capsys.readouterr().out


def test_batch_is_tiled_and_seed_repeats(checkpoint_dir: Path, tmp_path: Path) -> None:
    hooks = {"tokenizer": byte_level_tokenizer()}
    common = ["--checkpoint-dir", str(checkpoint_dir), "--batch-size", "3", "--no-upsample", *QUICK]
    assert _run(["sample", "a corgi", "--out", str(tmp_path / "a.png"), *common], **hooks) == 0
    assert _run(["sample", "a corgi", "--out", str(tmp_path / "b.png"), *common], **hooks) == 0
    a, b = Image.open(tmp_path / "a.png"), Image.open(tmp_path / "b.png")
    assert a.size == (3 * 16, 16)
    assert a.tobytes() == b.tobytes()


def test_inpaint_and_clip_guided_modes(checkpoint_dir: Path, tmp_path: Path) -> None:
    hooks = {"tokenizer": byte_level_tokenizer()}
    Image.new("RGB", (40, 40), (0, 128, 0)).save(tmp_path / "grass.png")
    mask = Image.new("L", (40, 40), 0)
    mask.paste(255, (0, 0, 40, 10))  # keep the top quarter
    mask.save(tmp_path / "mask.png")
    args = ["inpaint", "a corgi", "--image", str(tmp_path / "grass.png"), "--mask", str(tmp_path / "mask.png")]
    out = tmp_path / "edit.png"
    assert _run([*args, "--out", str(out), "--checkpoint-dir", str(checkpoint_dir), *QUICK], **hooks) == 0
    edit = torch.from_numpy(np.asarray(Image.open(out).convert("RGB"), dtype=np.float32))
    assert (edit[:8, :, 1] - 128).abs().max() <= 2 and (edit[:8, :, 0]).abs().max() <= 2  # kept pixels
    out = tmp_path / "clip.png"
    code = _run(["clip-guided", "a corgi", "--out", str(out), "--checkpoint-dir", str(checkpoint_dir), *QUICK], **hooks)
    assert code == 0 and Image.open(out).size == (32, 32)


def test_problems_are_one_line_errors(checkpoint_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from glide_edu.pipelines import memory

    monkeypatch.setattr(memory, "available_memory", lambda device: 1 << 50)  # the official presets' estimate fits
    hooks = {"tokenizer": byte_level_tokenizer()}
    out = ["--out", str(tmp_path / "x.png")]
    assert _run(["sample", "a", *out, "--checkpoint-dir", str(tmp_path), *QUICK], **hooks) == 1
    err = capsys.readouterr().err
    assert "base.pt not found" in err and err.count("\n") == 1
    # the official presets do not fit tiny files: the strict check names the problem
    assert _run(["sample", "a", *out, "--checkpoint-dir", str(checkpoint_dir), *QUICK], registry=None, **hooks) == 1
    assert "does not fit the 'base' preset" in capsys.readouterr().err
    bad = [*out, "--checkpoint-dir", str(checkpoint_dir), *QUICK]
    assert _run(["inpaint", "a", "--image", str(tmp_path / "none.png"), "--mask", "m.png", *bad], **hooks) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample"], "the following arguments are required: prompt"),
        (["sample", "a", "--guidance-scale", "-1"], "expected a number >= 0"),
        (["sample", "a", "--batch-size", "0"], "expected a number >= 1"),
        (["sample", "a", "--steps", "fast99"], "unknown respacing"),
        (["inpaint", "a"], "--image"),
        (["paint", "a"], "invalid choice"),
        (["sample", "a", "--fp16", "--bf16"], "not allowed with argument"),
        (["sample", "a", "--seed", "-1"], "expected a seed in 0…9223372036854775807"),
        (["sample", "a", "--seed", str(2**63)], "expected a seed in 0…"),
        (["sample", "a", "--seed", "1.5"], "expected a whole number"),
        (["sample", "a", "--device", "tpu"], "unknown device 'tpu'; use cpu, cuda, cuda:N or mps"),
        (["sample", "a", "--upsample-temperature", "0"], "expected a number > 0"),
        (["sample", "a", "--out", "picture.txt"], "'picture.txt' is not an image file name; end it in one of"),
        (["sample", "a", "--out", "picture"], "is not an image file name"),
        (["sample", "a", "--out", "no/such/x.png"], "the folder 'no/such' of 'no/such/x.png' does not exist"),
    ],
)
def test_argparse_rejects_bad_arguments(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err  # one line, naming the problem and the fix


def _usage_error(argv: list[str], capsys, **hooks) -> str:
    with pytest.raises(SystemExit) as exit_info:
        _run(argv, **hooks)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_devices_must_exist(monkeypatch, capsys) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "'cuda' was asked for but no CUDA GPU is available; use cpu" in _usage_error(
        ["sample", "a", "--device", "cuda"], capsys
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert "'cuda:3' does not exist: this machine has 1 CUDA GPU(s), cuda:0 to cuda:0" in _usage_error(
        ["sample", "a", "--device", "cuda:3"], capsys
    )
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert "MPS backend is not available" in _usage_error(["sample", "a", "--device", "mps"], capsys)


def test_out_is_checked_before_any_work(tmp_path: Path, monkeypatch, capsys) -> None:
    import glide_edu.cli as cli

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampling started although --out was bad")

    monkeypatch.setattr(cli, "run", no_sampling)
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False)  # (root may write anywhere: pretend)
    err = _usage_error(["sample", "a", "--out", str(tmp_path / "x.png")], capsys)
    assert f"cannot write into the folder '{tmp_path}'; choose another --out" in err
    monkeypatch.undo()
    monkeypatch.setattr(cli, "run", no_sampling)
    (tmp_path / "dir.png").mkdir()
    assert "is a folder" in _usage_error(["sample", "a", "--out", str(tmp_path / "dir.png")], capsys)


def test_a_failed_write_leaves_the_old_image_and_no_temporary_file(
    checkpoint_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """A full disk mid-way through the PNG: the old picture stays as it was, nothing else is left behind."""
    out = tmp_path / "picture.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(out)
    old = out.read_bytes()

    def full_disk(self, fp, format=None, **params):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG\r\n half a picture")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    argv = ["sample", "a", "--out", str(out), "--checkpoint-dir", str(checkpoint_dir), "--no-upsample", *QUICK]
    assert _run(argv, tokenizer=byte_level_tokenizer()) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and err.count("\n") == 1
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picture.png"]
    monkeypatch.undo()
    assert _run(argv, tokenizer=byte_level_tokenizer()) == 0  # and a working disk replaces it
    assert Image.open(out).size == (16, 16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picture.png"]


def test_a_batch_that_cannot_fit_is_refused_up_front_with_the_estimate(
    checkpoint_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    import glide_edu.cli as cli
    from glide_edu.pipelines import memory

    registry = tiny_registry()
    weights = memory.models_weight_bytes(registry, ["base", "upsample"])
    per_batch = {b: memory.estimate_peak_memory(registry, "base", "upsample", b, cfg=True).total for b in (1, 2, 3)}
    assert per_batch[1] < per_batch[2] < per_batch[3] and weights < per_batch[1]
    monkeypatch.setattr(memory, "available_memory", lambda device: per_batch[2] + 1)

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampling started although the batch cannot fit")

    monkeypatch.setattr(cli, "run", no_sampling)
    out = tmp_path / "x.png"
    argv = ["sample", "a", "--out", str(out), "--checkpoint-dir", str(checkpoint_dir), *QUICK]
    err = _usage_error([*argv, "--batch-size", "3"], capsys, registry=registry)
    assert "--batch-size 3 needs about" in err and "GiB of weights" in err
    assert "GiB is free on cpu; use --batch-size 2 or less" in err
    monkeypatch.setattr(memory, "available_memory", lambda device: 1)
    err = _usage_error([*argv, "--batch-size", "1"], capsys, registry=registry)
    assert "free memory or use a bigger machine" in err and not out.exists()


def test_the_full_size_estimate_matches_the_measured_pipeline_peak() -> None:
    """docs/benchmarks.md: text-to-image at batch 1, fp32 on the CPU, peaks at 3.86–3.96 GiB RSS."""
    from glide_edu.hub import CHECKPOINTS
    from glide_edu.pipelines import memory

    one = memory.estimate_peak_memory(CHECKPOINTS, "base", "upsample", 1, cfg=True)
    assert 3.86 <= one.total / memory.GIB <= 4.2
    four = memory.estimate_peak_memory(CHECKPOINTS, "base", "upsample", 4, cfg=True)
    assert four.weights == one.weights and four.activations == 4 * one.activations  # activations scale with batch
    half = memory.estimate_peak_memory(CHECKPOINTS, "base", "upsample", 1, cfg=True, fp16=True, device_type="cuda")
    assert half.weights < 0.6 * one.weights and half.overhead == 0
    # bf16 keeps the float32 weights and adds a bfloat16 copy of the running network's (half the bigger one's bytes)
    bf16 = memory.estimate_peak_memory(CHECKPOINTS, "base", "upsample", 1, cfg=True, bf16=True)
    up_bytes = memory.models_weight_bytes(CHECKPOINTS, ["upsample"])
    assert bf16.weights == one.weights and bf16.activations >= up_bytes // 2


def test_image_inputs_are_read_safely(checkpoint_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """16-bit images are scaled (not saturated), EXIF orientation is applied, decompression bombs refused."""
    hooks = {"tokenizer": byte_level_tokenizer()}
    gray16 = np.full((20, 40), 0x8080, np.uint16)  # 32896/65535 → 8-bit level 128, not 255
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    # stored 20 wide × 40 high, shown 40 wide × 20 high: EXIF orientation 6 (rotate 90° clockwise)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("L", (20, 40), 255).save(tmp_path / "mask.jpg", exif=exif)
    mask = Image.open(tmp_path / "mask.jpg")
    assert mask.size == (20, 40)
    args = ["inpaint", "a", "--image", str(tmp_path / "gray16.png"), "--mask", str(tmp_path / "mask.jpg")]
    out = tmp_path / "edit.png"
    code = _run([*args, "--out", str(out), "--checkpoint-dir", str(checkpoint_dir), *QUICK], **hooks)
    assert code == 0, capsys.readouterr().err  # the mask fits the 40×20 image only after the EXIF rotation
    edit = np.asarray(Image.open(out).convert("RGB"), dtype=np.float32)
    assert np.abs(edit - 128).max() <= 2  # everything kept, at the 16-bit image's true level
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # 40×20 = 800 pixels: Pillow would only warn
    assert _run([*args, "--out", str(out), "--checkpoint-dir", str(checkpoint_dir), *QUICK], **hooks) == 1
    err = capsys.readouterr().err
    assert "gray16.png is too large to open safely" in err and "MAX_IMAGE_PIXELS" in err and err.count("\n") == 1


def test_cache_dir_also_holds_the_gpt2_vocabulary(checkpoint_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import shutil

    import glide_edu.hub
    from tests.reference_data import shared_path

    vocab_files = shared_path() / "reference" / "glide_text2im" / "vocab"
    monkeypatch.delenv("GLIDE_EDU_VOCAB_DIR", raising=False)
    monkeypatch.setenv("GLIDE_EDU_CACHE", str(tmp_path / "default-cache"))  # empty: must not be used
    fetched = []

    def fake_download(cache_dir=None, progress=True, **kwargs):
        fetched.append(Path(cache_dir))
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        for f in vocab_files.iterdir():
            shutil.copy(f, Path(cache_dir) / f.name)
        from glide_edu.vocab import gpt2_vocab_paths

        return gpt2_vocab_paths(cache_dir=cache_dir)

    monkeypatch.setattr(glide_edu.hub, "download_gpt2_vocab", fake_download)
    cache = tmp_path / "cache"
    cache.mkdir()
    argv = ["sample", "a corgi", "--cache-dir", str(cache), "--checkpoint-dir", str(checkpoint_dir)]
    argv += ["--no-upsample", "--out", str(tmp_path / "a.png"), *QUICK]
    assert _run(argv) == 0, capsys.readouterr().err  # no tokenizer hook: GLIDE's tokenizer is looked up
    assert fetched == [cache / "vocab"] and (cache / "vocab" / "encoder.json.gz").is_file()  # as in the default cache
    assert _run(argv) == 0 and fetched == [cache / "vocab"]  # the second run finds it in --cache-dir: no new fetch
    assert not (tmp_path / "default-cache").exists()


def test_help_explains_downloads_and_options(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = capsys.readouterr().out
    for needle in ("--checkpoint-dir", "--device", "--fp16", "--seed", "--batch-size", "--steps", "GLIDE_EDU_CACHE"):
        assert needle in text, needle
    assert "1.5 GB" in text and "classifier-free guidance" in text


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("glide-edu")
    if not script.exists():
        pytest.skip("the glide-edu script is not installed in this environment (pip install -e .)")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "inpaint" in result.stdout
