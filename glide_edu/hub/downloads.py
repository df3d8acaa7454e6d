"""Downloads into the checkpoint cache: streamed with a progress bar, resumed with HTTP Range, verified by sha256.

A download streams into ``<file>.part`` (a tqdm progress bar shows it). When a transfer is cut off, the
``.part`` file is kept and the next attempt asks the server for the rest with an HTTP ``Range`` request
(starting over when the server sends the whole file instead); a 1.5 GB checkpoint is never fetched twice
because of one dropped connection. Only a complete file whose sha256 is verified is renamed into place, and
its record goes into ``<cache>/hashes.json`` (see :mod:`glide_edu.hub.cache`).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from glide_edu import vocab as vocab_mod
from glide_edu.fileio import atomic_write_bytes, sha256_file
from glide_edu.hub.cache import (
    HASHES_FILE,
    cache_error,
    cache_folder,
    file_lock,
    make_record,
    read_records,
    update_record,
)
from glide_edu.hub.errors import CheckpointError, ChecksumError, DownloadError, VocabFileError, one_line, os_message
from glide_edu.hub.registry import CHECKPOINTS, Checkpoint, names_hint

__all__ = ["download", "download_gpt2_vocab"]

CHUNK = 1 << 20  # bytes per read while streaming
USER_AGENT = "glide-edu (python urllib)"
_SHA256 = re.compile(r"[0-9a-f]{64}")


# ----------------------------------------------------------------------------------------------- transfer
class _Interrupted(Exception):
    """The connection ended before the announced length (resumable)."""


def is_url(text: str) -> bool:
    """Whether ``text`` is an http(s) URL (anything else is a registry name or a file path)."""
    return text.startswith(("http://", "https://"))


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _fetch_once(url: str, part: Path, desc: str, progress: bool, timeout: float) -> None:
    """Stream ``url`` into ``part``, continuing it when the server honours Range; raise _Interrupted if cut off."""
    from tqdm.auto import tqdm

    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:  # the partial file is not a prefix the server can continue: start over
            part.unlink()
            return _fetch_once(url, part, desc, progress, timeout)
        raise DownloadError(f"HTTP {err.code} ({one_line(err.reason)}) for {url}; check the name or URL") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
        reason = one_line(getattr(err, "reason", None) or err or type(err).__name__)  # InvalidURL: bad port
        raise DownloadError(
            f"cannot reach {url} ({reason}); check your connection and the URL, or download the file yourself and "
            "pass its path"
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
        bar = tqdm(
            total=total, initial=offset, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress
        )
        with bar, open(part, "ab" if offset else "wb") as out:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (http.client.HTTPException, OSError) as err:  # IncompleteRead, reset, timeout
                    raise _Interrupted(one_line(err) or type(err).__name__) from None
                if not chunk:
                    break
                out.write(chunk)  # an OSError here (disk full) is the cache's problem, not the network's
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Interrupted(f"connection closed after {size} of {total} bytes")
    if total is not None and size > total:
        part.unlink()
        raise DownloadError(f"{url} sent more bytes than announced ({size} > {total}); run again to restart")


def _fetch(url: str, dest: Path, desc: str, progress: bool, retries: int, timeout: float) -> str:
    """Download ``url`` to ``dest``'s ``.part`` file, resuming after interruptions; return its sha256."""
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, desc, progress, timeout)
            return sha256_file(part)
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
    if is_url(text):
        try:
            _ = urllib.parse.urlsplit(text).port  # reading the port validates the host and the port
        except ValueError as err:
            raise CheckpointError(f"{text!r} is not a valid URL ({one_line(err)}); check it") from None
        return None, text, None
    path = Path(text).expanduser()
    try:
        if path.is_file():
            return None, None, path
    except OSError as err:  # e.g. a folder on the way that may not be searched
        raise CheckpointError(
            f"cannot look at {text!r} ({os_message(err)}); check the path and its permissions"
        ) from None
    raise CheckpointError(
        f"{text!r} is neither a known checkpoint name ({names_hint(registry)}) nor an existing file nor an "
        "http(s) URL; use one of those names, or pass the path of a file you downloaded"
    )


def _cache_key(entry: Checkpoint | None, url: str) -> str:
    """Where a download lives inside the cache folder (relative, '/'-separated)."""
    if entry is not None:
        return entry.file
    basename = Path(urllib.parse.urlparse(url).path).name or "download"
    return f"urls/{hashlib.sha256(url.encode()).hexdigest()[:16]}/{basename}"


def checksum_message(what: str, got: str, expected: str, origin: str, fix: str) -> str:
    """The one-line message of a :class:`ChecksumError`."""
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
    ``cache_dir`` is the folder the files go in (default :func:`~glide_edu.hub.default_cache_dir`).

    A download streams into ``<file>.part`` with a progress bar, resumes a ``.part`` left by an earlier
    interrupted call with an HTTP ``Range`` request (restarting when the server ignores it), retries an
    interrupted transfer up to ``retries`` times, and is renamed into place only once verified: against
    ``expected_sha256``, the registry's sha256 or the one recorded in ``<cache>/hashes.json``; when none
    is known, a registered checkpoint must pass a strict key/shape check against its preset and its sha256
    is then recorded. A cached file is returned without any request; one whose sha256 no longer matches is
    removed and :class:`ChecksumError` raised. Every failure is a :class:`CheckpointError`: an unknown name
    or missing file, :class:`DownloadError` (network, HTTP status, interrupted), :class:`ChecksumError`,
    :class:`CacheError` (cache folder not writable, disk full, damaged hashes.json), or the errors of the
    key/shape check (:class:`WrongKindError`, :class:`CorruptCheckpointError`, :class:`UnsafeCheckpointError`).
    """
    registry = CHECKPOINTS if registry is None else registry
    if expected_sha256 is not None and not _SHA256.fullmatch(expected_sha256.lower()):
        raise CheckpointError(
            f"expected_sha256={expected_sha256!r} is not a sha256; pass its 64 hex digits (as sha256sum prints them)"
        )
    entry, url, local = _resolve_source(name_or_url, registry)
    expected = (expected_sha256 or (entry.sha256 if entry else None) or "").lower() or None
    if local is not None:
        if expected is not None:
            try:
                got = sha256_file(local)
            except OSError as err:
                raise CheckpointError(f"cannot read {local} ({os_message(err)}); check its permissions") from None
            if got != expected:
                raise ChecksumError(
                    checksum_message(str(local), got, expected, "given", "check that it is the right file")
                )
        return local
    assert url is not None
    root = cache_folder(cache_dir)
    origin = "given" if expected_sha256 else "from the checkpoint registry"
    try:
        return _download_to_cache(
            url, root, _cache_key(entry, url), entry, expected, origin, progress, retries, timeout
        )
    except OSError as err:  # network errors are DownloadErrors already: this is the local file system
        raise cache_error(root, err) from None


def _download_to_cache(
    url: str,
    root: Path,
    key: str,
    entry: Checkpoint | None,
    expected: str | None,
    origin: str,
    progress: bool,
    retries: int,
    timeout: float,
) -> Path:
    """Return ``root/key``, verified if cached, else fetched, verified and recorded (under the file's lock)."""
    dest = root / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest):
        recorded = read_records(root).get(key) or {}
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
            raise ChecksumError(checksum_message(f"download of {url}", got, expected, origin, fix))
        if expected is None and entry is not None:
            _accept_or_remove(part, entry, f"download of {url}")
        os.replace(part, dest)
        update_record(root, key, make_record(dest, got, url))
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
    got = sha256_file(dest)
    if expected is not None and got != expected:
        dest.unlink()
        update_record(root, key, None)
        raise ChecksumError(
            checksum_message(
                f"cached {dest}", got, expected, origin, "it was removed from the cache; run again to download it"
            )
        )
    if expected is None and entry is not None:  # e.g. a file copied into the cache by hand
        _accept_or_remove(dest, entry, f"cached {dest}")
    update_record(root, key, make_record(dest, got, url))


def _accept_or_remove(path: Path, entry: Checkpoint, what: str) -> None:
    """Strict key/shape check of an unverified file against ``entry``'s preset; remove the file if it fails."""
    from glide_edu.hub.loading import check_state_dict, read_state_dict  # loading imports this module

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
    """Fetch GPT-2's ``encoder.json`` and ``vocab.bpe`` into a vocabulary folder; return their verified paths.

    ``cache_dir`` is the folder that receives the two files. Default: ``$GLIDE_EDU_VOCAB_DIR`` if set, else
    :func:`glide_edu.vocab.vocab_cache_dir` (``<cache root>/vocab``), which is where the tokenizers look
    by default; files put elsewhere are found by passing the same folder as ``cache_dir=`` (or
    ``vocab_dir=``) to :func:`glide_edu.vocab.gpt2_vocab_paths`.
    ``source`` is the public GPT-2 encodings URL, another base URL, or a local folder holding the two files
    (plain or ``.gz``). Files already present and valid are kept (no request). Every file is checked by
    sha256 before it is put in place.

    Failures raise a :class:`CheckpointError` subclass: :class:`DownloadError`, :class:`ChecksumError` (a download
    with other content), :class:`CacheError` (the folder cannot be written), and :class:`VocabFileError`
    (also a :class:`glide_edu.vocab.VocabError`) for a file missing from a local ``source`` or a
    different file already sitting in the folder.
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else vocab_mod.search_dirs()[0]
    try:
        _fill_vocab_folder(folder, os.fspath(source), progress, timeout)
        return vocab_mod.gpt2_vocab_paths(folder)
    except VocabFileError:
        raise
    except vocab_mod.VocabError as err:
        raise VocabFileError(str(err)) from None
    except OSError as err:
        raise cache_error(folder, err) from None


def _fill_vocab_folder(folder: Path, source: str, progress: bool, timeout: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for spec in (vocab_mod.GPT2_ENCODER, vocab_mod.GPT2_MERGES):
        if _vocab_file_present(spec, folder):
            continue
        dest = folder / spec.name
        if not is_url(source):
            found = vocab_mod.find_vocab_file(spec, [Path(source).expanduser()])
            if found.resolve() != dest.resolve():
                atomic_write_bytes(dest, vocab_mod.read_bytes(found))
            continue
        url = source.rstrip("/") + "/" + spec.name
        with file_lock(dest):
            if _vocab_file_present(spec, folder):  # another process fetched it while we waited for the lock
                continue
            got = _fetch(url, dest, spec.name, progress, retries=3, timeout=timeout)
            part = dest.with_name(dest.name + ".part")
            if got != spec.sha256:
                part.unlink()
                raise ChecksumError(
                    checksum_message(
                        f"download of {url}", got, spec.sha256, "GPT-2's published file", "removed; check the URL"
                    )
                )
            os.replace(part, dest)


def _vocab_file_present(spec: vocab_mod.VocabFile, folder: Path) -> bool:
    """Whether ``folder`` holds a valid copy of ``spec`` (a different file there raises VocabError)."""
    try:
        vocab_mod.find_vocab_file(spec, [folder])
    except vocab_mod.VocabNotFoundError:
        return False
    return True
