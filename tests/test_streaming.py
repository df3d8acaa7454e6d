"""Streaming webdataset shards into the trainer: every sample once per epoch and reader, readers disjoint (ranks,
DataLoader workers, 2 gloo processes), damaged and uncaptioned samples skipped and counted into metrics.csv, and
a resumed stream — and so a resumed run — equal to the uninterrupted one."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from glide_edu.cli import main
from glide_edu.streaming import ShardStream, StreamConfig, buffered, reader_shards
from glide_edu.train import TrainConfig
from glide_edu.train_stream import StreamingTextTrainer, stream_trainer

WORKER = Path(__file__).with_name("stream_worker.py")
sys.path.insert(0, str(WORKER.parent))
from stream_worker import TINY  # noqa: E402

CORRUPT, UNCAPTIONED = ("s1", 2), ("s2", 3)  # (shard, index): a damaged JPEG; a picture with no caption


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buf, format="PNG")
    return buf.getvalue()


def write_shards(root: Path, n_shards: int = 4, per_shard: int = 5) -> str:
    """``root/{00000..}.tar``: samples s<i>-<j> (a coloured picture + its caption), one damaged, one uncaptioned."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_shards):
        with tarfile.open(root / f"{i:05d}.tar", "w") as tar:
            for j in range(per_shard):
                files = {"jpg": b"\xff\xd8 not a jpeg" if (f"s{i}", j) == CORRUPT else _png((40 * i, 50 * j, 90))}
                if (f"s{i}", j) != UNCAPTIONED:
                    files["txt"] = f"s{i}-{j}".encode()
                for ext, data in files.items():
                    info = tarfile.TarInfo(f"{i:05d}{j:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(root / f"{{00000..{n_shards - 1:05d}}}.tar")


def _take(stream, n: int) -> list[dict]:
    return [next(stream) for _ in range(n)]


def test_buffer_shuffles_and_keeps_every_item() -> None:
    import random

    out = list(buffered(iter(range(50)), 8, random.Random(0)))
    assert sorted(out) == list(range(50)) and out != list(range(50))
    assert list(buffered(iter(range(5)), 1, random.Random(0))) == list(range(5))  # size 1: file order


def test_one_reader_sees_every_readable_sample_once_per_epoch(tmp_path) -> None:
    spec = write_shards(tmp_path)
    stream = iter(ShardStream(StreamConfig(spec, 16, shuffle_buffer=4), seed=3))
    epoch0 = _take(stream, 18)  # 20 samples, one damaged and one uncaptioned
    assert sorted(i["caption"] for i in epoch0) == sorted(
        f"s{i}-{j}" for i in range(4) for j in range(5) if (f"s{i}", j) not in (CORRUPT, UNCAPTIONED))
    assert {i["epoch"] for i in epoch0} == {0} and sum(i["skipped"] for i in epoch0) <= 2
    assert [i["pos"] for i in epoch0] == sorted(i["pos"] for i in epoch0)
    after = _take(stream, 19)  # epoch 1, then the first item of epoch 2 (which counts what ended epoch 1)
    assert {i["epoch"] for i in after[:18]} == {1} and after[18]["epoch"] == 2
    assert sum(i["skipped"] for i in epoch0 + after[:18]) <= 4 <= sum(i["skipped"] for i in epoch0 + after)
    assert [i["caption"] for i in after] != [i["caption"] for i in epoch0]  # another shard order and shuffle
    assert epoch0[0]["image"].shape == (3, 16, 16)


def test_ranks_and_workers_read_disjoint_shards(tmp_path) -> None:
    spec = write_shards(tmp_path, n_shards=8, per_shard=3)
    seen = {}
    for rank in (0, 1):
        dataset = ShardStream(StreamConfig(spec, 8, shuffle_buffer=2, num_workers=2), seed=0, rank=rank,
                              world_size=2)
        loader = iter(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2))
        items = _take(loader, 8)
        assert [i["reader"] for i in items] == [2 * rank, 2 * rank + 1] * 4  # the round-robin over workers
        for item in items:
            shard = int(item["caption"].split("-")[0][1:])
            assert f"{shard:05d}.tar" in [Path(s).name for s in reader_shards(dataset.shards, 0, 0, item["reader"], 4)]
        seen[rank] = {i["caption"] for i in items}
    assert not seen[0] & seen[1]
    with pytest.raises(ValueError, match="8 shard.*for 12 readers .* write more, smaller shards"):
        ShardStream(StreamConfig(spec, 8, num_workers=3), seed=0, rank=0, world_size=4)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stream_resumed_from_positions_is_the_uninterrupted_one(tmp_path, workers) -> None:
    spec = write_shards(tmp_path)
    config = StreamConfig(spec, 8, shuffle_buffer=3, num_workers=workers)

    def open_stream(start=None, rotate=0):
        dataset = ShardStream(config, seed=1, start=start, rotate=rotate)
        return iter(dataset) if not workers else iter(torch.utils.data.DataLoader(dataset, batch_size=None,
                                                                                   num_workers=workers))

    whole = _take(open_stream(), 30)  # into the second epoch
    first = whole[:11]
    positions = {i["reader"]: (i["epoch"], i["pos"]) for i in first}
    rest = _take(open_stream(positions, rotate=len(first) % max(1, workers)), 19)
    assert [i["caption"] for i in rest] == [i["caption"] for i in whole[11:]]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(rest, whole[11:], strict=True))
    assert [i["skipped"] for i in rest] == [i["skipped"] for i in whole[11:]]


def _trainer(spec: str, run_dir: Path, steps: int, **stream) -> StreamingTextTrainer:
    options = {**TINY, "inpaint": True}  # masks and empty captions: the generator's state matters
    config = TrainConfig(steps=steps, batch_size=3, lr=1e-3, progress=False, log_every=1, checkpoint_every=2,
                         loss_type="hybrid", sample_count=2, sample_steps=2)
    return stream_trainer(options, StreamConfig(spec, 16, **({"shuffle_buffer": 4} | stream)), config, p_uncond=0.3,
                          run_dir=run_dir)


def test_a_streamed_run_stopped_and_resumed_equals_an_uninterrupted_one(tmp_path) -> None:
    spec = write_shards(tmp_path / "shards")
    straight = _trainer(spec, tmp_path / "a", 5)
    with pytest.warns(UserWarning, match="unreadable or uncaptioned sample"):  # the shards hold damaged samples
        straight.train()
    stopped = _trainer(spec, tmp_path / "b", 5)
    stopped.train(steps=2)  # mid-shard and mid-buffer (6 of 18 samples)
    del stopped
    resumed = _trainer(spec, tmp_path / "b", 5)
    assert resumed.step == 2 and resumed.seen == 6
    with pytest.warns(UserWarning, match="unreadable or uncaptioned sample"):  # the damaged one is met after resuming
        resumed.train()
    for a, b in ((straight.model, resumed.model), (straight.ema_model, resumed.ema_model)):
        for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), key
    assert resumed.history[-1]["data_seen"] == straight.history[-1]["data_seen"] == 15.0
    assert resumed.history[-1]["data_skipped"] == straight.history[-1]["data_skipped"]
    assert resumed.positions == straight.positions
    grid = straight.grid_kwargs(2)  # fixed rows: the shards' first samples, their captions, the top half kept
    assert grid["inpaint_mask"].shape == (2, 1, 16, 16) and straight.sample_grid().shape == (2, 3, 16, 16)
    # another shuffle buffer: the positions mean nothing, so the stream starts the next epoch, and says so
    with pytest.warns(UserWarning, match="every reader starts epoch 1"):
        changed = _trainer(spec, tmp_path / "b", 6, shuffle_buffer=2)
    assert changed.positions == {0: (1, 0)} and changed.seen == 15


def test_glide_edu_train_streams_webdataset_shards(tmp_path) -> None:
    spec = write_shards(tmp_path / "shards", n_shards=2, per_shard=10)  # s1-2 damaged
    config = {"kind": "glide", "data": {"source": "webdataset", "shards": spec, "shuffle_buffer": 1},
              "model": TINY, "train": {"steps": 9, "batch_size": 2, "progress": False, "log_every": 1}}
    path, run = tmp_path / "w.json", tmp_path / "run"
    path.write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="skipped so far"):
        assert main(["train", str(path), "--run-dir", str(run), "--out", str(tmp_path / "w.safetensors")]) == 0
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["data_seen"] for r in rows] == [f"{2.0 * s}" for s in range(1, 10)]
    skipped = [float(r["data_skipped"]) for r in rows]
    assert skipped[0] == 0 and skipped[-1] == 1 and skipped == sorted(skipped)  # the damaged one, once
    from glide_edu.pretrained import read_metadata

    assert read_metadata(tmp_path / "w.safetensors")["kind"] == "glide-base"


@pytest.mark.parametrize("data, message", [
    ({}, "needs shards = 'data/{00000..00099}.tar'"),
    ({"shards": "x/{0..1}.tar", "image_size": 32}, "[data] image_size = 32 but [model] image_size = 16"),
    ({"shards": "x/{0..1}.tar", "shuffle_buffer": 0}, "shuffle_buffer = 0 (need ≥ 1"),
    ({"shards": "x/{0..1}.tar", "n_shapes": 5}, "[data] has unknown key(s) n_shapes for source = 'webdataset'"),
])
def test_bad_webdataset_configs_are_one_line_errors(tmp_path, capsys, data, message) -> None:
    config = {"kind": "glide", "data": {"source": "webdataset", **data}, "model": TINY, "train": {"steps": 1}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    assert main(["train", str(path), "--out", str(tmp_path / "x.safetensors")]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def _torchrun(spec: str, run_dir: Path, out: Path, steps: int) -> None:
    out.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(WORKER), spec, str(run_dir), str(out), str(steps)],
                          env=env | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_processes_train_on_disjoint_shards_and_resume_exactly(tmp_path) -> None:
    from safetensors.torch import load_file

    spec = write_shards(tmp_path / "shards", n_shards=4, per_shard=4)  # each rank: 2 shards, ≥ 6 readable samples
    _torchrun(spec, tmp_path / "run", tmp_path / "straight", 3)
    ranks = [json.loads((tmp_path / "straight" / f"rank{r}.json").read_text()) for r in (0, 1)]
    shards = sorted(str(p) for p in (tmp_path / "shards").glob("*.tar"))
    for rank, record in enumerate(ranks):
        assert record["world_size"] == 2 and len(record["captions"]) == 6  # 3 steps × 2 per rank
        mine = {Path(s).stem for s in reader_shards(shards, 0, 0, rank, 2)}
        assert {f"{int(c.split('-')[0][1:]):05d}" for c in record["captions"]} <= mine
        assert record["logs"]["data_seen"] == 12.0  # both ranks' samples
    assert not set(ranks[0]["captions"]) & set(ranks[1]["captions"])
    assert ranks[0]["logs"]["data_skipped"] == ranks[1]["logs"]["data_skipped"]
    state = torch.load(tmp_path / "run" / "ckpt-0000003" / "optimizer.pt", weights_only=True)
    assert state["stream_state"].shape == (2, 5) and not torch.equal(*state["stream_generators"])
    # stopped after step 2 and resumed: each rank continues its own stream and generator
    _torchrun(spec, tmp_path / "resumed", tmp_path / "part", 2)
    _torchrun(spec, tmp_path / "resumed", tmp_path / "rest", 3)
    for rank in (0, 1):
        part, rest = (json.loads((tmp_path / d / f"rank{rank}.json").read_text()) for d in ("part", "rest"))
        assert part["captions"] + rest["captions"] == ranks[rank]["captions"]
    for name in ("model", "ema"):
        a, b = (load_file(tmp_path / d / "ckpt-0000003" / f"{name}.safetensors") for d in ("run", "resumed"))
        assert all(torch.equal(a[k], b[k]) for k in a)
