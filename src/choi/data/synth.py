"""Build a HOI-World dataset: render samples with :func:`choi.world.render_sample` into tar shards.

Sample ``i`` of a split is ``render_sample(split, i, seed, resolution)`` and shard ``k`` holds
samples ``[k * shard_size, (k + 1) * shard_size)``, so every shard is a pure function of the
builder arguments. That is what makes the build resumable and parallel: a re-run renders only the
shards that are absent (writes are atomic, so a present shard is complete), and workers rendering
whole shards produce the same bytes as one process.

Example:
    >>> build_synth("data/hoiw", SynthConfig(n=20000, split="train", seed=0), workers=2)
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from choi import __version__
from choi.data.building import describe_difference, init_worker
from choi.data.schema import SCHEMA_VERSION, Sample, encode
from choi.data.shards import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    ShardInfo,
    ShardWriter,
    SplitInfo,
    file_sha256,
    read_manifest,
    remove_stale_temp_files,
    shard_name,
    write_manifest,
)
from choi.errors import ChoiError
from choi.io import TMP_SUFFIX, make_output_folder
from choi.vocabulary import RARE_NAMES

log = logging.getLogger(__name__)

GENERATOR = "hoi-world"
SPLITS = ("train", "test")
RESOLUTIONS = (64, 128, 256)


@dataclass(frozen=True)
class SynthConfig:
    """Arguments of one split's build; all of them except ``split`` are recorded in the manifest."""

    n: int  # samples in the split
    split: str = "train"  # train and test draw disjoint human/object identities
    seed: int = 0
    resolution: int = 128
    shard_size: int = 1000  # ~25 MB per shard at 128 px: big enough for streaming, small enough to resume

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ChoiError(f"split must be one of {', '.join(SPLITS)}, got '{self.split}'")
        if self.n <= 0:
            raise ChoiError(f"--n must be a positive number of samples, got {self.n}")
        if self.shard_size <= 0:
            raise ChoiError(f"--shard-size must be positive, got {self.shard_size}")
        if self.seed < 0:
            raise ChoiError(f"--seed must be >= 0, got {self.seed}")
        if self.resolution not in RESOLUTIONS:
            raise ChoiError(f"--resolution must be one of {RESOLUTIONS}, got {self.resolution}")

    @property
    def num_shards(self) -> int:
        return -(-self.n // self.shard_size)

    def shard_range(self, k: int) -> range:
        return range(k * self.shard_size, min((k + 1) * self.shard_size, self.n))

    def builder_args(self, world_version: str) -> dict[str, Any]:
        return {
            "builder": "choi.data.synth",
            "n": self.n,
            "seed": self.seed,
            "resolution": self.resolution,
            "shard_size": self.shard_size,
            "world_version": world_version,
        }


def _world() -> tuple[Callable[..., Sample], str]:
    # Imported lazily: the shard format and reader must work without the renderer loaded.
    from choi.world import WORLD_VERSION, render_sample

    return render_sample, WORLD_VERSION


def render_shard(
    path: str | os.PathLike,
    cfg: SynthConfig,
    k: int,
    render_sample: Callable[..., Sample],
    progress: Callable[[int], Any] | None = None,
) -> int:
    """Render shard ``k`` of ``cfg`` with ``render_sample`` into ``path`` (atomically); returns its size.

    ``progress(1)`` is called after each sample; an exception it raises aborts the shard cleanly.
    """
    with ShardWriter(path) as writer:
        for i in cfg.shard_range(k):
            sample = render_sample(cfg.split, i, cfg.seed, resolution=cfg.resolution)
            if sample.resolution != (cfg.resolution, cfg.resolution):
                raise RuntimeError(f"render_sample returned {sample.resolution}, asked for {cfg.resolution}")
            writer.write(encode(sample))
            if progress is not None:
                progress(1)
    return writer.count


class _Orphaned(Exception):
    """The builder process that started this worker is gone (killed with SIGKILL, say)."""


def _render_shard_job(job: tuple[str, SynthConfig, int, Callable[..., Sample], int]) -> int:
    path, cfg, k, render_sample, builder_pid = job

    def check_builder(_: int) -> None:
        if os.getppid() != builder_pid:
            raise _Orphaned

    try:
        return render_shard(path, cfg, k, render_sample, progress=check_builder)
    except _Orphaned:
        # Nobody is left to report to, and finishing the shard would race with a re-run. The temp
        # file is already removed; exit without the pool's broken-pipe traceback.
        os._exit(1)


def _card(manifest: Manifest) -> str:
    counts = ", ".join(f"{name} {info.count}" for name, info in manifest.splits.items())
    return (
        f"HOI-World: procedurally rendered human-object interaction images ({manifest.resolution}x"
        f"{manifest.resolution}, world {manifest.generator_version}, choi {manifest.choi_version}). "
        f"Splits: {counts}; train and test use disjoint human and object identities. Each sample has "
        "a target image, human/object masks and boxes, 14 keypoints, the interaction class and text, "
        "identity ids, a human and an object reference (each alone, other pose/view) with masks, and "
        f"the background alone. Rare classes (scarce in train): {', '.join(RARE_NAMES)}. "
        "Fully synthetic: no real people or photos."
    )


def _checked_manifest(root: Path, cfg: SynthConfig, world_version: str) -> Manifest:
    """The folder's manifest (a new one for an empty folder), checked against this run's arguments."""
    if not (root / MANIFEST_NAME).exists():
        # Our own temp files may be all a run killed during its first manifest write left behind.
        if any(not (p.name.startswith(".") and p.name.endswith(TMP_SUFFIX)) for p in root.iterdir()):
            raise ChoiError(f"--out {root} is not empty and is not a choi dataset (no {MANIFEST_NAME})")
        return Manifest(generator=GENERATOR, generator_version=world_version, resolution=cfg.resolution)

    manifest = read_manifest(root)
    for what, have, want in [
        ("generator", manifest.generator, GENERATOR),
        ("world version", manifest.generator_version, world_version),
        ("resolution", manifest.resolution, cfg.resolution),
        ("schema version", manifest.schema_version, SCHEMA_VERSION),
        ("format version", manifest.format_version, FORMAT_VERSION),
    ]:
        if have != want:
            raise ChoiError(f"dataset {root} has {what} {have}, this run needs {want}; use another --out")
    args = cfg.builder_args(world_version)
    existing = manifest.splits.get(cfg.split)
    if existing is not None and existing.builder != args:
        raise ChoiError(
            f"split '{cfg.split}' in {root} {describe_difference(existing.builder, args)}; "
            "re-run with the same arguments to resume, or use another --out"
        )
    return manifest


def build_synth(out: str | os.PathLike, cfg: SynthConfig, workers: int = 1) -> Manifest:
    """Render ``cfg.split`` into the dataset folder ``out``, completing any missing shards.

    ``out`` may already hold the other split (same resolution and world version). Re-running with
    the same arguments finishes an interrupted build with identical bytes; different arguments for
    an existing split raise :class:`ChoiError`. Returns the updated manifest.
    """
    if workers <= 0:
        raise ChoiError(f"--workers must be positive, got {workers}")
    root = Path(out)
    render_sample, world_version = _world()
    make_output_folder(root)
    try:
        manifest = _checked_manifest(root, cfg, world_version)
        # Only this split's and the manifest's: a build of the other split may be running here.
        for prefix in (f"{cfg.split}-", MANIFEST_NAME):
            remove_stale_temp_files(root, prefix)
        if cfg.split not in manifest.splits:
            shards = [ShardInfo(shard_name(cfg.split, k), len(cfg.shard_range(k))) for k in range(cfg.num_shards)]
            args = cfg.builder_args(world_version)
            manifest.splits[cfg.split] = SplitInfo(count=cfg.n, shards=shards, complete=False, builder=args)
            # Recorded before any shard exists, so a re-run after a kill can still check its arguments.
            write_manifest(root, manifest)

        todo = [k for k in range(cfg.num_shards) if not (root / shard_name(cfg.split, k)).exists()]
        _render_shards(root, cfg, todo, render_sample, workers)

        split = manifest.splits[cfg.split]
        split.shards = [ShardInfo(s.name, s.count, file_sha256(root / s.name)) for s in split.shards]
        split.complete = True
        # Re-read just before writing: another split may have been added to the folder meanwhile.
        manifest = _checked_manifest(root, cfg, world_version)
        manifest.splits[cfg.split] = split
        manifest.choi_version = __version__
        manifest.card = _card(manifest)
        write_manifest(root, manifest)
    except OSError as err:
        # Disk full, permissions changed mid-run...: one line for the user, shards written so far stay.
        raise ChoiError(f"cannot write dataset {root}: {err}") from err
    log.info("%s: %d samples in %d shards in %s", cfg.split, cfg.n, cfg.num_shards, root)
    return manifest


def _render_shards(
    root: Path, cfg: SynthConfig, todo: list[int], render_sample: Callable[..., Sample], workers: int
) -> None:
    done = cfg.n - sum(len(cfg.shard_range(k)) for k in todo)
    if done:
        log.info("resuming %s: %d of %d shards already written", cfg.split, cfg.num_shards - len(todo), cfg.num_shards)
    # The render function travels to worker processes by reference (module + name).
    jobs = [(str(root / shard_name(cfg.split, k)), cfg, k, render_sample, os.getpid()) for k in todo]
    with tqdm(total=cfg.n, initial=done, unit="sample", desc=cfg.split, disable=not sys.stderr.isatty()) as bar:
        if workers == 1 or len(jobs) <= 1:
            for path, _, k, _, _ in jobs:
                render_shard(path, cfg, k, render_sample, progress=bar.update)
            return
        # spawn: workers start clean, without the parent's threads or locks (torch, tqdm).
        ctx = multiprocessing.get_context("spawn")
        try:
            with ctx.Pool(min(workers, len(jobs)), initializer=init_worker) as pool:
                for count in pool.imap_unordered(_render_shard_job, jobs):
                    bar.update(count)
        finally:
            # On an error the pool's workers are terminated mid-shard; the pool has joined them
            # by now, so their temp files can go (a re-run would remove them anyway).
            remove_stale_temp_files(root, f"{cfg.split}-")
