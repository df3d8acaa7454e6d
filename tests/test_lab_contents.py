"""Opening a chapter in JupyterLab leaves it unmodified (glide_edu.book.lab.BookContentsManager).

JupyterLab marks a notebook modified when the connecting kernel's ``language_info`` differs from the
notebook's; jupytext's text chapters store none. The browser test watches the tab's ● itself; here the
server side: the model handed to JupyterLab carries exactly the kernel's ``language_info``, and saving that
model back writes the chapter's bytes unchanged.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("jupyter_server")

from glide_edu.book.lab import BookContentsManager, kernel_language_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_chapter_model_has_the_kernels_language_info_and_saves_unchanged(tmp_path: Path) -> None:
    chapter = ROOT / "chapters" / "01_forward_process.md"
    shutil.copy(chapter, tmp_path / chapter.name)
    manager = BookContentsManager(root_dir=str(tmp_path))
    model = asyncio.run(manager.get(chapter.name, content=True, type="notebook"))
    assert model["content"]["metadata"]["language_info"] == kernel_language_info()
    assert kernel_language_info()["name"] == "python" and kernel_language_info()["version"]
    before = (tmp_path / chapter.name).read_bytes()
    asyncio.run(manager.save({"type": "notebook", "format": "json", "content": model["content"]}, chapter.name))
    assert (tmp_path / chapter.name).read_bytes() == before  # what autosave would write: the same bytes


def test_non_python_notebooks_and_listings_are_left_alone(tmp_path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "ir", "language": "R", "display_name": "R"}
    nbformat.write(nb, tmp_path / "r.ipynb")
    manager = BookContentsManager(root_dir=str(tmp_path))
    model = asyncio.run(manager.get("r.ipynb", content=True, type="notebook"))
    assert "language_info" not in model["content"]["metadata"]
    assert asyncio.run(manager.get("", content=True))["type"] == "directory"


def test_the_venv_config_names_the_manager() -> None:
    config = json.loads((ROOT / "tools" / "jupyter-server-config.json").read_text())
    assert config["ServerApp"]["contents_manager_class"] == "glide_edu.book.lab.BookContentsManager"
