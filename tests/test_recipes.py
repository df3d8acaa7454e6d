"""The recipes' command line: a short real run writes a checkpoint and sample grids; misuse is refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from glide_edu import recipes


def test_digits_recipe_short_run_writes_checkpoint_and_sample_grids(tmp_path) -> None:
    out, run = tmp_path / "digits.safetensors", tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        recipes.main(["digits", "--loss", "simple", "--steps", "2", "--out", str(out), "--run-dir", str(run),
                      "--sample-every", "1", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)  # --threads sets it for the whole process
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-0000001.png", "step-0000002.png"]
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        assert len(list(f.keys())) > 0
    assert meta and "digits" in json.dumps(meta)
    saved = json.loads((run / "ckpt-0000002" / "trainer.json").read_text())
    assert saved["step"] == 2 and saved["train_config"]["sample_every"] == 1


def test_sample_every_without_run_dir_is_refused(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        recipes.main(["digits", "--loss", "simple", "--steps", "1", "--sample-every", "5", "--out", "x.safetensors"])
    assert exc.value.code == 2
    assert "--sample-every needs --run-dir" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", [["digits", "--loss", "simple"], ["digits-cfg", "--p-uncond", "0.1"],
                                    ["classifier", "--noised"], ["fid-features"], ["picture-features"],
                                    ["glide-mini"]])
def test_every_recipe_needs_an_explicit_out(recipe: list[str], capsys) -> None:
    """No recipe writes over a shipped file under data/ unless that path is given."""
    with pytest.raises(SystemExit) as exc:
        recipes.main([*recipe, "--steps", "1"] if recipe[0] not in ("fid-features", "picture-features") else recipe)
    assert exc.value.code == 2 and "--out" in capsys.readouterr().err


@pytest.mark.parametrize("steps", ["0", "-1"])
def test_non_positive_steps_are_refused_before_training(steps: str, tmp_path) -> None:
    out = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match=r"steps=-?\d+ \(need ≥ 1\)"):
        recipes.main(["digits", "--loss", "simple", "--steps", steps, "--out", str(out)])
    assert not out.exists()


def _folder(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("circles", "squares"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / cls / f"{i}.png")
    return tmp_path / "data"


def test_folder_recipe_trains_a_class_conditional_model_that_loads_and_samples(tmp_path) -> None:
    from glide_edu.pretrained import load_small_checkpoint

    data, out, run = _folder(tmp_path), tmp_path / "mine.safetensors", tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        recipes.main(["folder", "--data", str(data), "--image-size", "16", "--steps", "2", "--batch-size", "4",
                      "--model-channels", "32", "--p-uncond", "0.2", "--out", str(out), "--run-dir", str(run),
                      "--sample-every", "2", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert (run / "samples" / "step-0000002.png").exists()
    model, diffusion, meta = load_small_checkpoint(out)
    assert model.config.num_classes == 3 and model.config.learn_sigma  # two classes + the null label
    assert meta["info"]["classes"] == ["circles", "squares"] and meta["info"]["images"] == 8
    with torch.no_grad():
        eps = model(torch.zeros(2, 3, 16, 16), torch.tensor([10, 500]), y=torch.tensor([0, 2]))
    assert eps.shape == (2, 6, 16, 16)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--image-size", "20"], "--image-size 20 is not supported"),
        (["--image-size", "16", "--model-channels", "48"], "must be a multiple of 32"),
        (["--image-size", "16", "--p-uncond", "1.5"], "--p-uncond must lie in"),
    ],
)
def test_folder_recipe_refuses_bad_options(tmp_path, capsys, extra, message) -> None:
    data = _folder(tmp_path)
    with pytest.raises(SystemExit) as exc:
        recipes.main(["folder", "--data", str(data), "--out", str(tmp_path / "m.safetensors"), *extra])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()


def test_folder_recipe_refuses_label_dropout_on_a_flat_folder(tmp_path, capsys) -> None:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(SystemExit):
        recipes.main(["folder", "--data", str(tmp_path), "--image-size", "16", "--p-uncond", "0.1",
                      "--out", str(tmp_path / "m.safetensors")])
    assert "needs one sub-folder per class" in capsys.readouterr().err


def test_cfg_fine_tuning_starts_as_the_unconditional_model() -> None:
    from dataclasses import replace

    from glide_edu.nn.unet import UNetModel
    from glide_edu.pretrained import load_small_checkpoint, shipped_checkpoint

    unet_cfg, _ = recipes.digits_configs("hybrid")
    model = UNetModel(replace(unet_cfg, num_classes=recipes.NULL_LABEL + 1)).eval()
    recipes.init_from(model, shipped_checkpoint("digits_hybrid"))
    base, _, _ = load_small_checkpoint(shipped_checkpoint("digits_hybrid"))
    x, t = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([5, 100, 500, 900])
    with torch.no_grad():
        for label in (0, 7, recipes.NULL_LABEL):  # every label, and the null label, give the unconditional output
            torch.testing.assert_close(model(x, t, y=torch.full((4,), label)), base(x, t))
    with pytest.raises(ValueError, match="does not fit"):
        wider = UNetModel(replace(unet_cfg, model_channels=64, num_classes=11))
        recipes.init_from(wider, shipped_checkpoint("digits_hybrid"))
