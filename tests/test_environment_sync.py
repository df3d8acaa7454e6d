"""environment.yml (conda) must list the same packages, with the same version ranges, as pyproject.toml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")

REPO = Path(__file__).resolve().parents[1]

# pip name -> conda-forge name, where they differ. Everything else is spelled the same on both.
PIP_TO_CONDA = {"torch": "pytorch"}

# Conda-only entries of environment.yml that have no pyproject.toml counterpart.
# open-clip-torch: the Makefile installs it with --no-deps for pip users (only its vocabulary file is read)
CONDA_ONLY = {"pip", "open-clip-torch"}

CONDA_SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*$")


def pip_table(pyproject: dict) -> dict[str, SpecifierSet]:
    """conda name -> version range, for python, the runtime dependencies and every extra (``dev``, ``book``)."""
    project = pyproject["project"]
    table = {"python": SpecifierSet(project["requires-python"])}
    extras = [line for lines in project["optional-dependencies"].values() for line in lines]
    for line in project["dependencies"] + extras:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        table[PIP_TO_CONDA.get(name, name)] = req.specifier
    return table


def conda_table(env: dict) -> dict[str, SpecifierSet]:
    """name -> version range for the conda packages of environment.yml (the ``pip:`` block left out)."""
    table = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):  # the nested `pip:` list
            continue
        match = CONDA_SPEC.match(entry)
        assert match, f"cannot parse conda spec {entry!r}"
        name, spec = match.groups()
        if canonicalize_name(name) in CONDA_ONLY:
            continue
        table[canonicalize_name(name)] = SpecifierSet(spec.replace(" ", ""))
    return table


def differences(pip: dict[str, SpecifierSet], conda: dict[str, SpecifierSet]) -> list[str]:
    problems = [f"{n}: only in pyproject.toml" for n in sorted(pip.keys() - conda.keys())]
    problems += [f"{n}: only in environment.yml" for n in sorted(conda.keys() - pip.keys())]
    problems += [
        f"{n}: pyproject.toml has {str(pip[n]) or 'any'!r}, environment.yml has {str(conda[n]) or 'any'!r}"
        for n in sorted(pip.keys() & conda.keys())
        if pip[n] != conda[n]
    ]
    return problems


def load() -> tuple[dict, dict]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    return pyproject, env


def test_environment_yml_matches_pyproject() -> None:
    pyproject, env = load()
    assert differences(pip_table(pyproject), conda_table(env)) == []


def test_environment_yml_installs_the_package_from_conda_forge() -> None:
    _, env = load()
    assert env["name"] == "glide-edu"
    assert env["channels"] == ["conda-forge"]
    pip_blocks = [e["pip"] for e in env["dependencies"] if isinstance(e, dict)]
    assert pip_blocks == [["-e ."]]
    assert "pip" in env["dependencies"]


def test_a_package_or_range_in_one_file_only_is_caught() -> None:
    pyproject, env = load()
    conda = conda_table(env)
    pyproject["project"]["dependencies"].append("einops>=0.7")
    assert differences(pip_table(pyproject), conda) == ["einops: only in pyproject.toml"]

    pyproject, env = load()
    env["dependencies"] = [
        "pytorch>=2.4" if isinstance(e, str) and e.startswith("pytorch") else e for e in env["dependencies"]
    ]
    assert differences(pip_table(pyproject), conda_table(env)) == [
        "pytorch: pyproject.toml has '>=2.3', environment.yml has '>=2.4'"
    ]

    pyproject, env = load()
    env["dependencies"].insert(1, "einops")
    assert differences(pip_table(pyproject), conda_table(env)) == ["einops: only in environment.yml"]
