"""Dataset storage: deterministic WebDataset tar shards, a JSON manifest, and a streaming reader.

A dataset folder holds ``manifest.json`` and, per split, shards named ``{split}-{k:06d}.tar``. Each
shard is a plain tar whose members are ``{key}.{field}`` (see :func:`choi.data.schema.encode`), so any
WebDataset tool can read it too. Every builder writes the manifest; the reader only reads it.

Example:
    >>> ds = ShardDataset("data/hoiw", split="train", shuffle_buffer=256, seed=0)
    >>> loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import logging
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from webdataset.tariterators import group_by_keys, tar_file_expander

from choi import __version__
from choi.data.schema import SCHEMA_VERSION, Sample, decode
from choi.errors import ChoiError
from choi.io import TMP_SUFFIX, atomic_write_bytes, atomic_writer
from choi.vocabulary import CLASSES

log = logging.getLogger(__name__)

FORMAT = "choi-shards"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


def shard_name(split: str, k: int) -> str:
    return f"{split}-{k:06d}.tar"


def remove_stale_temp_files(root: str | os.PathLike, prefix: str = "") -> int:
    """Delete temp files left by killed writers (names starting with ``prefix``); returns how many."""
    stale = list(Path(root).glob(f".{prefix}*{TMP_SUFFIX}"))
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temp file(s) of unfinished shards", len(stale))
    return len(stale)


# --- writer -------------------------------------------------------------------------------------


class ShardWriter:
    """Write WebDataset records (from :func:`~choi.data.schema.encode`) into one tar shard.

    The bytes depend only on the records and their order: every member has mtime 0, uid/gid 0,
    empty owner names and mode 0644, and a record's fields are written in sorted order. The shard
    appears under its final name only when the ``with`` block completes.

    Example:
        >>> with ShardWriter("data/train-000000.tar") as w:
        ...     w.write(encode(sample))
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.count = 0
        self._keys: set[str] = set()
        self._ctx: contextlib.AbstractContextManager[IO[bytes]] | None = None
        self._tar: tarfile.TarFile | None = None

    def __enter__(self) -> ShardWriter:
        self._ctx = atomic_writer(self.path)
        f = self._ctx.__enter__()
        # GNU format: long member names without PAX headers (which would carry varying metadata).
        self._tar = tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        assert self._tar is not None and self._ctx is not None
        if exc_type is None:
            try:
                self._tar.close()  # writes the end-of-archive blocks into the temp file
            except BaseException as err:
                self._ctx.__exit__(type(err), err, err.__traceback__)
                raise
        return self._ctx.__exit__(exc_type, exc, tb)

    def write(self, record: dict[str, Any]) -> None:
        if self._tar is None:
            raise RuntimeError("ShardWriter.write outside its `with` block")
        key = record.get("__key__")
        if not isinstance(key, str) or not key or any(c in key for c in "./\\") or key.startswith("__"):
            # WebDataset splits "{key}.{field}" at the first dot, so a dot in the key would corrupt it.
            raise ValueError(f"invalid sample key {key!r}: non-empty, no '.', '/' or leading '__'")
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r} in {self.path.name}")
        self._keys.add(key)
        for ext in sorted(k for k in record if not k.startswith("__")):
            data = record[ext]
            data = data.encode() if isinstance(data, str) else bytes(data)
            info = tarfile.TarInfo(f"{key}.{ext.lstrip('.')}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self.count += 1


def write_shard(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> int:
    """Write ``records`` into the shard at ``path`` atomically; returns the number of records."""
    with ShardWriter(path) as w:
        for record in records:
            w.write(record)
    return w.count


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- manifest -----------------------------------------------------------------------------------


@dataclass
class ShardInfo:
    name: str  # file name inside the dataset folder
    count: int  # samples in the shard
    sha256: str = ""  # filled in when the split is complete


@dataclass
class SplitInfo:
    count: int  # samples in the split (planned count while incomplete)
    shards: list[ShardInfo]
    complete: bool = False  # False while a build is running or was interrupted
    builder: dict[str, Any] = field(default_factory=dict)  # builder arguments; a re-run must match them

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitInfo:
        shards = [ShardInfo(**s) for s in d["shards"]]
        return cls(count=d["count"], shards=shards, complete=d["complete"], builder=d.get("builder", {}))


def vocabulary_table() -> list[dict[str, Any]]:
    """The class list stored in manifests, so a dataset names its labels without choi installed."""
    return [{"index": c.index, "name": c.name, "text": c.text, "object": c.object, "rare": c.rare} for c in CLASSES]


@dataclass
class Manifest:
    """Everything known about a dataset folder; stored as ``manifest.json``."""

    generator: str  # what produced the data: "hoi-world", "hico", "video"
    generator_version: str  # e.g. choi.world.WORLD_VERSION; bytes change when it does
    resolution: int | None  # square side in pixels; None when samples vary (real data)
    splits: dict[str, SplitInfo] = field(default_factory=dict)
    classes: list[dict[str, Any]] = field(default_factory=vocabulary_table)
    card: str = ""  # short human-readable dataset card
    schema_version: int = SCHEMA_VERSION
    choi_version: str = __version__
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        # No timestamps: an interrupted-then-resumed build writes the same manifest as a clean one.
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "splits"}
        splits = {name: SplitInfo.from_dict(s) for name, s in d.get("splits", {}).items()}
        return cls(**fields, splits=splits)

    def split(self, name: str | None = None) -> tuple[str, SplitInfo]:
        """``(name, info)`` of a complete split (the first complete one when ``name`` is None)."""
        if name is None:
            complete = [n for n, info in self.splits.items() if info.complete]
            if not complete:
                raise ChoiError("the dataset has no complete split yet; re-run its builder to finish it")
            name = complete[0]
        if name not in self.splits:
            raise ChoiError(f"no split '{name}' in the dataset; it has: {', '.join(self.splits)}")
        info = self.splits[name]
        if not info.complete:
            raise ChoiError(f"split '{name}' is incomplete (interrupted build?); re-run its builder to finish it")
        return name, info


def write_manifest(root: str | os.PathLike, manifest: Manifest) -> None:
    atomic_write_bytes(Path(root) / MANIFEST_NAME, manifest.to_json().encode())


def read_manifest(root: str | os.PathLike) -> Manifest:
    """Read and check ``root/manifest.json``; raises :class:`ChoiError` when it is missing or invalid."""
    root = Path(root)
    if not root.is_dir():
        raise ChoiError(f"dataset folder {root} does not exist")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ChoiError(f"{root} is not a choi dataset: no {MANIFEST_NAME}")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        manifest = Manifest.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ChoiError(f"cannot read {path}: {err}") from err
    if manifest.format_version > FORMAT_VERSION or manifest.schema_version > SCHEMA_VERSION:
        raise ChoiError(
            f"{path} needs a newer choi (format {manifest.format_version}, schema {manifest.schema_version})"
        )
    return manifest


# --- reader -------------------------------------------------------------------------------------


def iter_shard_records(paths: Iterable[str | os.PathLike]) -> Iterator[dict[str, Any]]:
    """Stream raw records (``__key__`` + ``field -> bytes``) from tar shards, one file open at a time."""
    for path in paths:
        with open(path, "rb") as f:
            # eof_value=None: shards never split a record, so no end-of-shard marker is needed.
            files = tar_file_expander([{"url": str(path), "stream": f}], eof_value=None)
            yield from group_by_keys(files)


def _shard_paths(root: Path, info: SplitInfo) -> list[Path]:
    paths = [root / s.name for s in info.shards]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ChoiError(f"{root} is missing shard(s) {', '.join(missing[:3])}; re-run its builder to restore them")
    return paths


def iter_samples(
    root: str | os.PathLike, split: str | None = None, limit: int | None = None, decode: bool = True
) -> Iterator[Sample] | Iterator[dict[str, Any]]:
    """Samples of ``split`` (all splits, in manifest order, when None) in stored order."""
    root = Path(root)
    manifest = read_manifest(root)
    names = list(manifest.splits) if split is None else [split]
    paths = [p for name in names for p in _shard_paths(root, manifest.split(name)[1])]
    return _decoded(itertools.islice(iter_shard_records(paths), limit), decode)


def interaction_counts(root: str | os.PathLike, split: str) -> dict[str, int]:
    """How many samples of ``split`` show each interaction (reads only the records' JSON, not the pixels)."""
    counts: dict[str, int] = {}
    for record in iter_samples(root, split=split, decode=False):
        name = json.loads(record["json"])["interaction"]
        counts[name] = counts.get(name, 0) + 1
    return counts


def _decoded(records: Iterator[dict[str, Any]], enabled: bool) -> Iterator[Any]:
    for record in records:
        yield decode(record) if enabled else record


def shuffle_buffer(items: Iterable[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Streaming shuffle: keep ``size`` items and emit a random one as each new item arrives."""
    buf: list[Any] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = int(rng.integers(size))
        yield buf[j]
        buf[j] = item
    order = rng.permutation(len(buf))
    yield from (buf[j] for j in order)


def _default_rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardDataset(torch.utils.data.IterableDataset):
    """Stream one split of a dataset folder, as :class:`Sample` objects or raw records.

    Work is split over distributed ranks and DataLoader workers (``rank * num_workers + worker``
    makes ``P = world_size * num_workers`` streams). With at least ``P`` shards each stream reads
    whole shards (``shards[stream::P]``, after the epoch's shard shuffle); with fewer shards every
    stream reads all of them and keeps samples ``j`` with ``j % P == stream``. Either way the union
    over all streams is exactly the split, once. Ranks may receive unequal counts (a trainer that
    needs equal steps per rank should cap or pad them).

    ``shuffle_buffer > 0`` shuffles the shard order (same on every rank) and then samples through
    a buffer of that size, seeded by ``(seed, epoch)``; call :meth:`set_epoch` each epoch, as with
    ``DistributedSampler`` (DataLoader workers copy the dataset when an epoch starts, so this needs
    ``persistent_workers=False``, the default). Memory use is bounded by the buffer: nothing loads the whole split.

    Example:
        >>> ds = ShardDataset("data/hoiw", split="train", shuffle_buffer=256, seed=0)
        >>> ds.set_epoch(3)
        >>> sample = next(iter(ds))  # a choi.data.schema.Sample
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        shuffle_buffer: int = 0,
        seed: int = 0,
        decode: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.split, info = self.manifest.split(split)
        self.paths = _shard_paths(self.root, info)
        self.num_samples = info.count
        if shuffle_buffer < 0:
            raise ChoiError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.decode = decode
        # Read torch.distributed here, in the main process: DataLoader workers do not inherit it.
        default_rank, default_world = _default_rank()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ChoiError(f"need 0 <= rank < world_size, got rank={self.rank}, world_size={self.world_size}")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _stream(self) -> tuple[int, int]:
        """``(stream index, number of streams)`` for the calling rank and DataLoader worker."""
        worker = torch.utils.data.get_worker_info()
        worker_id, num_workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
        return self.rank * num_workers + worker_id, self.world_size * num_workers

    def __iter__(self) -> Iterator[Any]:
        stream, streams = self._stream()
        order = np.arange(len(self.paths))
        if self.shuffle_buffer > 0:
            # Seeded without the stream index: every rank/worker must agree on the shard order.
            np.random.default_rng([self.seed, self.epoch]).shuffle(order)
        if len(order) >= streams:
            records: Iterator[dict[str, Any]] = iter_shard_records(self.paths[k] for k in order[stream::streams])
        else:
            every = iter_shard_records(self.paths[k] for k in order)
            records = (r for j, r in enumerate(every) if j % streams == stream)
        if self.shuffle_buffer > 0:
            rng = np.random.default_rng([self.seed, self.epoch, stream])
            records = shuffle_buffer(records, self.shuffle_buffer, rng)
        # Decode after the buffer: it then holds compressed bytes, not arrays.
        return _decoded(records, self.decode)
