"""Every failure of glide_edu.hub is a CheckpointError (subclass) with a one-line message naming the fix.

Covers the cases tests/test_hub.py does not: an unusable cache folder, a damaged hashes.json, malformed URLs
and non-HTTP answers, missing paths, bad ``kind=`` / ``expected_sha256=`` arguments, and the GPT-2
vocabulary's file problems (which are also :class:`glide_edu.vocab.VocabError`).
"""

# ruff: noqa: F811 - the tests take the fixtures imported from tests.test_hub (server, tiny) as arguments

from __future__ import annotations

import errno
import gzip
import json
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from glide_edu import hub, vocab
from glide_edu.hub import cache as hub_cache
from tests.test_hub import (  # noqa: F401 - server and tiny are fixtures
    TIMEOUT,
    _state_bytes,
    fetch,
    listing,
    one_line,
    registry,
    server,
    sha,
    tiny,
)


# ------------------------------------------------------------------------------------------ cache folder
def test_a_cache_folder_blocked_by_a_file_is_a_cache_error(server, tiny, tmp_path) -> None:
    server.files["base.pt"] = _state_bytes(tiny["base"])
    blocked = tmp_path / "cache"
    blocked.write_text("not a folder")
    with pytest.raises(hub.CacheError) as err:
        fetch(server, blocked)
    text = one_line(err)
    assert str(blocked) in text and "cache_dir=" in text and "GLIDE_EDU_CACHE" in text
    assert server.requests == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_cache_is_a_cache_error(server, tiny, tmp_path) -> None:
    server.files["base.pt"] = _state_bytes(tiny["base"])
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        with pytest.raises(hub.CacheError) as err:
            fetch(server, cache)
    finally:
        cache.chmod(0o755)
    assert "Permission denied" in one_line(err) and "writable" in str(err.value)


def test_a_failed_hashes_json_write_is_a_cache_error_and_recovers(server, tiny, tmp_path, monkeypatch) -> None:
    body = _state_bytes(tiny["base"])
    server.files["base.pt"] = body

    def disk_full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(hub_cache, "atomic_write_text", disk_full)
    with pytest.raises(hub.CacheError) as err:
        fetch(server, tmp_path)
    assert "No space left on device" in one_line(err) and "free some space" in str(err.value)
    monkeypatch.undo()
    assert fetch(server, tmp_path).read_bytes() == body  # the complete file is verified and recorded now
    assert json.loads((tmp_path / "hashes.json").read_text())["base.pt"]["sha256"] == sha(body)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "a JSON list"),
        ('{"base.pt": "abc"}', "not a record"),
        ('{"base.pt": {"sha256": "xyz", "size": 3}}', "no valid sha256"),
        ('{"base.pt": {"sha256": "' + "a" * 64 + '", "size": "3"}}', "non-integer size"),
    ],
)
def test_a_damaged_hashes_json_is_a_cache_error_naming_the_fix(content, problem, server, tiny, tmp_path) -> None:
    body = _state_bytes(tiny["base"])
    server.files["base.pt"] = body
    fetch(server, tmp_path)
    (tmp_path / "hashes.json").write_text(content)
    with pytest.raises(hub.CacheError) as err:
        fetch(server, tmp_path)
    text = one_line(err)
    assert str(tmp_path / "hashes.json") in text and problem in text and "delete it" in text
    assert (tmp_path / "base.pt").read_bytes() == body  # a damaged record never removes a cached file
    (tmp_path / "hashes.json").unlink()  # the fix the message names: the cached file is verified again
    assert fetch(server, tmp_path).read_bytes() == body and len(server.requests) == 1
    assert json.loads((tmp_path / "hashes.json").read_text())["base.pt"]["sha256"] == sha(body)


# --------------------------------------------------------------------------------------------- network
@pytest.mark.parametrize(
    "url, problem",
    [("http://127.0.0.1:notaport/x.pt", "Port could not be cast"), ("http://[::1/x.pt", "Invalid IPv6 URL")],
    ids=["port", "ipv6"],
)
def test_a_malformed_url_is_refused_before_any_request(url, problem, tmp_path) -> None:
    with pytest.raises(hub.CheckpointError) as err:
        hub.load_checkpoint(url, cache_dir=tmp_path, progress=False)
    assert f"{url!r} is not a valid URL ({problem}" in one_line(err)
    assert listing(tmp_path) == []


def test_a_url_without_a_host_is_a_download_error(tmp_path) -> None:
    with pytest.raises(hub.DownloadError) as err:
        hub.download("http:///x.pt", tmp_path, progress=False, timeout=TIMEOUT)
    assert "no host given" in one_line(err) and "check your connection and the URL" in str(err.value)


@pytest.fixture
def not_http() -> Iterator[str]:
    """A server on 127.0.0.1 that answers every connection with a line that is not HTTP."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:  # timeout: look at the stop flag again
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def test_a_server_that_does_not_speak_http_is_a_download_error(not_http, tmp_path) -> None:
    with pytest.raises(hub.DownloadError) as err:
        hub.download(f"{not_http}/x.pt", tmp_path, progress=False, timeout=TIMEOUT)
    assert "cannot reach" in one_line(err) and "NOT HTTP" in str(err.value)


# ------------------------------------------------------------------------------------- files and arguments
def test_a_missing_path_is_a_checkpoint_error(tmp_path) -> None:
    missing = tmp_path / "nowhere" / "base.pt"
    with pytest.raises(hub.CheckpointError) as err:
        hub.read_state_dict(missing)
    assert f"{missing} does not exist" in one_line(err)
    for call in (lambda: hub.load_checkpoint(missing), lambda: hub.download(missing)):
        with pytest.raises(hub.CheckpointError) as err:
            call()
        assert str(missing) in one_line(err) and "nor an existing file" in str(err.value)


def test_a_folder_given_as_a_file_is_a_checkpoint_error(tmp_path) -> None:
    with pytest.raises(hub.CheckpointError) as err:
        hub.read_state_dict(tmp_path)
    assert "cannot read" in one_line(err) and "Is a directory" in str(err.value)


def test_a_wrong_or_contradicting_kind_is_a_checkpoint_error(tiny, tmp_path) -> None:
    with pytest.raises(hub.CheckpointError) as err:
        hub.load_checkpoint("base", kind="upsample", cache_dir=tmp_path)
    assert "contradicts 'base'" in one_line(err) and "drop kind=" in str(err.value)
    path = tmp_path / "base.pt"
    path.write_bytes(_state_bytes(tiny["base"]))
    with pytest.raises(hub.CheckpointError) as err:
        hub.load_checkpoint(path, kind="bsae", registry=registry())
    assert "no registered checkpoint of kind 'bsae'" in one_line(err) and "upsample-inpaint" in str(err.value)
    assert listing(tmp_path) == ["base.pt"]  # nothing was downloaded


def test_a_malformed_expected_sha256_is_refused_before_any_request(server, tiny, tmp_path) -> None:
    server.files["base.pt"] = _state_bytes(tiny["base"])
    with pytest.raises(hub.CheckpointError) as err:
        fetch(server, tmp_path, expected_sha256="abc123")
    assert "64 hex digits" in one_line(err)
    assert server.requests == [] and listing(tmp_path) == []
    assert fetch(server, tmp_path, expected_sha256=sha(server.files["base.pt"]).upper()).is_file()  # any case


# ------------------------------------------------------------------------------------------ GPT-2 vocabulary
def test_vocab_file_problems_are_checkpoint_and_vocab_errors(tmp_path) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(hub.VocabFileError) as err:
        hub.download_gpt2_vocab(tmp_path / "dest", source=tmp_path / "src")
    assert isinstance(err.value, hub.CheckpointError) and isinstance(err.value, vocab.VocabError)
    assert "encoder.json" in one_line(err) and "not found" in str(err.value)
    # a damaged gzip already in the folder: its sha256 cannot be computed (zlib's error, now a VocabFileError)
    data = bytearray(gzip.compress(b'{"!": 0}' * 5000))
    data[20:40] = bytes(b ^ 0xFF for b in data[20:40])
    (tmp_path / "dest" / "encoder.json.gz").write_bytes(bytes(data))
    with pytest.raises(hub.VocabFileError) as err:
        hub.download_gpt2_vocab(tmp_path / "dest", source=tmp_path / "src")
    assert "cannot read" in one_line(err) and "delete it" in str(err.value)


def test_a_vocab_folder_blocked_by_a_file_is_a_cache_error(tmp_path) -> None:
    (tmp_path / "vocab").write_text("not a folder")
    with pytest.raises(hub.CacheError) as err:
        hub.download_gpt2_vocab(tmp_path / "vocab", source=tmp_path)
    assert str(tmp_path / "vocab") in one_line(err)


def test_every_hub_error_is_a_checkpoint_error() -> None:
    errors = [getattr(hub, name) for name in hub.__all__ if name.endswith("Error")]
    assert len(errors) == 8 and all(issubclass(e, hub.CheckpointError) for e in errors)
