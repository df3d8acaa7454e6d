"""Captioned folders and webdataset shards: the reference's crop, the caption formats, damaged samples skipped
and counted, shards split between ranks without overlap."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from glide_edu.datasets import (
    WebDataset,
    center_crop_arr,
    expand_shards,
    load_captioned_folder,
)


def _png(w: int, h: int, colour=(255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_center_crop_halves_then_resizes_then_crops_the_centre() -> None:
    arr = np.zeros((200, 300, 3), np.uint8)
    arr[:, 150:] = 255  # right half white
    out = center_crop_arr(Image.fromarray(arr), 64)
    # 300×200 → box-halved to 150×100 (100 < 128 stops) → bicubic to 96×64 → columns 16…79 kept
    assert out.shape == (64, 64, 3)
    assert out[:, :30].max() == 0 and out[:, 34:].min() == 255  # the edge stays at the centre
    assert center_crop_arr(Image.new("L", (40, 64)), 32).shape == (32, 32)


def test_expand_shards() -> None:
    assert expand_shards("d/{000..002}.tar") == ["d/000.tar", "d/001.tar", "d/002.tar"]
    assert expand_shards(["a.tar", "b/{8..10}.tar"]) == ["a.tar", "b/8.tar", "b/9.tar", "b/10.tar"]


@pytest.mark.parametrize("layout", ["sidecar", "jsonl", "csv"])
def test_captioned_folder_formats_and_skips(tmp_path, layout) -> None:
    (tmp_path / "a.png").write_bytes(_png(50, 40))
    (tmp_path / "b.png").write_bytes(_png(40, 40, (0, 0, 255)))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "nocap.png").write_bytes(_png(40, 40))
    captions = {"a.png": "a red box", "b.png": "a blue box", "broken.png": "damaged", "nocap.png": ""}
    if layout == "sidecar":
        for name, text in captions.items():
            if text:
                (tmp_path / name).with_suffix(".txt").write_text(text)
    elif layout == "jsonl":
        (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps({"file": k, "caption": v})
                                                           for k, v in captions.items()))
    else:
        (tmp_path / "captions.csv").write_text("file,caption\n" + "".join(f"{k},{v}\n" for k, v in captions.items()))
    with pytest.warns(UserWarning, match="skipped 2 of 4 images"):
        data = load_captioned_folder(tmp_path, 16)
    assert data.captions == ["a red box", "a blue box"] and data.images.shape == (2, 3, 16, 16)
    assert data.images[0, 0].min() == 1.0 and data.images[1, 2].min() == 1.0  # red, then blue, in [−1, 1]
    assert sorted(s.split(":")[0] for s in data.skipped) == ["broken.png", "nocap.png"]


def test_a_folder_with_nothing_usable_is_one_clear_error(tmp_path) -> None:
    (tmp_path / "x.png").write_bytes(_png(8, 8))
    with pytest.raises(ValueError, match="no readable captioned image"), pytest.warns(UserWarning):
        load_captioned_folder(tmp_path, 8)
    with pytest.raises(FileNotFoundError, match="no folder at"):
        load_captioned_folder(tmp_path / "missing", 8)


def _shard(path, keys, damaged=(), truncate=False) -> None:
    with tarfile.open(path, "w") as tar:
        for k in keys:
            for ext, data in ((".png", b"junk" if k in damaged else _png(20, 30)), (".txt", f"caption {k}".encode())):
                info = tarfile.TarInfo(f"{k}{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("orphan.json")  # a sample without an image
        data = json.dumps({"caption": "no picture"}).encode()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    if truncate:
        raw = path.read_bytes()
        path.write_bytes(raw[: 5 * 512 + 40])  # k0's four blocks, k1.png's header, 40 bytes of its data


def test_webdataset_streams_skips_and_splits_between_ranks(tmp_path) -> None:
    for i in range(4):
        _shard(tmp_path / f"{i:03d}.tar", [f"s{i}_{j}" for j in range(3)], damaged={f"s{i}_1"})
    spec = str(tmp_path / "{000..003}.tar")
    with pytest.warns(UserWarning, match="skipped 2 sample"):
        whole = WebDataset(spec, 16, rank=0, world_size=1)
        samples = list(whole)
    assert [c for _, c in samples] == [f"caption s{i}_{j}" for i in range(4) for j in (0, 2)]
    assert whole.skipped == 8 and samples[0][0].shape == (3, 16, 16)  # a damaged image + an orphan per shard
    seen = []
    for rank in (0, 1):
        with pytest.warns(UserWarning):
            seen.append({c for _, c in WebDataset(spec, 16, rank=rank, world_size=2)})
    assert not seen[0] & seen[1] and seen[0] | seen[1] == {c for _, c in samples}
    loader = torch.utils.data.DataLoader(WebDataset(spec, 16, rank=0, world_size=1), batch_size=4, num_workers=0)
    with pytest.warns(UserWarning):
        images, captions = next(iter(loader))
    assert images.shape == (4, 3, 16, 16) and len(captions) == 4


def test_a_truncated_shard_is_counted_not_fatal(tmp_path) -> None:
    _shard(tmp_path / "t.tar", [f"k{j}" for j in range(6)], truncate=True)
    ds = WebDataset(str(tmp_path / "t.tar"), 8, rank=0, world_size=1)
    with pytest.warns(UserWarning, match="skipped"):
        got = list(ds)
    assert 0 < len(got) < 6 and ds.skipped >= 1
