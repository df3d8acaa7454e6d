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
        torch.save(tiny_glide_model(name).state_dict(), folder / registry[name].file)
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


def test_problems_are_one_line_errors(checkpoint_dir: Path, tmp_path: Path, capsys) -> None:
    hooks = {"tokenizer": byte_level_tokenizer()}
    out = ["--out", str(tmp_path / "x.png")]
    assert _run(["sample", "a", *out, "--checkpoint-dir", str(tmp_path), *QUICK], **hooks) == 1
    err = capsys.readouterr().err
    assert "base.pt not found" in err and err.count("\n") == 1
    assert _run(["sample", "a", *out, "--checkpoint-dir", str(checkpoint_dir), *QUICK, "--device", "tpu"], **hooks) == 1
    assert "unknown device 'tpu'" in capsys.readouterr().err
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
    ],
)
def test_argparse_rejects_bad_arguments(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


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
