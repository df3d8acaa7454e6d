"""OpenAI's released GLIDE (filtered) checkpoints: registry, resumable verified downloads, strict loading.

Six files were published with GLIDE (filtered), all under one public folder:

====================  =======================  ==============================================
name                  file                     what it holds
====================  =======================  ==============================================
``base``              ``base.pt``              64×64 text-conditional UNet (385 M parameters)
``upsample``          ``upsample.pt``          64→256 super-resolution UNet (398 M)
``base-inpaint``      ``base_inpaint.pt``      inpainting version of ``base``
``upsample-inpaint``  ``upsample_inpaint.pt``  inpainting version of ``upsample``
``clip/image-enc``    ``clip_image_enc.pt``    noised CLIP image encoder (86 M)
``clip/text-enc``     ``clip_text_enc.pt``     noised CLIP text encoder (72 M)
====================  =======================  ==============================================

Each file is a plain ``state_dict`` (a dict of tensors) written by ``torch.save``. Typical use::

    from glide_edu.hub import load_checkpoint
    model = load_checkpoint("base")          # downloads once into the cache, then loads strictly
    clip = load_checkpoint("clip")           # both CLIP encoders → a NoisedClip

**Cache.** Files go into ``$GLIDE_EDU_CACHE``, else ``$XDG_CACHE_HOME/glide_edu``, else
``~/.cache/glide_edu``. A download streams into ``<file>.part`` and is renamed into place only once it is
complete and verified, so an interrupted download is resumed (HTTP ``Range``) by the next call.

**Verification.** No sha256 of the official files is published, so the registry's ``sha256`` slots are
``None``. Such a file is accepted only after a strict check of its keys and shapes against the model built
from its preset; its sha256 is then recorded in ``<cache>/hashes.json`` and enforced on every later use
(a cached file that no longer matches is removed). A sha256 given by the registry or by the caller is
checked before the file is accepted.

**Safety.** Files are read with ``torch.load(weights_only=True)``: a pickle that would run code or build
arbitrary objects is refused (and its code is not run).

All problems raise :class:`CheckpointError` (or a subclass) with a one-line message naming the problem
and the fix. The GPT-2 vocabulary that GLIDE's tokenizer needs can be fetched with
:func:`download_gpt2_vocab` into the folder :mod:`glide_edu.vocab` searches.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from glide_edu import vocab as vocab_mod
from glide_edu.nn.clip import ImageEncoder, NoisedClip, TextEncoder
from glide_edu.nn.presets import GLIDE_KINDS, create_glide_model

__all__ = [
    "BASE_URL",
    "CHECKPOINTS",
    "CLIP_KINDS",
    "KINDS",
    "Checkpoint",
    "CheckpointError",
    "ChecksumError",
    "CorruptCheckpointError",
    "DownloadError",
    "UnsafeCheckpointError",
    "WrongKindError",
    "default_cache_dir",
    "detect_kind",
    "download",
    "download_gpt2_vocab",
    "load_checkpoint",
    "load_clip",
    "read_state_dict",
]

ENV_VAR = "GLIDE_EDU_CACHE"
BASE_URL = "https://openaipublic.blob.core.windows.net/diffusion/dec-2021/"
HASHES_FILE = "hashes.json"
CHUNK = 1 << 20  # bytes per read while streaming
USER_AGENT = "glide-edu (python urllib)"

CLIP_KINDS = ("clip/image-enc", "clip/text-enc")
KINDS = (*GLIDE_KINDS, *CLIP_KINDS)
# A GLIDE UNet's kind follows from its input convolution's channel count (x, then conditioning channels).
_KIND_BY_IN_CHANNELS = {in_channels: kind for kind, (_, in_channels) in GLIDE_KINDS.items()}


# ------------------------------------------------------------------------------------------------ errors
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


# ---------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Checkpoint:
    """One downloadable checkpoint: where it lives and the preset its state dict must fit.

    ``kind`` is one of :data:`KINDS`; ``options`` are the reference's model options (GLIDE kinds, as in
    ``model_and_diffusion_defaults``) or its ``clip_config`` (CLIP kinds). ``sha256`` is None when unknown.
    """

    name: str
    file: str
    url: str
    kind: str
    options: Mapping[str, Any]
    sha256: str | None = None
    num_parameters: int | None = None
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))  # read-only, not shared
        if self.kind not in KINDS:
            raise ValueError(f"checkpoint {self.name!r}: unknown kind {self.kind!r}; expected one of {list(KINDS)}")
        if self.kind in GLIDE_KINDS:
            implied = _glide_kind(self.options)
            if implied != self.kind:
                raise ValueError(f"checkpoint {self.name!r}: options describe a {implied} model, not {self.kind}")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"checkpoint {self.name!r}: sha256 must be 64 lowercase hex digits")

    def build(self) -> nn.Module:
        """The (randomly initialised) model this checkpoint's state dict fits; honours ``torch.device``."""
        if self.kind in GLIDE_KINDS:
            return create_glide_model(dict(self.options))
        if self.kind == "clip/image-enc":
            return ImageEncoder(dict(self.options))
        return TextEncoder(dict(self.options))


def _glide_kind(options: Mapping[str, Any]) -> str:
    return {
        (False, False): "base",
        (True, False): "upsample",
        (False, True): "base-inpaint",
        (True, True): "upsample-inpaint",
    }[(bool(options.get("super_res")), bool(options.get("inpaint")))]


# The official options, as the reference's notebooks set them (model_and_diffusion_defaults() and
# model_and_diffusion_defaults_upsampler(), use_fp16 False). timestep_respacing only affects sampling.
_BASE_OPTIONS: dict[str, Any] = {
    "image_size": 64,
    "num_channels": 192,
    "num_res_blocks": 3,
    "channel_mult": "",
    "num_heads": 1,
    "num_head_channels": 64,
    "num_heads_upsample": -1,
    "attention_resolutions": "32,16,8",
    "dropout": 0.1,
    "text_ctx": 128,
    "xf_width": 512,
    "xf_layers": 16,
    "xf_heads": 8,
    "xf_final_ln": True,
    "xf_padding": True,
    "diffusion_steps": 1000,
    "noise_schedule": "squaredcos_cap_v2",
    "timestep_respacing": "100",
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "use_fp16": False,
    "cache_text_emb": False,
    "inpaint": False,
    "super_res": False,
}
_UPSAMPLE_OPTIONS: dict[str, Any] = {
    **_BASE_OPTIONS,
    "image_size": 256,
    "num_res_blocks": 2,
    "noise_schedule": "linear",
    "timestep_respacing": "fast27",
    "super_res": True,
}
# The noised CLIP's config.yaml.
_CLIP_CONFIG: dict[str, Any] = {
    "logit_scale": 100.0,
    "beta_schedule": "squaredcos_cap_v2",
    "n_timesteps": 1000,
    "image_size": 64,
    "patch_size": 4,
    "n_vocab": 65536,
    "max_text_len": 77,
    "n_embd": 512,
    "n_head_state_text": 64,
    "n_head_text": 8,
    "n_xf_blocks_text": 12,
    "n_head_state_image": 64,
    "n_head_image": 12,
    "n_xf_blocks_image": 12,
}


def _official(name: str, file: str, options: Mapping[str, Any], num_parameters: int, description: str) -> Checkpoint:
    return Checkpoint(name, file, BASE_URL + file, name, options, None, num_parameters, description)


CHECKPOINTS: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        _official("base", "base.pt", _BASE_OPTIONS, 385_030_726, "64×64 text-conditional diffusion model"),
        _official("upsample", "upsample.pt", _UPSAMPLE_OPTIONS, 398_361_286, "64→256 text-conditional upsampler"),
        _official(
            "base-inpaint", "base_inpaint.pt", {**_BASE_OPTIONS, "inpaint": True}, 385_037_638, "64×64 inpainting"
        ),
        _official(
            "upsample-inpaint",
            "upsample_inpaint.pt",
            {**_UPSAMPLE_OPTIONS, "inpaint": True},
            398_368_198,
            "64→256 inpainting upsampler",
        ),
        _official("clip/image-enc", "clip_image_enc.pt", _CLIP_CONFIG, 86_443_776, "noised CLIP image encoder"),
        _official("clip/text-enc", "clip_text_enc.pt", _CLIP_CONFIG, 71_679_488, "noised CLIP text encoder"),
    )
}


def _names(registry: Mapping[str, Checkpoint]) -> str:
    names = ", ".join(registry)
    if all(k in registry for k in CLIP_KINDS) and "clip" not in registry:
        names += "; load_checkpoint also takes 'clip' for both CLIP encoders"
    return names


def _entry_for(kind: str, registry: Mapping[str, Checkpoint]) -> Checkpoint:
    """The registry entry named ``kind``, else the first entry of that kind."""
    if kind in registry:
        return registry[kind]
    for entry in registry.values():
        if entry.kind == kind:
            return entry
    raise CheckpointError(f"no registered checkpoint of kind {kind!r}; known names: {_names(registry)}")


# ------------------------------------------------------------------------------------------------- cache
def default_cache_dir() -> Path:
    """``$GLIDE_EDU_CACHE``, else ``$XDG_CACHE_HOME/glide_edu``, else ``~/.cache/glide_edu`` (GPT-2's vocabulary
    goes into its ``vocab`` subfolder, see :func:`glide_edu.vocab.default_cache_dir`)."""
    return vocab_mod.cache_root()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_hashes(root: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((root / HASHES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _update_hashes(root: Path, key: str, record: dict[str, Any] | None) -> None:
    """Set (or with None remove) one entry of ``<root>/hashes.json``, written atomically."""
    data = _read_hashes(root)
    if record is None:
        if data.pop(key, None) is None:
            return
    else:
        data[key] = record
    tmp = root / f".{HASHES_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, root / HASHES_FILE)


def _record(path: Path, sha256: str, url: str) -> dict[str, Any]:
    st = path.stat()
    return {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "url": url}


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive lock on ``<path>.lock`` (POSIX) so that two processes do not write one download."""
    try:
        import fcntl
    except ImportError:  # Windows: no locking
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------------------------- transfer
class _Interrupted(Exception):
    """The connection ended before the announced length (resumable)."""


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _fetch_once(url: str, part: Path, desc: str, progress: bool, timeout: float) -> str:
    """Stream ``url`` into ``part`` (continuing it when the server honours Range); return the sha256."""
    from tqdm.auto import tqdm

    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the partial file is not a prefix the server can continue: start over
            part.unlink()
            return _fetch_once(url, part, desc, progress, timeout)
        raise DownloadError(f"HTTP {err.code} ({err.reason}) for {url}; check the name or URL") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"cannot reach {url} ({reason}); check your connection, or download the file yourself and pass its path"
        ) from None
    with resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if offset and resp.status == 206:
            match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", "").strip())
            if not match or int(match.group(1)) != offset:  # not the range asked for: start over
                resp.close()
                part.unlink()
                return _fetch_once(url, part, desc, progress, timeout)
        elif offset:  # 200: the server ignored Range and sends the whole file, so rewrite it from byte 0
            offset = 0
        total = None if length is None else offset + length
        digest = hashlib.sha256()
        if offset:
            with open(part, "rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
        bar = tqdm(
            total=total, initial=offset, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress
        )
        with bar, open(part, "ab" if offset else "wb") as out:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (http.client.IncompleteRead, OSError) as err:
                    raise _Interrupted(str(err) or type(err).__name__) from None
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Interrupted(f"connection closed after {size} of {total} bytes")
    if total is not None and size > total:
        part.unlink()
        raise DownloadError(f"{url} sent more bytes than announced ({size} > {total}); run again to restart")
    return digest.hexdigest()


def _fetch(url: str, dest: Path, desc: str, progress: bool, retries: int, timeout: float) -> str:
    """Download ``url`` to ``dest``'s ``.part`` file, resuming after interruptions; return its sha256."""
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            return _fetch_once(url, part, desc, progress, timeout)
        except _Interrupted as err:
            if attempt == retries:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"download of {url} interrupted ({err}); {kept} bytes kept in {part}, run again to resume"
                ) from None
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------------------- download
def _resolve_source(name_or_url: str | os.PathLike[str], registry: Mapping[str, Checkpoint]):
    """(registry entry or None, url or None, local path or None) for a name, URL or file path."""
    text = os.fspath(name_or_url)
    if isinstance(name_or_url, str) and text in registry:
        entry = registry[text]
        return entry, entry.url, None
    if _is_url(text):
        return None, text, None
    path = Path(text).expanduser()
    if path.is_file():
        return None, None, path
    raise CheckpointError(
        f"{text!r} is neither a known checkpoint name ({_names(registry)}) nor an existing file nor an "
        "http(s) URL; use one of those names, or pass the path of a file you downloaded"
    )


def _cache_key(entry: Checkpoint | None, url: str) -> str:
    """Where a download lives inside the cache folder (relative, '/'-separated)."""
    if entry is not None:
        return entry.file
    basename = Path(urllib.parse.urlparse(url).path).name or "download"
    return f"urls/{hashlib.sha256(url.encode()).hexdigest()[:16]}/{basename}"


def _checksum_message(what: str, got: str, expected: str, origin: str, fix: str) -> str:
    return f"{what} has sha256 {got[:16]}…, expected {expected[:16]}… ({origin}); {fix}"


def download(
    name_or_url: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    expected_sha256: str | None = None,
    *,
    registry: Mapping[str, Checkpoint] | None = None,
    retries: int = 3,
    timeout: float = 60.0,
) -> Path:
    """The local path of a checkpoint, downloading it into the cache when needed.

    ``name_or_url`` is a registry name (``"base"``, ``"clip/text-enc"``, …), an http(s) URL, or the path of
    a file you obtained yourself (verified against ``expected_sha256`` if given, then used in place).

    A download streams into ``<file>.part`` with a progress bar, resumes a ``.part`` left by an earlier
    interrupted call with an HTTP ``Range`` request (restarting when the server ignores it), retries an
    interrupted transfer up to ``retries`` times, and is renamed into place only once verified: against
    ``expected_sha256``, the registry's sha256 or the one recorded in ``<cache>/hashes.json``; when none
    is known, a registered checkpoint must pass a strict key/shape check against its preset and its sha256
    is then recorded. A cached file is returned without any request; one whose sha256 no longer matches is
    removed and :class:`ChecksumError` raised.
    """
    registry = CHECKPOINTS if registry is None else registry
    entry, url, local = _resolve_source(name_or_url, registry)
    expected = (expected_sha256 or (entry.sha256 if entry else None) or "").lower() or None
    if local is not None:
        if expected is not None:
            got = _sha256_file(local)
            if got != expected:
                raise ChecksumError(
                    _checksum_message(str(local), got, expected, "given", "check that it is the right file")
                )
        return local

    assert url is not None
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = _cache_key(entry, url)
    dest = root / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _lock(dest):
        recorded = _read_hashes(root).get(key) or {}
        origin = "given" if expected_sha256 else "from the checkpoint registry"
        if expected is None and recorded.get("sha256"):
            expected, origin = recorded["sha256"], f"recorded in {root / HASHES_FILE} on first use"
        if dest.is_file():
            _verify_cached(dest, root, key, url, entry, expected, origin, recorded)
            return dest
        part = dest.with_name(dest.name + ".part")
        got = _fetch(url, dest, dest.name, progress, retries, timeout)
        if expected is not None and got != expected:
            part.unlink()
            fix = "the download was removed; run again to retry"
            if origin.startswith("recorded"):
                fix += f" (if the file changed upstream on purpose, delete the entry {key!r} from that hashes.json)"
            raise ChecksumError(_checksum_message(f"download of {url}", got, expected, origin, fix))
        if expected is None and entry is not None:
            _accept_or_remove(part, entry, f"download of {url}")
        os.replace(part, dest)
        _update_hashes(root, key, _record(dest, got, url))
    return dest


def _verify_cached(
    dest: Path,
    root: Path,
    key: str,
    url: str,
    entry: Checkpoint | None,
    expected: str | None,
    origin: str,
    recorded: Mapping[str, Any],
) -> None:
    """Check a cached file (skipping the hash when size and mtime match a verified record)."""
    st = dest.stat()
    if (
        expected is not None
        and recorded.get("sha256") == expected
        and recorded.get("size") == st.st_size
        and recorded.get("mtime_ns") == st.st_mtime_ns
    ):
        return
    got = _sha256_file(dest)
    if expected is not None and got != expected:
        dest.unlink()
        _update_hashes(root, key, None)
        raise ChecksumError(
            _checksum_message(
                f"cached {dest}", got, expected, origin, "it was removed from the cache; run again to download it"
            )
        )
    if expected is None and entry is not None:  # e.g. a file copied into the cache by hand
        _accept_or_remove(dest, entry, f"cached {dest}")
    _update_hashes(root, key, _record(dest, got, url))


def _forget(path: Path, cache_dir: str | os.PathLike[str] | None) -> None:
    """Remove a cached file and its hashes.json record."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path.unlink(missing_ok=True)
    with contextlib.suppress(ValueError):
        _update_hashes(root, path.resolve().relative_to(root.resolve()).as_posix(), None)


def _accept_or_remove(path: Path, entry: Checkpoint, what: str) -> None:
    """Strict key/shape check of an unverified file against ``entry``'s preset; remove the file if it fails."""
    try:
        check_state_dict(read_state_dict(path, what), entry, what)
    except CheckpointError as err:
        path.unlink(missing_ok=True)
        raise type(err)(f"{err} [the file was removed from the cache]") from None


# ------------------------------------------------------------------------------------------ GPT-2 vocabulary
def download_gpt2_vocab(
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    source: str | os.PathLike[str] = vocab_mod.GPT2_URL,
    *,
    timeout: float = 60.0,
) -> vocab_mod.GPT2VocabPaths:
    """Fetch GPT-2's ``encoder.json`` and ``vocab.bpe`` into the folder :mod:`glide_edu.vocab` searches.

    ``cache_dir`` is the folder that receives the files (default: ``$GLIDE_EDU_VOCAB_DIR`` if set, else
    ``<checkpoint cache>/vocab``, e.g. ``$GLIDE_EDU_CACHE/vocab``; pass the same folder as ``vocab_dir=`` to
    the tokenizers otherwise).
    ``source`` is the public GPT-2 encodings URL, another base URL, or a local folder holding the two files
    (plain or ``.gz``; a missing or wrong file raises :class:`glide_edu.vocab.VocabError`). Files already
    present and valid are kept (no request). Every file is checked by sha256 before it is put in place.
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else vocab_mod.search_dirs()[0]
    folder.mkdir(parents=True, exist_ok=True)
    source_text = os.fspath(source)
    for spec in (vocab_mod.GPT2_ENCODER, vocab_mod.GPT2_MERGES):
        try:
            vocab_mod.find_vocab_file(spec, [folder])
            continue  # already there and valid
        except vocab_mod.VocabError as err:
            if "not found" not in str(err):
                raise  # a damaged or different file sits there: vocab.py's message says what to do
        dest = folder / spec.name
        if not _is_url(source_text):
            found = vocab_mod.find_vocab_file(spec, [Path(source_text).expanduser()])
            if found.resolve() != dest.resolve():
                tmp = dest.with_name(dest.name + ".part")
                tmp.write_bytes(vocab_mod.read_bytes(found))
                os.replace(tmp, dest)
            continue
        url = source_text.rstrip("/") + "/" + spec.name
        with _lock(dest):
            got = _fetch(url, dest, spec.name, progress, retries=3, timeout=timeout)
            part = dest.with_name(dest.name + ".part")
            if got != spec.sha256:
                part.unlink()
                raise ChecksumError(
                    _checksum_message(
                        f"download of {url}", got, spec.sha256, "GPT-2's published file", "removed; check the URL"
                    )
                )
            os.replace(part, dest)
    return vocab_mod.gpt2_vocab_paths(folder)


# -------------------------------------------------------------------------------------------------- reading
def _first_line(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def read_state_dict(path: str | os.PathLike[str], what: str | None = None) -> dict[str, Tensor]:
    """``torch.load(path, map_location="cpu", weights_only=True)`` (memory-mapped when possible), checked.

    Raises :class:`UnsafeCheckpointError` for a pickle that would run code, :class:`CorruptCheckpointError`
    for a truncated, damaged or foreign file, and :class:`WrongKindError` when it holds no state dict.
    """
    path = Path(path)
    what = what or str(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
    fix = "delete it and download it again"
    if size == 0:
        raise CorruptCheckpointError(f"{what} is empty; {fix}")
    if size >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        raise CorruptCheckpointError(
            f"{what} is a safetensors file, not a torch.save checkpoint; load it with safetensors.torch.load_file "
            "(or glide_edu.pretrained.load_small_checkpoint for the book's own checkpoints)"
        )
    is_zip = head[:4] == b"PK\x03\x04"
    if is_zip and not zipfile.is_zipfile(path):
        raise CorruptCheckpointError(f"{what} is truncated (its zip directory is missing, {size} bytes); {fix}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as err:  # torch raises many types for bad files; all mean the same here
        text = str(err)
        if "Weights only load failed" in text and re.search(r"GLOBAL|global", text):
            match = re.search(r"GLOBAL ([\w.]+)", text)
            reason = f"it names {match.group(1)}" if match else "it names a Python object"
            raise UnsafeCheckpointError(
                f"refused to load {what}: its pickle would import or call Python code ({reason}); only plain "
                "state dicts of tensors are accepted - if you trust the file, load it yourself with "
                "torch.load(weights_only=False) and torch.save its state_dict()"
            ) from None
        raise CorruptCheckpointError(
            f"{what} is not a readable torch.save checkpoint ({type(err).__name__}: {_first_line(text) or 'no detail'})"
            f"; the file is truncated, damaged or of another format - {fix}"
        ) from None
    if not isinstance(obj, Mapping):
        raise WrongKindError(
            f"{what} holds a {type(obj).__name__}, not a state dict; save model.state_dict() rather than the model"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        nested = [k for k in bad if isinstance(obj[k], Mapping)]
        hint = (
            f"it looks like a training checkpoint (entries {nested[:4]}); save the model's state dict alone"
            if nested
            else "expected a dict of tensors"
        )
        raise WrongKindError(
            f"{what} is not a plain state dict ({len(bad)} non-tensor entries, e.g. {bad[0]!r}); {hint}"
        )
    return dict(obj)


def detect_kind(state_dict: Mapping[str, Tensor]) -> tuple[str | None, str]:
    """(kind or None, the evidence) of a state dict: one of :data:`KINDS`, ``"clip"`` (both encoders), or None."""
    keys = set(state_dict)
    parts = {k.split(".", 1)[0] for k in keys if k != "logit_scale"}
    if parts == {"image_encoder", "text_encoder"}:
        return "clip", "image_encoder.* and text_encoder.* keys (a whole NoisedClip)"
    if "blocks.input.w_t" in keys or "blocks.input.patch_proj" in keys:
        return "clip/image-enc", "CLIP image-encoder keys (blocks.input.w_t, patch_proj)"
    if "blocks.input.w_voc" in keys:
        return "clip/text-enc", "CLIP text-encoder keys (blocks.input.w_voc)"
    weight = state_dict.get("input_blocks.0.0.weight")
    if isinstance(weight, Tensor) and weight.ndim == 4:
        in_channels = int(weight.shape[1])
        if "token_embedding.weight" not in keys:
            return None, f"a UNet without GLIDE's text transformer (input conv of {in_channels} channels)"
        kind = _KIND_BY_IN_CHANNELS.get(in_channels)
        return kind, f"its input convolution takes {in_channels} channels"
    sample = ", ".join(sorted(keys)[:3]) or "no keys"
    return None, f"no GLIDE or CLIP keys ({sample}…)"


def _load_hint(kind: str) -> str:
    if kind == "clip":
        return "load_checkpoint(path, kind='clip')"
    return f"load_checkpoint({kind!r}) (or kind={kind!r} for a file or URL)"


def check_state_dict(state_dict: Mapping[str, Tensor], entry: Checkpoint, what: str = "the checkpoint") -> None:
    """Raise :class:`WrongKindError` unless ``state_dict`` has exactly the keys and shapes of ``entry``'s model."""
    detected, evidence = detect_kind(state_dict)
    if detected != entry.kind:
        if detected is None:
            raise WrongKindError(
                f"{what} is not a {entry.kind} checkpoint: {evidence}; expected the file of {entry.name!r}"
            )
        raise WrongKindError(
            f"{what}: this looks like a {detected} checkpoint ({evidence}), not {entry.kind}; "
            f"load it as {_load_hint(detected)}"
        )
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in entry.build().state_dict().items()}
    _compare(state_dict, expected, entry, what)


def _compare(state_dict: Mapping[str, Tensor], expected: Mapping[str, tuple], entry: Checkpoint, what: str) -> None:
    missing = [k for k in expected if k not in state_dict]
    extra = [k for k in state_dict if k not in expected]
    shapes = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
    if not (missing or extra or shapes):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if extra:
        problems.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
    if shapes:
        k = shapes[0]
        problems.append(f"{len(shapes)} of other shape (e.g. {k}: {tuple(state_dict[k].shape)} vs {expected[k]})")
    raise WrongKindError(
        f"{what} is a {entry.kind} checkpoint but does not fit the {entry.name!r} preset ({'; '.join(problems)}); "
        "it was made with other options - pass registry={name: Checkpoint(..., options=<its options>)}"
    )


# -------------------------------------------------------------------------------------------------- loading
def _assign(
    model: nn.Module, state_dict: Mapping[str, Tensor], device: torch.device | str, dtype: torch.dtype | None
) -> nn.Module:
    """Load ``state_dict`` strictly into a meta-device ``model`` by assignment (no second allocation)."""
    targets = model.state_dict()
    converted = {}
    for key, value in state_dict.items():
        want = (dtype or targets[key].dtype) if value.is_floating_point() and key in targets else None
        converted[key] = value.to(device=device, dtype=want)
    model.load_state_dict(converted, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"internal error: {left[0]} was not loaded (still on the meta device)")
    return model.eval()


def _prepare(
    source: str | os.PathLike[str],
    kind: str | None,
    registry: Mapping[str, Checkpoint],
    cache_dir: str | os.PathLike[str] | None,
    progress: bool,
) -> tuple[Checkpoint | None, dict[str, Tensor], str]:
    """(entry or None for a whole-CLIP file, checked state dict, description) of a name, URL or path."""
    text = os.fspath(source)
    if isinstance(source, str) and text in registry:
        if kind is not None and kind != registry[text].kind:
            raise CheckpointError(f"kind={kind!r} contradicts {text!r} (a {registry[text].kind}); drop kind=")
        entry: Checkpoint | None = registry[text]
        path = download(text, cache_dir, progress, registry=registry)
        cached = True
    else:
        entry = None
        cached = _is_url(text)
        path = download(text, cache_dir, progress, registry=registry)
    what = text if entry is not None or not cached else f"{text} (cached at {path})"
    try:
        state_dict = read_state_dict(path, what)
        if entry is None:
            wanted = kind or detect_kind(state_dict)[0]
            if wanted is None:
                raise WrongKindError(
                    f"{what}: cannot tell which model this is ({detect_kind(state_dict)[1]}); pass kind= one of "
                    f"{[*KINDS, 'clip']}"
                )
            if wanted != "clip":
                entry = _entry_for(wanted, registry)
        if entry is not None:
            check_state_dict(state_dict, entry, what)
        else:
            _check_whole_clip(state_dict, registry, what)
    except (UnsafeCheckpointError, CorruptCheckpointError) as err:
        if not cached or not path.is_file():
            raise
        _forget(path, cache_dir)  # never keep a damaged or unsafe download in the cache
        raise type(err)(f"{err} [the file was removed from the cache]") from None
    return entry, state_dict, what


def _check_whole_clip(state_dict: Mapping[str, Tensor], registry: Mapping[str, Checkpoint], what: str) -> None:
    detected, evidence = detect_kind(state_dict)
    if detected != "clip":
        raise WrongKindError(f"{what}: this looks like a {detected} checkpoint ({evidence}), not a whole CLIP")
    image, text = _entry_for("clip/image-enc", registry), _entry_for("clip/text-enc", registry)
    for entry, prefix in ((image, "image_encoder."), (text, "text_encoder.")):
        part = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        check_state_dict(part, entry, f"{what} ({prefix[:-1]})")


def load_checkpoint(
    name_or_path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    *,
    kind: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    registry: Mapping[str, Checkpoint] | None = None,
) -> nn.Module:
    """The model of a checkpoint, in eval mode, with its weights loaded strictly.

    ``name_or_path``: a registry name (downloaded once, see :func:`download`); ``"clip"`` for both CLIP
    encoders (a :class:`~glide_edu.nn.clip.NoisedClip`); an http(s) URL; or a local file. For URLs and files
    the kind is read from the keys unless ``kind=`` names it (a registry name such as ``"upsample"``, or
    ``"clip"`` for a file holding a whole NoisedClip state dict). GLIDE kinds give the UNet of
    :func:`~glide_edu.nn.presets.create_glide_model`; ``"clip/image-enc"`` / ``"clip/text-enc"`` give the
    single encoder. The model is built on the ``meta`` device and the loaded tensors are assigned to it
    (memory-mapped from the file on CPU), so weights are never allocated twice. ``dtype`` converts the
    floating-point weights (plain ``.to``; the reference's fp16 mode keeps norms in float32).
    """
    registry = CHECKPOINTS if registry is None else registry
    if isinstance(name_or_path, str) and name_or_path == "clip" and "clip" not in registry:
        return load_clip(device=device, dtype=dtype, cache_dir=cache_dir, progress=progress, registry=registry)
    entry, state_dict, _ = _prepare(name_or_path, kind, registry, cache_dir, progress)
    if entry is None:  # a whole NoisedClip in one file
        image = _entry_for("clip/image-enc", registry)
        logit_scale = state_dict.pop("logit_scale", None)
        with torch.device("meta"):
            model = NoisedClip(dict(image.options))
        _assign(model, state_dict, device, dtype)
        if logit_scale is not None:
            model.logit_scale = float(logit_scale)
        return model
    with torch.device("meta"):
        model = entry.build()
    return _assign(model, state_dict, device, dtype)


def load_clip(
    image: str | os.PathLike[str] = "clip/image-enc",
    text: str | os.PathLike[str] = "clip/text-enc",
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    *,
    logit_scale: float | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    registry: Mapping[str, Checkpoint] | None = None,
) -> NoisedClip:
    """GLIDE's noised CLIP from its two released state dicts (names, URLs or paths), in eval mode.

    The logit scale is not in either file: it is log(100) (rounded to float32, as the reference keeps it)
    unless ``logit_scale`` (the log value) is given.
    """
    registry = CHECKPOINTS if registry is None else registry
    image_entry, image_sd, _ = _prepare(image, "clip/image-enc", registry, cache_dir, progress)
    text_entry, text_sd, _ = _prepare(text, "clip/text-enc", registry, cache_dir, progress)
    assert image_entry is not None and text_entry is not None
    if dict(image_entry.options) != dict(text_entry.options):
        raise CheckpointError(
            f"the CLIP encoders {image_entry.name!r} and {text_entry.name!r} are registered with different configs"
        )
    with torch.device("meta"):
        model = NoisedClip(dict(image_entry.options))
    _assign(model.image_encoder, image_sd, device, dtype)
    _assign(model.text_encoder, text_sd, device, dtype)
    if logit_scale is not None:
        model.logit_scale = float(logit_scale)
    return model.eval()
