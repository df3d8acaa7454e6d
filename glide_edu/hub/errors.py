"""The errors of :mod:`glide_edu.hub`: one base class, :class:`CheckpointError`, and a subclass per problem.

Every message is one line that names the problem and the fix. Callers that only want to report a failure
catch :class:`CheckpointError`; the subclasses tell the cases apart.
"""

from __future__ import annotations

from glide_edu.vocab import VocabError

__all__ = [
    "CacheError",
    "CheckpointError",
    "ChecksumError",
    "CorruptCheckpointError",
    "DownloadError",
    "UnsafeCheckpointError",
    "VocabFileError",
    "WrongKindError",
]


class CheckpointError(RuntimeError):
    """A checkpoint cannot be found, fetched, verified or loaded (one-line message with the fix)."""


class DownloadError(CheckpointError):
    """The transfer failed (network, HTTP status, interrupted); a partial file is kept for resuming."""


class ChecksumError(CheckpointError):
    """The file's sha256 differs from the expected one; a cached copy has been removed."""


class CorruptCheckpointError(CheckpointError):
    """The file is not a readable ``torch.save`` file (truncated, damaged, or another format)."""


class UnsafeCheckpointError(CheckpointError):
    """The file's pickle would run code or build objects other than tensors; it was refused unexecuted."""


class WrongKindError(CheckpointError):
    """The state dict does not fit the model it was loaded as (another kind, or other options)."""


class CacheError(CheckpointError):
    """The cache folder or its ``hashes.json`` cannot be read or written (read-only, full disk, damaged)."""


class VocabFileError(CheckpointError, VocabError):
    """A GPT-2 vocabulary file for :func:`~glide_edu.hub.download_gpt2_vocab` is missing or is the wrong file.

    Both a :class:`CheckpointError` (like every hub failure) and a :class:`glide_edu.vocab.VocabError`.
    """


def one_line(text: object) -> str:
    """``text`` with every run of white space (newlines included) made one space, for a one-line message."""
    return " ".join(str(text).split())


def os_message(err: OSError) -> str:
    """``err`` in a few words without the Python class name, e.g. ``Permission denied: /x/y``."""
    text = err.strerror or str(err) or type(err).__name__
    return one_line(f"{text}: {err.filename}" if err.strerror and err.filename is not None else text)
