"""glide_edu.hub against a real HTTP server on 127.0.0.1 serving tiny checkpoints in the official format.

The official files cannot be downloaded here, so each test registers tiny models of the same kinds
(``registry=``) whose URLs point at a local ``http.server``. The server honours ``Range`` (or ignores it
on request), can drop the connection part-way through a response, and logs every request.
Tests marked "(shared)" use ../shared and skip cleanly without it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import pickle
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from glide_edu import hub, vocab
from glide_edu.nn.clip import NoisedClip, create_clip_model
from glide_edu.nn.presets import create_glide_model
from glide_edu.pipelines.tiny import TINY_CLIP_CONFIG
from tests.reference_data import assert_matches, fixture, shared_path

# The tiny options of the reference fixtures (fixtures/base/meta.json, fixtures/clip/meta.json).
TINY_OPTIONS = {
    "image_size": 16,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1,2",
    "num_heads": 1,
    "num_head_channels": 16,
    "num_heads_upsample": -1,
    "attention_resolutions": "16,8",
    "dropout": 0.1,
    "text_ctx": 16,
    "xf_width": 8,
    "xf_layers": 2,
    "xf_heads": 2,
    "xf_final_ln": True,
    "xf_padding": True,
    "diffusion_steps": 1000,
    "noise_schedule": "squaredcos_cap_v2",
    "timestep_respacing": "",
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "use_fp16": False,
    "cache_text_emb": False,
    "inpaint": False,
    "super_res": False,
}
TINY_CLIP = TINY_CLIP_CONFIG  # the library's tiny noised-CLIP options (glide_edu.pipelines.tiny)
FLAGS = {
    "base": {},
    "upsample": {"super_res": True},
    "base-inpaint": {"inpaint": True},
    "upsample-inpaint": {"super_res": True, "inpaint": True},
}
TIMEOUT = 10.0  # seconds; every transfer in these tests is bounded by it


# ------------------------------------------------------------------------------------------- the server
@dataclass
class Served:
    """What the test server serves and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    sent: list[int] = field(default_factory=list)  # body bytes written per request
    ignore_range: bool = False
    wrong_range: bool = False  # answer a Range request with 206 for the whole file (a broken server)
    drops_left: int = 0  # the next N responses are cut off ...
    drop_after: int = 0  # ... after this many body bytes
    lock: threading.Lock = field(default_factory=threading.Lock)

    base: str = ""  # http://127.0.0.1:<port>

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: returning early closes the connection

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        state: Served = self.server.state  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        with state.lock:
            state.requests.append((self.path, rng))
            body = state.files.get(self.path.lstrip("/"))
            drop = state.drops_left > 0
            state.drops_left -= int(drop)
        if body is None:
            self.send_error(404, "Not Found")
            state.sent.append(0)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if match and state.wrong_range:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(body)}")
        elif match and not state.ignore_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                state.sent.append(0)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if drop:
            payload = payload[: state.drop_after]
        self.wfile.write(payload)
        self.wfile.flush()
        state.sent.append(len(payload))

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Served]:
    state = Served()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = state  # type: ignore[attr-defined]
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# ----------------------------------------------------------------------------------------- tiny models
def _state_bytes(state_dict: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny() -> dict[str, dict[str, torch.Tensor]]:
    """Plain state dicts (like the official files) of tiny models of all six kinds, deterministic weights."""
    torch.manual_seed(0)
    out = {}
    for kind, flags in FLAGS.items():
        model = create_glide_model({**TINY_OPTIONS, **flags})
        with torch.no_grad():  # the reference leaves these embeddings uninitialised: give them values
            model.positional_embedding.normal_()
            model.padding_embedding.normal_()
        out[kind] = {k: v.clone() for k, v in model.state_dict().items()}
    clip = create_clip_model(TINY_CLIP)
    with torch.no_grad():
        for p in clip.parameters():
            p.normal_(0, 0.02)
    out["clip/image-enc"] = {k: v.clone() for k, v in clip.image_encoder.state_dict().items()}
    out["clip/text-enc"] = {k: v.clone() for k, v in clip.text_encoder.state_dict().items()}
    return out


def registry(served: Served | None = None, sha256: dict[str, str] | None = None) -> dict[str, hub.Checkpoint]:
    """The official registry with tiny options and URLs on the test server."""
    out = {}
    for name, entry in hub.CHECKPOINTS.items():
        options = TINY_CLIP if name.startswith("clip/") else {**TINY_OPTIONS, **FLAGS[name]}
        url = served.url(entry.file) if served else f"http://127.0.0.1:9/{entry.file}"
        out[name] = hub.Checkpoint(name, entry.file, url, entry.kind, options, (sha256 or {}).get(name))
    return out


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text, text
    return text


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def fetch(served: Served, cache: Path, name: str = "base", **kwargs):
    kwargs.setdefault("progress", False)
    return hub.download(name, cache, registry=registry(served), timeout=TIMEOUT, **kwargs)


# ------------------------------------------------------------------------------------------- registry
def test_registry_holds_the_six_official_checkpoints() -> None:
    reg = hub.CHECKPOINTS
    assert list(reg) == ["base", "upsample", "base-inpaint", "upsample-inpaint", "clip/image-enc", "clip/text-enc"]
    files = ["base.pt", "upsample.pt", "base_inpaint.pt", "upsample_inpaint.pt", "clip_image_enc.pt"]
    assert [e.file for e in reg.values()] == [*files, "clip_text_enc.pt"]
    for name, entry in reg.items():
        assert entry.kind == name and entry.sha256 is None
        assert entry.url == "https://openaipublic.blob.core.windows.net/diffusion/dec-2021/" + entry.file
        with torch.device("meta"):  # allocates nothing
            model = entry.build()
        assert sum(p.numel() for p in model.parameters()) == entry.num_parameters
    with pytest.raises(TypeError):
        reg["base"].options["image_size"] = 32  # read-only


def test_registry_matches_the_reference_manifests() -> None:  # (shared)
    folder = shared_path() / "reference" / "glide_text2im" / "manifests"
    manifests = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    assert sorted(m["checkpoint_name"] for m in manifests) == sorted(hub.CHECKPOINTS)
    for m in manifests:
        entry = hub.CHECKPOINTS[m["checkpoint_name"]]
        assert (entry.file, entry.url) == (m["checkpoint_file"], m["checkpoint_url"])
        assert dict(entry.options) == m.get("options", m.get("clip_config"))
        assert entry.num_parameters == m["total_parameters"]
        with torch.device("meta"):
            got = {k: list(v.shape) for k, v in entry.build().state_dict().items()}
        assert got == {k: shape for k, shape, _ in m["state_dict"]}
        sd = {k: torch.empty(shape, device="meta") for k, shape, _ in m["state_dict"]}
        assert hub.detect_kind(sd)[0] == entry.kind
        hub.check_state_dict(sd, entry)  # the official key/shape check accepts the manifest


# ------------------------------------------------------------------------------------------- download
def test_download_streams_shows_progress_and_records_the_hash(server, tiny, tmp_path, capsys) -> None:
    body = _state_bytes(tiny["base"])
    server.files["base.pt"] = body
    path = fetch(server, tmp_path, progress=True)
    assert path == tmp_path / "base.pt" and path.read_bytes() == body
    assert server.requests == [("/base.pt", None)]
    err = capsys.readouterr().err
    assert "base.pt" in err and "100%" in err  # the tqdm bar
    record = json.loads((tmp_path / "hashes.json").read_text())["base.pt"]
    assert record["sha256"] == sha(body) and record["size"] == len(body)
    assert listing(tmp_path) == ["base.pt", "base.pt.lock", "hashes.json", "hashes.json.lock"]  # no .part left


def test_cache_hit_makes_no_request(server, tiny, tmp_path) -> None:
    server.files["base.pt"] = _state_bytes(tiny["base"])
    first = fetch(server, tmp_path)
    assert fetch(server, tmp_path) == first
    model = hub.load_checkpoint("base", cache_dir=tmp_path, registry=registry(server), progress=False)
    assert model is not None and len(server.requests) == 1


def test_default_cache_folder_is_glide_edu_cache(server, tiny, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GLIDE_EDU_CACHE", str(tmp_path / "c"))
    server.files["base.pt"] = _state_bytes(tiny["base"])
    path = hub.download("base", progress=False, registry=registry(server))
    assert path == tmp_path / "c" / "base.pt" == hub.default_cache_dir() / "base.pt"
    assert (tmp_path / "c" / "hashes.json").is_file()


def test_resume_after_an_interrupted_transfer_uses_range(server, tiny, tmp_path) -> None:
    body = _state_bytes(tiny["base"])
    server.files["base.pt"] = body
    server.drops_left, server.drop_after = 1, len(body) // 3
    with pytest.raises(hub.DownloadError) as err:
        fetch(server, tmp_path, retries=0)
    assert "resume" in one_line(err)
    part = tmp_path / "base.pt.part"
    assert part.stat().st_size == len(body) // 3 and not (tmp_path / "base.pt").exists()
    path = fetch(server, tmp_path)
    assert server.requests == [("/base.pt", None), ("/base.pt", f"bytes={len(body) // 3}-")]
    assert sum(server.sent) == len(body) and path.read_bytes() == body and not part.exists()
    assert json.loads((tmp_path / "hashes.json").read_text())["base.pt"]["sha256"] == sha(body)


def test_interruptions_are_retried_within_one_call(server, tiny, tmp_path) -> None:
    body = _state_bytes(tiny["base"])
    server.files["base.pt"] = body
    server.drops_left, server.drop_after = 2, 1000
    assert fetch(server, tmp_path, retries=2).read_bytes() == body
    assert [r for _, r in server.requests] == [None, "bytes=1000-", "bytes=2000-"]
    assert sum(server.sent) == len(body)


def test_a_server_that_ignores_range_restarts_the_file(server, tiny, tmp_path) -> None:
    body = _state_bytes(tiny["base"])
    server.files["base.pt"] = body
    server.ignore_range, server.drops_left, server.drop_after = True, 1, 5000
    with pytest.raises(hub.DownloadError):
        fetch(server, tmp_path, retries=0)
    path = fetch(server, tmp_path)
    assert server.requests[1] == ("/base.pt", "bytes=5000-")  # asked to resume, got a full 200 response
    assert path.read_bytes() == body  # rewritten from byte 0, not appended


def test_a_206_for_another_range_restarts_the_file(server, tiny, tmp_path) -> None:
    body = _state_bytes(tiny["base"])
    server.files["base.pt"] = body
    server.wrong_range = True
    (tmp_path / "base.pt.part").write_bytes(body[:100])
    assert fetch(server, tmp_path).read_bytes() == body
    assert [r for _, r in server.requests] == ["bytes=100-", None]


def test_a_part_longer_than_the_file_is_restarted(server, tiny, tmp_path) -> None:
    body = _state_bytes(tiny["base"])
    server.files["base.pt"] = body
    (tmp_path / "base.pt.part").write_bytes(b"x" * (len(body) + 10))
    assert fetch(server, tmp_path).read_bytes() == body  # 416, then a fresh request
    assert [r for _, r in server.requests] == [f"bytes={len(body) + 10}-", None]


def test_wrong_sha256_is_rejected_and_nothing_is_kept(server, tiny, tmp_path) -> None:
    body = _state_bytes(tiny["base"])
    server.files["base.pt"] = body
    with pytest.raises(hub.ChecksumError) as err:
        fetch(server, tmp_path, expected_sha256="0" * 64)
    assert "removed" in one_line(err) and sha(body)[:16] in str(err.value)
    assert listing(tmp_path) == ["base.pt.lock"]
    # a sha256 in the registry is enforced the same way, and the right one is accepted
    with pytest.raises(hub.ChecksumError):
        hub.download("base", tmp_path, False, registry=registry(server, {"base": "1" * 64}), timeout=TIMEOUT)
    assert not (tmp_path / "base.pt").exists()
    good = hub.download("base", tmp_path, False, registry=registry(server, {"base": sha(body)}), timeout=TIMEOUT)
    assert good.read_bytes() == body


def test_recorded_hash_is_enforced_on_a_changed_cached_file(server, tiny, tmp_path) -> None:
    body = _state_bytes(tiny["base"])
    server.files["base.pt"] = body
    path = fetch(server, tmp_path)
    path.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))  # same size, one bit flipped
    with pytest.raises(hub.ChecksumError) as err:
        fetch(server, tmp_path)
    assert "removed from the cache" in one_line(err) and not path.exists()
    assert len(server.requests) == 1  # the check itself made no request
    assert fetch(server, tmp_path).read_bytes() == body and len(server.requests) == 2


def test_upstream_file_differing_from_the_recorded_hash_is_rejected(server, tiny, tmp_path) -> None:
    server.files["base.pt"] = _state_bytes(tiny["base"])
    fetch(server, tmp_path).unlink()
    server.files["base.pt"] = _state_bytes({k: v + 1 for k, v in tiny["base"].items()})
    with pytest.raises(hub.ChecksumError) as err:
        fetch(server, tmp_path)
    assert "hashes.json" in one_line(err) and not (tmp_path / "base.pt").exists()


def test_http_errors_and_unreachable_hosts(server, tmp_path) -> None:
    with pytest.raises(hub.DownloadError) as err:
        fetch(server, tmp_path)  # nothing served: 404
    assert "HTTP 404" in one_line(err)
    with pytest.raises(hub.DownloadError) as err:
        hub.download("base", tmp_path, False, registry=registry(None), timeout=TIMEOUT, retries=0)  # port 9
    assert "cannot reach" in one_line(err) and "pass its path" in str(err.value)


def test_local_path_is_verified_and_used_in_place(server, tiny, tmp_path) -> None:
    path = tmp_path / "mine.pt"
    path.write_bytes(_state_bytes(tiny["base"]))
    assert hub.download(path) == path and hub.download(str(path), expected_sha256=sha(path.read_bytes())) == path
    with pytest.raises(hub.ChecksumError) as err:
        hub.download(path, expected_sha256="0" * 64)
    one_line(err)
    assert path.exists()  # a user's own file is never deleted
    model = hub.load_checkpoint(path, registry=registry(server))  # kind read from the keys
    assert all(torch.equal(model.state_dict()[k], v) for k, v in tiny["base"].items())
    assert server.requests == []


def test_unknown_name_lists_the_known_ones(tmp_path) -> None:
    for call in (lambda: hub.download("bsae", tmp_path), lambda: hub.load_checkpoint("clip/image", cache_dir=tmp_path)):
        with pytest.raises(hub.CheckpointError) as err:
            call()
        text = one_line(err)
        assert "base, upsample, base-inpaint, upsample-inpaint, clip/image-enc, clip/text-enc;" in text
    assert listing(tmp_path) == []


# -------------------------------------------------------------------------------------------- loading
def test_strict_load_equals_the_source_weights(server, tiny, tmp_path) -> None:
    server.files["base.pt"] = _state_bytes(tiny["base"])
    model = hub.load_checkpoint("base", cache_dir=tmp_path, registry=registry(server), progress=False)
    assert not model.training
    state = model.state_dict()
    assert list(state) == list(tiny["base"])
    assert all(torch.equal(state[k], v) and state[k].dtype == torch.float32 for k, v in tiny["base"].items())
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    source = create_glide_model(TINY_OPTIONS).eval()
    source.load_state_dict(tiny["base"])
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 900])
    tokens, mask = torch.randint(0, 50257, (2, 16)), torch.rand(2, 16) > 0.3
    with torch.no_grad():
        assert torch.equal(model(x, t, tokens=tokens, mask=mask), source(x, t, tokens=tokens, mask=mask))
    double = hub.load_checkpoint("base", dtype=torch.float64, cache_dir=tmp_path, registry=registry(server))
    assert all(p.dtype == torch.float64 for p in double.parameters())
    assert len(server.requests) == 1


def test_fp16_files_load_into_float32_models(tiny, tmp_path) -> None:
    path = tmp_path / "half.pt"
    torch.save({k: v.half() for k, v in tiny["upsample"].items()}, path)
    model = hub.load_checkpoint(path, registry=registry())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    key = "input_blocks.0.0.weight"
    assert torch.equal(model.state_dict()[key], tiny["upsample"][key].half().float())


def test_clip_loads_both_encoders_and_the_logit_scale(server, tiny, tmp_path) -> None:
    server.files["clip_image_enc.pt"] = _state_bytes(tiny["clip/image-enc"])
    server.files["clip_text_enc.pt"] = _state_bytes(tiny["clip/text-enc"])
    clip = hub.load_checkpoint("clip", cache_dir=tmp_path, registry=registry(server), progress=False)
    assert isinstance(clip, NoisedClip) and not clip.training
    assert clip.logit_scale == float(np.float32(math.log(100.0))) and isinstance(clip.logit_scale, float)
    for part, sd in ((clip.image_encoder, tiny["clip/image-enc"]), (clip.text_encoder, tiny["clip/text-enc"])):
        assert all(torch.equal(part.state_dict()[k], v) for k, v in sd.items())
    text = hub.load_checkpoint("clip/text-enc", cache_dir=tmp_path, registry=registry(server))
    assert type(text).__name__ == "TextEncoder" and len(server.requests) == 2
    # a whole NoisedClip state dict in one file, with its own logit scale
    whole = {f"image_encoder.{k}": v for k, v in tiny["clip/image-enc"].items()}
    whole.update({f"text_encoder.{k}": v for k, v in tiny["clip/text-enc"].items()})
    torch.save({**whole, "logit_scale": torch.tensor(2.5)}, tmp_path / "clip.pt")
    loaded = hub.load_checkpoint(tmp_path / "clip.pt", registry=registry())
    assert isinstance(loaded, NoisedClip) and loaded.logit_scale == 2.5


@pytest.mark.parametrize("actual", ["upsample", "base-inpaint", "upsample-inpaint", "clip/text-enc"])
def test_wrong_kind_names_the_kind_it_looks_like(actual, server, tiny, tmp_path) -> None:
    path = tmp_path / "file.pt"
    path.write_bytes(_state_bytes(tiny[actual]))
    with pytest.raises(hub.WrongKindError) as err:
        hub.load_checkpoint(path, kind="base", registry=registry())
    text = one_line(err)
    assert f"looks like a {actual} checkpoint" in text and f"load_checkpoint({actual!r})" in text
    assert path.exists()
    # served under the base name: rejected by the key check before it enters the cache
    server.files["base.pt"] = path.read_bytes()
    with pytest.raises(hub.WrongKindError) as err:
        fetch(server, tmp_path / "cache")
    assert f"looks like a {actual} checkpoint" in one_line(err) and "removed from the cache" in str(err.value)
    assert listing(tmp_path / "cache") == ["base.pt.lock"]


def test_detect_kind_of_the_official_shapes() -> None:
    for name, entry in hub.CHECKPOINTS.items():
        with torch.device("meta"):
            sd = entry.build().state_dict()
        assert hub.detect_kind(sd)[0] == name
    assert hub.detect_kind({"input_blocks.0.0.weight": torch.empty(8, 3, 3, 3)})[0] is None  # no text transformer


def test_same_kind_with_other_options_is_rejected(tiny, tmp_path) -> None:
    path = tmp_path / "wide.pt"
    torch.save(create_glide_model({**TINY_OPTIONS, "num_channels": 64}).state_dict(), path)
    with pytest.raises(hub.WrongKindError) as err:
        hub.load_checkpoint(path, registry=registry())
    assert "does not fit the 'base' preset" in one_line(err) and "other shape" in str(err.value)


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "training", "module"])
def test_damaged_or_foreign_files_are_rejected(damage, server, tiny, tmp_path) -> None:
    body = _state_bytes(tiny["base"])
    data = {
        "truncated": body[: len(body) // 2],
        "empty": b"",
        "garbage": os.urandom(4096),
        "training": _state_bytes({"model": tiny["base"], "step": torch.tensor(3)}),
        "module": _state_bytes([torch.zeros(2)]),
    }[damage]
    path = tmp_path / "bad.pt"
    path.write_bytes(data)
    expected = hub.WrongKindError if damage in ("training", "module") else hub.CorruptCheckpointError
    with pytest.raises(expected) as err:
        hub.load_checkpoint(path, kind="base", registry=registry())
    text = one_line(err)
    assert {"truncated": "truncated", "empty": "empty", "garbage": "not a readable", "training": "training"}.get(
        damage, "not a state dict"
    ) in text
    assert path.exists()
    server.files["base.pt"] = data  # the same file downloaded: rejected and not kept in the cache
    with pytest.raises(expected):
        fetch(server, tmp_path / "cache")
    assert not (tmp_path / "cache" / "base.pt").exists() and not (tmp_path / "cache" / "hashes.json").exists()


class _RunsCode:
    """Unpickling this would call os.mkdir(marker): a stand-in for arbitrary code in a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("container", ["torch.save", "raw pickle"])
def test_a_pickle_that_carries_code_is_refused_unrun(container, server, tmp_path) -> None:
    marker = tmp_path / "code-ran"
    payload = {"evil": _RunsCode(marker), "weight": torch.zeros(2)}
    data = _state_bytes(payload) if container == "torch.save" else pickle.dumps(payload, protocol=2)
    path = tmp_path / "evil.pt"
    path.write_bytes(data)
    with pytest.raises(hub.UnsafeCheckpointError) as err:
        hub.load_checkpoint(path, registry=registry())
    assert "refused" in one_line(err) and "mkdir" in str(err.value)  # names the global it refused
    server.files["base.pt"] = data
    with pytest.raises(hub.UnsafeCheckpointError) as err:
        fetch(server, tmp_path / "cache")
    assert "removed from the cache" in one_line(err) and not (tmp_path / "cache" / "base.pt").exists()
    assert not marker.exists()  # the code never ran


def test_a_safetensors_file_gets_a_pointer(tmp_path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "w.safetensors")
    with pytest.raises(hub.CorruptCheckpointError) as err:
        hub.read_state_dict(tmp_path / "w.safetensors")
    assert "safetensors" in one_line(err)


def test_a_url_download_is_cached_and_a_corrupt_one_dropped(server, tiny, tmp_path) -> None:
    server.files["x/model.pt"] = _state_bytes(tiny["upsample"])
    model = hub.load_checkpoint(server.url("x/model.pt"), cache_dir=tmp_path, registry=registry(), progress=False)
    assert type(model).__name__ == "SuperResText2ImUNet"
    hub.load_checkpoint(server.url("x/model.pt"), cache_dir=tmp_path, registry=registry(), progress=False)
    assert len(server.requests) == 1 and any(p.endswith("/model.pt") for p in listing(tmp_path))
    server.files["x/broken.pt"] = b"PK\x03\x04 not really a zip"
    with pytest.raises(hub.CorruptCheckpointError):
        hub.load_checkpoint(server.url("x/broken.pt"), cache_dir=tmp_path, registry=registry(), progress=False)
    assert not any(p.endswith("broken.pt") for p in listing(tmp_path))
    assert not any(k.endswith("broken.pt") for k in json.loads((tmp_path / "hashes.json").read_text()))


def test_reference_fixture_weights_load_through_the_hub(tmp_path) -> None:  # (shared)
    tensors, meta = fixture("base")
    path = tmp_path / "base.pt"
    torch.save({k[len("state_dict.") :]: v for k, v in tensors.items() if k.startswith("state_dict.")}, path)
    reg = {"base": hub.Checkpoint("base", "base.pt", "http://127.0.0.1:9/base.pt", "base", meta["options"])}
    model = hub.load_checkpoint(path, registry=reg)
    with torch.no_grad():
        out = model(tensors["x_t"], tensors["timesteps"], tokens=tensors["tokens"], mask=tensors["mask"])
    assert_matches(out, "output", tensors, meta)


# ---------------------------------------------------------------------------------------- vocabulary
def test_gpt2_vocab_with_wrong_content_is_rejected(server, tmp_path) -> None:
    server.files["enc/encoder.json"] = b"{}"
    with pytest.raises(hub.ChecksumError) as err:
        hub.download_gpt2_vocab(tmp_path, progress=False, source=server.url("enc"))
    assert "encoder.json" in one_line(err)
    assert not (tmp_path / "encoder.json").exists() and not (tmp_path / "encoder.json.part").exists()


def test_missing_vocab_file_in_a_local_folder_is_vocab_errors_message(tmp_path) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(vocab.VocabError) as err:
        hub.download_gpt2_vocab(tmp_path / "dest", source=tmp_path / "src")
    assert "encoder.json" in one_line(err) and "not found" in str(err.value)


def test_gpt2_vocab_downloads_where_the_tokenizer_looks(server, tmp_path, monkeypatch) -> None:  # (shared)
    folder = shared_path() / "reference" / "glide_text2im" / "vocab"
    server.files["enc/encoder.json"] = gzip.decompress((folder / "encoder.json.gz").read_bytes())
    server.files["enc/vocab.bpe"] = gzip.decompress((folder / "vocab.bpe.gz").read_bytes())
    monkeypatch.setenv(vocab.ENV_VAR, str(tmp_path / "vocab"))
    paths = hub.download_gpt2_vocab(progress=False, source=server.url("enc"))
    assert paths == vocab.gpt2_vocab_paths() == (tmp_path / "vocab" / "encoder.json", tmp_path / "vocab" / "vocab.bpe")
    assert hub.download_gpt2_vocab(progress=False, source=server.url("enc")) == paths
    assert len(server.requests) == 2  # the second call was a cache hit
    copied = hub.download_gpt2_vocab(tmp_path / "copy", source=folder)  # a local folder with .gz files
    assert copied.encoder_json.read_bytes() == server.files["enc/encoder.json"]
