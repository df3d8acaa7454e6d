"""The checkpoint cache folder: where it is, its locks, and its ``hashes.json`` records.

``<cache>/hashes.json`` maps each cached file (its path relative to the cache, e.g. ``base.pt``) to a record
``{"sha256", "size", "mtime_ns", "url"}``. Downloads into one cache may run at the same time (threads or
processes): each holds a lock on its own file (``<file>.lock``) while it streams, and every change of
``hashes.json`` holds the cache-wide lock ``hashes.json.lock`` around its read-modify-write, then replaces
the file atomically, so no record is ever lost and no reader sees a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from glide_edu import fileio
from glide_edu.fileio import atomic_write_text
from glide_edu.hub.errors import CacheError, os_message

__all__ = ["HASHES_FILE", "default_cache_dir"]

HASHES_FILE = "hashes.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DELETE_FIX = "delete it (the cached files are then verified again on their next use)"


def default_cache_dir() -> Path:
    """The checkpoints' cache folder: glide_edu's cache root itself (:func:`glide_edu.fileio.cache_root`).

    That is ``$GLIDE_EDU_CACHE``, else ``$XDG_CACHE_HOME/glide_edu``, else ``~/.cache/glide_edu`` — where
    earlier versions cached them, so existing downloads are found; GPT-2's vocabulary goes into its ``vocab``
    sub-folder (:func:`glide_edu.vocab.vocab_cache_dir`).
    """
    return fileio.cache_root()


def cache_folder(cache_dir: str | os.PathLike[str] | None) -> Path:
    """``cache_dir`` (``~`` expanded), or :func:`default_cache_dir` when it is None."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def cache_error(root: Path, err: OSError) -> CacheError:
    """The one-line :class:`CacheError` for a file-system failure inside the cache folder ``root``."""
    return CacheError(
        f"cannot use the cache folder {root} ({os_message(err)}); make it writable or free some space, "
        f"or pass cache_dir= (or set {fileio.CACHE_ENV_VAR} to) another folder"
    )


# ------------------------------------------------------------------------------------------------- locks
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (created if needed) for the ``with`` block.

    POSIX ``flock`` locks exclude other processes and, since each call opens the file anew, other threads
    of this process too. Where there is no ``fcntl`` (Windows) only the threads of this process are
    excluded.
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        import fcntl
    except ImportError:  # Windows
        with _THREAD_LOCKS_GUARD:
            lock = _THREAD_LOCKS.setdefault(str(lock_path.absolute()), threading.Lock())
        with lock:
            yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------- hashes.json
def read_records(root: Path) -> dict[str, dict[str, Any]]:
    """The records of ``<root>/hashes.json`` ({} when there is none yet); a damaged file is a :class:`CacheError`."""
    path = root / HASHES_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise cache_error(root, err) from None
    try:
        data = json.loads(text)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise CacheError(f"{path} is damaged (not JSON: {err}); {_DELETE_FIX}") from None
    bad = _bad_record(data)
    if bad:
        raise CacheError(f"{path} is damaged ({bad}); {_DELETE_FIX}")
    return data


def _bad_record(data: Any) -> str | None:
    """What is wrong with the parsed content of a hashes.json, or None when it is well-formed."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, expected an object of records"
    for key, record in data.items():
        if not isinstance(record, dict):
            return f"the entry {key!r} is not a record"
        if not isinstance(record.get("sha256"), str) or not _SHA256.fullmatch(record["sha256"]):
            return f"the entry {key!r} has no valid sha256"
        for name in ("size", "mtime_ns"):
            if name in record and not isinstance(record[name], int):
                return f"the entry {key!r} has a non-integer {name}"
    return None


def update_record(root: Path, key: str, record: dict[str, Any] | None) -> None:
    """Set (or with None remove) the record ``key`` of ``<root>/hashes.json``.

    The read-modify-write holds the cache-wide lock and the file is replaced atomically, so records set
    at the same time by other threads or processes are kept.
    """
    path = root / HASHES_FILE
    try:
        with file_lock(path):
            data = read_records(root)
            if record is None:
                if data.pop(key, None) is None:
                    return
            else:
                data[key] = record
            atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError as err:
        raise cache_error(root, err) from None


def make_record(path: Path, sha256: str, url: str) -> dict[str, Any]:
    """The hashes.json record of the cached file ``path`` (its sha256, size, mtime and origin)."""
    st = path.stat()
    return {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "url": url}


def forget(path: Path, cache_dir: str | os.PathLike[str] | None) -> None:
    """Remove the cached file ``path`` and its hashes.json record (a file outside the cache is only removed)."""
    root = cache_folder(cache_dir)
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        raise cache_error(root, err) from None
    try:
        key = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:  # not inside the cache: no record to remove
        return
    update_record(root, key, None)
