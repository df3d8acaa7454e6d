"""OpenAI's released GLIDE (filtered) checkpoints: registry, resumable verified downloads, strict loading.

Six files were published with GLIDE (filtered), all under one public folder (:data:`BASE_URL`): the 64×64
``base`` model, the 64→256 ``upsample`` model, their ``-inpaint`` versions, and the noised CLIP's two
encoders ``clip/image-enc`` and ``clip/text-enc`` (table in :mod:`glide_edu.hub.registry`). Each file is
a plain ``state_dict`` (a dict of tensors) written by ``torch.save``. Typical use::

    from glide_edu.hub import load_checkpoint
    model = load_checkpoint("base")          # downloads once into the cache, then loads strictly
    clip = load_checkpoint("clip")           # both CLIP encoders → a NoisedClip

The package's parts:

* :mod:`~glide_edu.hub.registry`: :data:`CHECKPOINTS`, :class:`Checkpoint`, :data:`KINDS`, :func:`detect_kind`;
* :mod:`~glide_edu.hub.cache`: :func:`default_cache_dir` and the ``hashes.json`` records;
* :mod:`~glide_edu.hub.downloads`: :func:`download` and :func:`download_gpt2_vocab`;
* :mod:`~glide_edu.hub.loading`: :func:`read_state_dict`, :func:`check_state_dict`, :func:`load_checkpoint`,
  :func:`load_clip`;
* :mod:`~glide_edu.hub.errors`: :class:`CheckpointError` and its subclasses.

**Cache.** Checkpoints go into :func:`default_cache_dir`, the ``checkpoints`` folder of glide_edu's cache
root (``$GLIDE_EDU_CACHE``, else ``~/.cache/glide_edu``; see :func:`glide_edu.fileio.cache_root`), or into
the ``cache_dir`` you pass. A download streams into ``<file>.part`` and is renamed into place only once it
is complete and verified, so an interrupted download is resumed (HTTP ``Range``) by the next call.

**Verification.** No sha256 of the official files is published, so the registry's ``sha256`` slots are
``None``. Such a file is accepted only after a strict check of its keys and shapes against the model built
from its preset; its sha256 is then recorded in ``<cache>/hashes.json`` and enforced on every later use
(a cached file that no longer matches is removed). A sha256 given by the registry or by the caller is
checked before the file is accepted.

**Safety.** Files are read with ``torch.load(weights_only=True)``: a pickle that would run code or build
arbitrary objects is refused (and its code is not run).

Every problem finding, fetching, verifying or reading a checkpoint raises :class:`CheckpointError` (or a
subclass) with a one-line message naming the problem and the fix. The GPT-2 vocabulary that GLIDE's
tokenizer needs can be fetched with :func:`download_gpt2_vocab` into the folder :mod:`glide_edu.vocab`
searches (or into the ``cache_dir`` you give it).
"""

from __future__ import annotations

from glide_edu.hub.cache import default_cache_dir
from glide_edu.hub.downloads import download, download_gpt2_vocab
from glide_edu.hub.errors import (
    CacheError,
    CheckpointError,
    ChecksumError,
    CorruptCheckpointError,
    DownloadError,
    UnsafeCheckpointError,
    VocabFileError,
    WrongKindError,
)
from glide_edu.hub.loading import check_state_dict, load_checkpoint, load_clip, read_state_dict
from glide_edu.hub.registry import BASE_URL, CHECKPOINTS, CLIP_KINDS, KINDS, Checkpoint, detect_kind

__all__ = [
    "BASE_URL",
    "CHECKPOINTS",
    "CLIP_KINDS",
    "KINDS",
    "CacheError",
    "Checkpoint",
    "CheckpointError",
    "ChecksumError",
    "CorruptCheckpointError",
    "DownloadError",
    "UnsafeCheckpointError",
    "VocabFileError",
    "WrongKindError",
    "check_state_dict",
    "default_cache_dir",
    "detect_kind",
    "download",
    "download_gpt2_vocab",
    "load_checkpoint",
    "load_clip",
    "read_state_dict",
]
