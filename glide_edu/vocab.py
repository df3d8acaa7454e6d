"""Where the tokenizers' vocabulary files come from, and how they are verified.

Two BPE vocabularies are needed to run GLIDE:

* the **GPT-2** byte-level BPE (``encoder.json`` + ``vocab.bpe``) read by GLIDE's diffusion models. It is
  not shipped in any package, so it is looked up in folders (:func:`search_dirs`): the ``vocab_dir``
  argument alone if given, else ``$GLIDE_EDU_VOCAB_DIR`` and then the vocabulary cache folder, which is the
  ``cache_dir`` argument or by default :func:`vocab_cache_dir` (``vocab`` in glide_edu's cache root,
  :func:`glide_edu.fileio.cache_root`, beside the checkpoints of :mod:`glide_edu.hub`). Each file may also
  be stored gzipped (``encoder.json.gz``). :func:`glide_edu.hub.download_gpt2_vocab` fetches them.
* **CLIP**'s BPE (``bpe_simple_vocab_16e6.txt.gz``) read by the noised CLIP. It ships inside the
  ``open-clip-torch`` wheel; we only *read the file* from the installed distribution (importing
  ``open_clip`` would drag in torchvision), falling back to the same folders as above.

Every file is checked by the sha256 of its *decompressed* content, so a plain and a gzipped copy are
equally good. Problems raise :class:`VocabError` with a one-line message naming the file, the places
searched and the fix. This module does no network access.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import os
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from glide_edu import fileio

ENV_VAR = "GLIDE_EDU_VOCAB_DIR"
VOCAB_FOLDER = "vocab"  # the vocabulary cache folder's name inside glide_edu's cache root
GPT2_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"


@dataclass(frozen=True)
class VocabFile:
    """A vocabulary file: its name and the sha256 / size of its decompressed bytes."""

    name: str
    sha256: str
    size: int
    source: str  # how a user obtains it (for error messages; ``{dir}`` = the first folder searched)


GPT2_ENCODER = VocabFile(
    "encoder.json",
    "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    1042301,
    f"download {GPT2_URL}encoder.json into {{dir}}",
)
GPT2_MERGES = VocabFile(
    "vocab.bpe",
    "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    456318,
    f"download {GPT2_URL}vocab.bpe into {{dir}}",
)
CLIP_BPE = VocabFile(
    "bpe_simple_vocab_16e6.txt",
    "67603cfda2e032ad77b5f8808af37789d590db664b26df8705d2bf8b3c553fc8",
    3194984,
    "pip install --no-deps open-clip-torch (its wheel ships the file), or put the file into {dir}",
)
# Installed distributions known to ship CLIP's vocabulary (distribution name, path inside it).
CLIP_WHEELS = (
    ("open-clip-torch", "open_clip/bpe_simple_vocab_16e6.txt.gz"),
    ("clip-anytorch", "clip/bpe_simple_vocab_16e6.txt.gz"),
)


class VocabError(RuntimeError):
    """A vocabulary file is missing or is not the expected file (one-line message with the fix)."""


class VocabNotFoundError(VocabError):
    """A vocabulary file is in none of the folders searched (its message says "not found" and where it looked)."""


class GPT2VocabPaths(NamedTuple):
    """The verified paths of GPT-2's two vocabulary files (either may end in ``.gz``)."""

    encoder_json: Path
    vocab_bpe: Path


def vocab_cache_dir() -> Path:
    """The vocabulary cache folder: ``vocab`` in glide_edu's cache root (:func:`glide_edu.fileio.cache_root`).

    That is ``$GLIDE_EDU_CACHE/vocab``, else ``~/.cache/glide_edu/vocab``; the checkpoints sit beside it in
    ``checkpoints`` (:func:`glide_edu.hub.default_cache_dir`).
    """
    return fileio.cache_root() / VOCAB_FOLDER


def search_dirs(
    vocab_dir: str | os.PathLike[str] | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """The folders searched for a vocabulary file, in order.

    ``vocab_dir`` alone if given; else ``$GLIDE_EDU_VOCAB_DIR`` (if set) and then the vocabulary cache
    folder: ``cache_dir`` if given (e.g. the folder a command line's ``--cache-dir`` names), else
    :func:`vocab_cache_dir`.
    """
    if vocab_dir is not None:
        return [Path(vocab_dir).expanduser()]
    dirs = []
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]).expanduser())
    dirs.append(Path(cache_dir).expanduser() if cache_dir is not None else vocab_cache_dir())
    return dirs


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The file's content, decompressed when the name ends in ``.gz``."""
    path = Path(path)
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


@lru_cache(maxsize=16)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    """sha256 of the file's decompressed content (cached per path, mtime and size)."""
    if not path.endswith(".gz"):
        return fileio.sha256_file(path)
    return hashlib.sha256(read_bytes(path)).hexdigest()


def verify(path: str | os.PathLike[str], spec: VocabFile) -> Path:
    """Check the sha256 of ``path``'s (decompressed) content against ``spec``; return the path or raise."""
    path = Path(path)
    stat = path.stat()
    try:
        digest = _digest(str(path), stat.st_mtime_ns, stat.st_size)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as err:
        fix = spec.source.format(dir=path.parent)
        raise VocabError(f"{spec.name}: cannot read {path} ({err}); delete it and {fix}") from None
    if digest != spec.sha256:
        fix = spec.source.format(dir=path.parent)
        raise VocabError(
            f"{spec.name}: {path} has sha256 {digest[:16]}…, expected {spec.sha256[:16]}… "
            f"(a different or damaged file); delete it and {fix}"
        )
    return path


def find_vocab_file(spec: VocabFile, dirs: list[Path]) -> Path:
    """The first ``<dir>/<name>`` or ``<dir>/<name>.gz`` in ``dirs``, verified.

    Raises :class:`VocabNotFoundError` when no folder holds the file, :class:`VocabError` when the first
    copy found is not the expected file.
    """
    for folder in dirs:
        for candidate in (folder / spec.name, folder / f"{spec.name}.gz"):
            if candidate.is_file():
                return verify(candidate, spec)
    places = ", ".join(str(d) for d in dirs)
    raise VocabNotFoundError(
        f"vocabulary file {spec.name} (or {spec.name}.gz) not found in: {places}; "
        f"{spec.source.format(dir=dirs[0])}, or point {ENV_VAR} (or vocab_dir=) at a folder holding it"
    )


def gpt2_vocab_paths(
    vocab_dir: str | os.PathLike[str] | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> GPT2VocabPaths:
    """Verified paths of GPT-2's ``encoder.json`` and ``vocab.bpe`` (each possibly ``.gz``).

    ``vocab_dir`` is the one folder to look in; without it the files are looked up in
    ``$GLIDE_EDU_VOCAB_DIR`` and then the vocabulary cache folder, ``cache_dir`` (the folder
    :func:`glide_edu.hub.download_gpt2_vocab` was given) or by default :func:`vocab_cache_dir`
    (see :func:`search_dirs`). Raises :class:`VocabNotFoundError` / :class:`VocabError` (one line: which
    file, where it looked, how to fix) when a file is missing or its content has the wrong sha256.
    """
    dirs = search_dirs(vocab_dir, cache_dir)
    return GPT2VocabPaths(find_vocab_file(GPT2_ENCODER, dirs), find_vocab_file(GPT2_MERGES, dirs))


def clip_vocab_path(
    vocab_dir: str | os.PathLike[str] | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Verified path of CLIP's ``bpe_simple_vocab_16e6.txt.gz``.

    Looked up first in the installed ``open-clip-torch`` (or ``clip-anytorch``) distribution without
    importing it, then in the vocabulary folders (``vocab_dir`` / ``cache_dir``, see :func:`search_dirs`).
    """
    tried = []
    for dist_name, rel in CLIP_WHEELS:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
        path = Path(str(dist.locate_file(rel)))
        if path.is_file():
            return verify(path, CLIP_BPE)
        tried.append(str(path))
    try:
        return find_vocab_file(CLIP_BPE, search_dirs(vocab_dir, cache_dir))
    except VocabNotFoundError as err:
        if not tried:
            raise
        raise VocabNotFoundError(f"{err} (also missing from the installed wheel: {', '.join(tried)})") from None
