"""Streaming captioned images from webdataset tar shards into a trainer: no data set in memory.

:class:`ShardStream` turns a shard list (img2dataset's layout, :mod:`glide_edu.datasets`) into one endless,
deterministic stream of samples per **reader**. A reader is one DataLoader worker of one torchrun rank:
``reader = rank · num_workers + worker`` of ``readers = world_size · num_workers``.

* **Epochs and sharding.** Epoch ``e`` shuffles the shard list with ``(seed, e)``; reader ``r`` reads shards
  ``order[r::readers]``, so within an epoch no shard (and no sample) is read by two readers. A reader that
  finishes its shards starts its next epoch at once (readers are not synchronised: with uneven shard counts
  one may be an epoch ahead of another).
* **Shuffle buffer.** A reader's raw samples (bytes, not yet decoded) pass through a buffer of
  ``shuffle_buffer`` entries: each new sample replaces a random one, which is emitted (webdataset's
  ``shuffle``); the buffer is seeded with ``(seed, epoch, reader)``.
* **Skipping.** Samples are decoded after the buffer; one without an image or a caption, an image that does
  not decode, or the unreadable rest of a damaged tar is skipped — never an exception — and counted in the
  next emitted item's ``skipped`` (the trainer sums them: ``data_skipped`` in ``metrics.csv``).
* **Positions and resume.** Every emitted item carries its reader, epoch and ``pos`` (how many raw samples
  of the epoch's buffered stream precede it, skipped ones included). Given ``start = {reader: (epoch, pos)}``
  a reader replays its epoch from the first of its shards *without decoding* (reading the tar bytes again:
  the shuffle buffer is rebuilt exactly) and emits from ``pos`` on. With the DataLoader's round-robin over
  workers (the i-th item comes from worker i mod W; streams never end) and ``rotate`` (which reader worker 0
  plays), a resumed stream is the uninterrupted one, item for item.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from glide_edu.datasets import decode_sample, expand_shards, read_shard

MAX_EMPTY_EPOCHS = 10


@dataclass(frozen=True)
class StreamConfig:
    """``[data]`` of ``source = "webdataset"``: the shards and how they are read."""

    shards: str | tuple[str, ...]  # "data/{00000..00099}.tar" (img2dataset's brace notation) or a list
    image_size: int
    shuffle_buffer: int = 1000  # raw samples per reader held for shuffling (memory: × the mean file size)
    num_workers: int = 0  # DataLoader worker processes per rank decoding images (0: in the training process)
    channels: int = 3

    def validate(self) -> None:
        bad = []
        if not expand_shards(self.shards if isinstance(self.shards, str) else list(self.shards)):
            bad.append("shards is empty (give e.g. shards = 'data/{00000..00099}.tar')")
        if not (isinstance(self.image_size, int) and self.image_size >= 8):
            bad.append(f"image_size = {self.image_size!r} (need an int ≥ 8, the model's image_size)")
        if not (isinstance(self.shuffle_buffer, int) and self.shuffle_buffer >= 1):
            bad.append(f"shuffle_buffer = {self.shuffle_buffer!r} (need ≥ 1; 1 = no shuffling within shards)")
        if not (isinstance(self.num_workers, int) and self.num_workers >= 0):
            bad.append(f"num_workers = {self.num_workers!r} (need ≥ 0)")
        if bad:
            raise ValueError("[data] (webdataset): " + "; ".join(bad))

    def shard_list(self) -> list[str]:
        return expand_shards(self.shards if isinstance(self.shards, str) else list(self.shards))


def shard_order(shards: Sequence[str], seed: int, epoch: int) -> list[str]:
    """The shard list of ``epoch``, shuffled with ``(seed, epoch)`` (the same on every rank and worker)."""
    order = list(shards)
    random.Random(f"glide-edu shards {seed} {epoch}").shuffle(order)
    return order


def reader_shards(shards: Sequence[str], seed: int, epoch: int, reader: int, readers: int) -> list[str]:
    """The shards reader ``reader`` of ``readers`` reads in ``epoch`` (disjoint between readers)."""
    return shard_order(shards, seed, epoch)[reader::readers]


def buffered(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """webdataset's shuffle: keep ``size`` items; each new one replaces a random one, which is emitted; the
    rest come out in random order at the end. ``size`` 1 keeps the order."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(size)
        buffer[j], item = item, buffer[j]
        yield item
    rng.shuffle(buffer)
    yield from buffer


class ShardStream(torch.utils.data.IterableDataset):
    """An endless stream of ``{"image", "caption", "reader", "epoch", "pos", "skipped"}`` from webdataset
    shards (module docs). ``start``: ``{reader: (epoch, pos)}`` to resume from (missing readers start at
    ``(0, 0)``); ``rotate``: the reader DataLoader worker 0 plays (a resumed round-robin's first worker)."""

    def __init__(self, config: StreamConfig, seed: int, rank: int = 0, world_size: int = 1,
                 start: dict[int, tuple[int, int]] | None = None, rotate: int = 0) -> None:
        config.validate()
        self.config, self.seed, self.rank, self.world_size = config, seed, rank, world_size
        self.shards = config.shard_list()
        self.workers = max(1, config.num_workers)
        self.readers = world_size * self.workers
        if len(self.shards) < self.readers:
            raise ValueError(f"[data] shards: {len(self.shards)} shard(s) for {self.readers} readers ({world_size} "
                             f"process(es) × {self.workers} worker(s)); every reader needs a shard of its own: "
                             "write more, smaller shards or lower num_workers")
        self.start = dict(start or {})
        self.rotate = rotate

    def reader_of(self, worker: int) -> int:
        """The global reader index DataLoader worker ``worker`` of this rank plays."""
        return self.rank * self.workers + (worker + self.rotate) % self.workers

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        reader = self.reader_of(worker)
        epoch, start = self.start.get(reader, (0, 0))
        skipped = empty_epochs = 0  # skipped: since the last emitted item (carried over epoch ends)
        while True:
            mine = reader_shards(self.shards, self.seed, epoch, reader, self.readers)
            raw = (parts for shard in mine for parts in read_shard(shard))
            rng = random.Random(f"glide-edu buffer {self.seed} {epoch} {reader}")
            emitted = 0
            for pos, parts in enumerate(buffered(raw, self.config.shuffle_buffer, rng), 1):
                if pos <= start:  # replaying up to the resume position: nothing decoded, nothing counted
                    continue
                sample = decode_sample(parts, self.config.image_size, self.config.channels)
                if sample is None:
                    skipped += 1
                    continue
                emitted += 1
                yield {"image": sample[0], "caption": sample[1], "reader": reader, "epoch": epoch, "pos": pos,
                       "skipped": skipped}
                skipped = 0
            # an epoch with nothing readable (this reader drew only damaged or empty shards) is survived; ten in
            # a row mean the shards themselves are unusable
            empty_epochs = empty_epochs + 1 if emitted == 0 and start == 0 else 0
            if empty_epochs >= MAX_EMPTY_EPOCHS:
                names = ", ".join(s.rsplit("/", 1)[-1] for s in mine[:3])
                raise ValueError(f"reader {reader} found no readable captioned sample in {MAX_EMPTY_EPOCHS} epochs "
                                 f"in a row (last: {names}{' …' if len(mine) > 3 else ''}); check the shards")
            epoch, start = epoch + 1, 0
