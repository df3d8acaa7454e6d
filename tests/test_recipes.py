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
        recipes.main(["digits", "--loss", "simple", "--steps", "1", "--sample-every", "5"])
    assert exc.value.code == 2
    assert "--sample-every needs --run-dir" in capsys.readouterr().err
