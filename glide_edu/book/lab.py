"""JupyterLab integration of the book: chapters open unmodified.

A chapter is a MyST text notebook read through jupytext. Its header stores the kernelspec but not the
kernel's ``language_info`` (jupytext leaves it out of text files: it names the Python patch version). When a
kernel connects, JupyterLab writes the kernel's ``language_info`` into the notebook; a notebook that lacked it
is then *modified* (● on the tab) and autosave rewrites the chapter — with the same text, but a write
nonetheless. :class:`BookContentsManager` is jupytext's contents manager that hands JupyterLab Python
notebooks with the ``language_info`` of this environment's kernel already filled in, so connecting changes
nothing. Saving filters it out again, so the stored text never changes.

Installed by ``make lab``/``make venv`` as ``<venv>/etc/jupyter/jupyter_server_config.json``
(``ServerApp.contents_manager_class``); jupytext's own server extension sees a jupytext manager and keeps it.
"""

from __future__ import annotations

from typing import Any

from jupytext import AsyncTextFileContentsManager


def kernel_language_info() -> dict[str, Any]:
    """The ``language_info`` that an ipykernel of this Python reports on connecting."""
    from ipykernel.ipkernel import IPythonKernel

    return dict(IPythonKernel.language_info)


class BookContentsManager(AsyncTextFileContentsManager):
    """jupytext's contents manager; Python notebooks come with the kernel's ``language_info``."""

    async def get(self, path: str, content: bool = True, type: str | None = None, format: str | None = None,
                  **kwargs: Any) -> dict[str, Any]:
        model = await super().get(path, content=content, type=type, format=format, **kwargs)
        if content and model.get("type") == "notebook" and model.get("content") is not None:
            meta = model["content"]["metadata"]
            if meta.get("kernelspec", {}).get("language") == "python" and "language_info" not in meta:
                meta["language_info"] = kernel_language_info()
        return model
