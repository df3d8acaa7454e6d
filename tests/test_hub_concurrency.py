"""Parallel downloads into one cache folder: every download keeps its hashes.json record.

Each download holds a lock on its own file while it streams; the records of all downloads share one
``hashes.json``, so its read-modify-write needs a cache-wide lock. Without it, two downloads that finish
together both read the old records and the later write drops the other's entry. The downloads run as
threads of this process and as forked processes (two notebooks or two ``glide-edu`` commands).
"""

# ruff: noqa: F811 - the tests take the fixture imported from tests.test_hub (server) as an argument

from __future__ import annotations

import hashlib
import json
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from glide_edu import hub
from tests.test_hub import TIMEOUT, Served, server  # noqa: F401 - the local HTTP server fixture

PARALLEL = 12


def _serve_trial(served: Served, trial: int) -> dict[str, bytes]:
    """Twelve small files of distinct content for one trial, served at t<trial>/file<i>.bin."""
    bodies = {f"t{trial}/file{i}.bin": bytes([trial, i]) * (3000 + 97 * i) for i in range(PARALLEL)}
    served.files.update(bodies)
    return bodies


def _lost_records(served: Served, cache: Path, bodies: dict[str, bytes]) -> int:
    """How many of the trial's downloads have no record in the cache's hashes.json (checking those present)."""
    records = json.loads((cache / "hashes.json").read_text())
    for key, record in records.items():  # each record describes the file now in the cache
        assert hashlib.sha256((cache / key).read_bytes()).hexdigest() == record["sha256"]
    by_url = {record["url"]: record for record in records.values()}
    for name, body in bodies.items():
        record = by_url.get(served.url(name))
        if record is not None:
            assert record["sha256"] == hashlib.sha256(body).hexdigest() and record["size"] == len(body)
    assert not list(cache.glob(".hashes.json*"))  # no temporary file left behind
    return sum(served.url(name) not in by_url for name in bodies)


def test_parallel_thread_downloads_keep_every_record(server, tmp_path: Path) -> None:
    lost = []
    for trial in range(5):
        cache = tmp_path / f"cache{trial}"
        bodies = _serve_trial(server, trial)
        start = threading.Barrier(PARALLEL)

        def fetch(name: str, cache: Path = cache, start: threading.Barrier = start) -> Path:
            start.wait(timeout=TIMEOUT)  # all downloads begin (and so finish) together
            return hub.download(server.url(name), cache, progress=False, timeout=TIMEOUT)

        with ThreadPoolExecutor(PARALLEL) as pool:
            paths = dict(zip(bodies, pool.map(fetch, bodies), strict=True))  # re-raises any download's exception
        assert all(paths[name].read_bytes() == body for name, body in bodies.items())
        lost.append(_lost_records(server, cache, bodies))
    assert lost == [0] * len(lost), f"hashes.json records lost per trial: {lost}"


def _fetch_in_child(url: str, cache: str, start, failures) -> None:
    try:
        start.wait(timeout=TIMEOUT)
        hub.download(url, cache, progress=False, timeout=TIMEOUT)
    except BaseException as err:  # reported to the parent, which fails the test
        failures.put(f"{type(err).__name__}: {err}")


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork (POSIX)")
def test_parallel_process_downloads_keep_every_record(server, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")  # children share the imported modules; the server stays here
    lost = []
    for trial in range(3):
        cache = tmp_path / f"cache{trial}"
        bodies = _serve_trial(server, trial)
        start, failures = ctx.Barrier(PARALLEL), ctx.Queue()
        children = [
            ctx.Process(target=_fetch_in_child, args=(server.url(name), str(cache), start, failures)) for name in bodies
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(timeout=6 * TIMEOUT)
        assert [child.exitcode for child in children] == [0] * PARALLEL
        assert failures.empty(), failures.get()
        lost.append(_lost_records(server, cache, bodies))
    assert lost == [0] * len(lost), f"hashes.json records lost per trial: {lost}"
