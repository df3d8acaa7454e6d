"""Files: atomic writes, SHA-256 of a file, the cache root, and the data files the book ships.

Every module that writes a file the reader keeps (checkpoints, results, images, downloads' records) goes
through :func:`atomic_write`: the bytes go to a temporary file beside the target, are flushed to disk, and
the temporary file is renamed over the target. A crash, a full disk or Ctrl-C leaves either the old file or
the new one, never a truncated mix, and the temporary file is removed.

Shipped files (``data/`` in the repository: small datasets, tiny checkpoints, precomputed results) are
package data of ``glide_edu.assets``, read with :mod:`importlib.resources`, so a plain ``pip install .``
(not only an editable install) finds them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

__all__ = [
    "CACHE_ENV_VAR",
    "asset_path",
    "assets_dir",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "cache_root",
    "sha256_file",
]

CACHE_ENV_VAR = "GLIDE_EDU_CACHE"
ASSETS_PACKAGE = "glide_edu.assets"  # the repository's data/ folder (see [tool.setuptools.package-dir])


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None], mode: int = 0o644) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, fsync it and rename it onto ``path``.

    The folder is created if needed. On any failure (including KeyboardInterrupt) the temporary file is
    removed and ``path`` is left as it was. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # the writer may have used its own file handle: sync what it wrote
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in ``chunk``-byte pieces (fine for 1.5 GB checkpoints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_root() -> Path:
    """The download cache: ``$GLIDE_EDU_CACHE``, else ``$XDG_CACHE_HOME/glide_edu``, else ``~/.cache/glide_edu``.

    The official checkpoints lie in the root itself and GPT-2's vocabulary in ``<root>/vocab``.
    """
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glide_edu"


def assets_dir() -> Path:
    """The folder of shipped data files (``data/`` of the repository, installed as ``glide_edu.assets``)."""
    root = resources.files(ASSETS_PACKAGE)
    if not isinstance(root, Path):  # e.g. a zip import: the book needs real files
        raise RuntimeError(f"glide_edu's data files are not on disk ({root}); install glide-edu from a folder or wheel")
    return root


def asset_path(*parts: str) -> Path:
    """Path of a shipped file, e.g. ``asset_path("checkpoints", "digits_simple.safetensors")``."""
    return assets_dir().joinpath(*parts)
