"""A regular (non-editable) install works: the wheel carries every package and the shipped data files.

The wheel is built from this checkout without network access (``--no-build-isolation``: the build uses
this environment's setuptools), installed with ``--no-deps`` into a scratch virtual environment that sees
this environment's third-party packages (torch, …) through a path entry but *not* its editable glide_edu,
and a script run from an unrelated folder loads a shipped model and samples from it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "glide_edu").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert found - listed == set(), f"add these packages to [tool.setuptools] packages: {sorted(found - listed)}"
    assert "glide_edu.assets" in listed


def test_shipped_files_resolve_through_importlib_resources() -> None:
    from glide_edu.fileio import asset_path, assets_dir
    from glide_edu.pretrained import shipped_checkpoint

    assert assets_dir().resolve() == (ROOT / "data").resolve()  # editable install: the repository's data/
    assert shipped_checkpoint("digits_simple") == asset_path("checkpoints", "digits_simple.safetensors")


SCRIPT = r"""
import sys
from pathlib import Path
import torch
import glide_edu
from glide_edu.fileio import assets_dir
from glide_edu.pretrained import load_small_checkpoint, shipped_checkpoint
from glide_edu.metrics import load_feature_net

prefix = Path(sys.prefix).resolve()
assert prefix in Path(glide_edu.__file__).resolve().parents, glide_edu.__file__
assert prefix in assets_dir().resolve().parents, assets_dir()
model, diffusion, meta = load_small_checkpoint(shipped_checkpoint("digits_hybrid"))
load_feature_net()
from glide_edu.respace import create_diffusion
d = create_diffusion(**meta["diffusion_config"], timestep_respacing="4")
x = d.p_sample_loop(model, (2, 1, 16, 16), generator=torch.Generator().manual_seed(0))
assert x.shape == (2, 1, 16, 16) and torch.isfinite(x).all()
print("OK", len(list((assets_dir() / "checkpoints").glob("*.safetensors"))))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout")
def test_wheel_installs_and_samples_from_a_shipped_model(tmp_path: Path) -> None:
    wheels, src = tmp_path / "wheels", tmp_path / "src"
    # build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("glide_edu", "data"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("glide_edu-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    scratch_site = Path(
        subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True)
        .strip()
    )
    # third-party packages from this environment, appended after the scratch site-packages; .pth files in that
    # folder are not processed, so this environment's editable glide_edu stays invisible
    (scratch_site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run = subprocess.run([str(py), "-c", SCRIPT], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    n_shipped = len(list((ROOT / "data" / "checkpoints").glob("*.safetensors")))
    assert run.stdout.split() == ["OK", str(n_shipped)]


def test_everything_shipped_stays_under_60_mb() -> None:
    from glide_edu.fileio import assets_dir

    total = sum(p.stat().st_size for p in assets_dir().rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total <= 60 * 1024**2, f"data/ holds {total / 1024**2:.1f} MB; the budget is 60 MB"
