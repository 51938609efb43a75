"""The build loop shared by the real-data builders: work units → tar shards, rejects, manifest.

A build's input is cut into numbered *units* (a fixed number of input items each, in a fixed
order). Unit ``k`` becomes shard ``{split}-{k:06d}.tar`` plus a small record
``parts/{split}-{k:06d}.json`` (accepted count, rejected items) written *after* the shard, so a
unit is done exactly when its record exists. That makes the build:

- resumable: a re-run processes only units without a record (a shard without a record is redone);
- shardable across machines: ``--shard i/N`` processes units ``k`` with ``k % N == i``; the
  manifest marks the split complete once every unit has its record (re-run any shard to finalise);
- parallel: ``--workers K`` processes whole units in K processes.

``rejects.jsonl`` is rebuilt from the unit records after each run, so it never holds duplicates.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import sys
from collections import Counter
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
from choi.io import TMP_SUFFIX, atomic_write_text, make_output_folder

log = logging.getLogger(__name__)

PARTS = "parts"
REJECTS_NAME = "rejects.jsonl"

# process(cfg, k, items, progress) -> (samples, rejects): the builder's work for unit k, whose input
# items are ``items``; it calls progress(1) after each item.
ProcessUnit = Callable[[Any, int, list[Any], Callable[[int], Any]], tuple[list[Sample], list[dict[str, Any]]]]


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/N"`` → ``(i, N)``; None → ``(0, 1)``. Raises :class:`ChoiError` on anything else."""
    if text is None:
        return 0, 1
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ChoiError(f"--shard must be i/N with 0 <= i < N (e.g. 0/4), got '{text}'")
    return int(match[1]), int(match[2])


def safe_key_part(text: str) -> str:
    """``text`` usable inside a sample key (no '.', '/', spaces...)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "x"


def part_path(root: Path, split: str, k: int) -> Path:
    return root / PARTS / f"{split}-{k:06d}.json"


@dataclass(frozen=True)
class BuildSpec:
    """What every real-data build has in common."""

    generator: str  # "hico" | "video"
    generator_version: str  # versions of what made the masks (mediapipe, opencv, SAM)
    split: str
    resolution: int
    num_units: int
    builder_args: dict[str, Any]  # recorded in the manifest; a re-run must match them
    card: str  # dataset card text (counts are appended)


def write_unit(root: Path, spec: BuildSpec, k: int, samples: list[Sample], rejects: list[dict[str, Any]]) -> int:
    """Shard then record for unit ``k`` (both atomic, in that order); returns the accepted count."""
    with ShardWriter(root / shard_name(spec.split, k)) as writer:
        for sample in samples:
            writer.write(encode(sample))
    record = {"unit": k, "count": writer.count, "rejects": rejects}
    atomic_write_text(part_path(root, spec.split, k), json.dumps(record, sort_keys=True) + "\n")
    return writer.count


def _unit_job(job: tuple[Path, BuildSpec, ProcessUnit, Any, int, list[Any]]) -> int:
    root, spec, process, cfg, k, items = job
    samples, rejects = process(cfg, k, items, lambda _n: None)
    write_unit(root, spec, k, samples, rejects)
    return len(items)


def _checked_manifest(root: Path, spec: BuildSpec) -> Manifest:
    if not (root / MANIFEST_NAME).exists():
        allowed = {PARTS}
        strays = [p for p in root.iterdir() if p.name not in allowed and not p.name.endswith(TMP_SUFFIX)]
        if strays:
            raise ChoiError(f"--out {root} is not empty and is not a choi dataset (no {MANIFEST_NAME})")
        return Manifest(generator=spec.generator, generator_version=spec.generator_version, resolution=spec.resolution)
    manifest = read_manifest(root)
    for what, have, want in [
        ("generator", manifest.generator, spec.generator),
        ("resolution", manifest.resolution, spec.resolution),
        ("schema version", manifest.schema_version, SCHEMA_VERSION),
        ("format version", manifest.format_version, FORMAT_VERSION),
    ]:
        if have != want:
            raise ChoiError(f"dataset {root} has {what} {have}, this run needs {want}; use another --out")
    existing = manifest.splits.get(spec.split)
    if existing is not None and existing.builder != spec.builder_args:
        raise ChoiError(
            f"split '{spec.split}' in {root} {describe_difference(existing.builder, spec.builder_args)}; "
            "re-run with the same arguments to resume, or use another --out"
        )
    return manifest


def prepare_folder(out: str | os.PathLike, spec: BuildSpec) -> Path:
    """Create/check ``out`` for ``spec`` before any work (wrong folder or arguments: :class:`ChoiError`)."""
    root = Path(out)
    make_output_folder(root)
    _checked_manifest(root, spec)
    (root / PARTS).mkdir(exist_ok=True)
    return root


def run_build(
    out: str | os.PathLike,
    spec: BuildSpec,
    process: ProcessUnit,
    cfg: Any,
    *,
    units: list[list[Any]],
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
) -> dict[str, Any]:
    """Process this machine's missing units of ``spec`` into ``out``; returns the build summary.

    ``units[k]`` holds the input items of unit ``k``; ``len(units)`` must be ``spec.num_units``.
    The summary counts accepted samples and rejected items by reason over every finished unit.
    """
    if workers <= 0:
        raise ChoiError(f"--workers must be positive, got {workers}")
    root = Path(out)
    make_output_folder(root)
    try:
        manifest = _checked_manifest(root, spec)
        (root / PARTS).mkdir(exist_ok=True)
        for prefix in (f"{spec.split}-", MANIFEST_NAME):
            remove_stale_temp_files(root, prefix)
        remove_stale_temp_files(root / PARTS, f"{spec.split}-")
        if spec.split not in manifest.splits:
            manifest.splits[spec.split] = SplitInfo(count=0, shards=[], complete=False, builder=spec.builder_args)
            write_manifest(root, manifest)  # records the arguments before any shard exists

        mine = [k for k in range(spec.num_units) if k % shard[1] == shard[0]]
        todo = [k for k in mine if not part_path(root, spec.split, k).exists()]
        if len(todo) < len(mine):
            log.info("resuming %s: %d of %d units already done", spec.split, len(mine) - len(todo), len(mine))
        _process_units(root, spec, process, cfg, [(k, units[k]) for k in todo], workers)
        return _finalise(root, spec)
    except OSError as err:
        raise ChoiError(f"cannot write dataset {root}: {err}") from err


def _process_units(
    root: Path, spec: BuildSpec, process: ProcessUnit, cfg: Any, todo: list[tuple[int, list[Any]]], workers: int
) -> None:
    total = sum(len(items) for _, items in todo)
    with tqdm(total=total, unit="item", desc=spec.split, disable=not sys.stderr.isatty()) as bar:
        if workers == 1 or len(todo) <= 1:
            for k, items in todo:
                samples, rejects = process(cfg, k, items, bar.update)
                write_unit(root, spec, k, samples, rejects)
            return
        # The process function travels to the workers by reference (module + name).
        jobs = [(root, spec, process, cfg, k, items) for k, items in todo]
        ctx = multiprocessing.get_context("spawn")  # workers start clean (no torch/tqdm threads)
        try:
            with ctx.Pool(min(workers, len(jobs)), initializer=init_worker) as pool:
                for n_items in pool.imap_unordered(_unit_job, jobs):
                    bar.update(n_items)
        finally:
            remove_stale_temp_files(root, f"{spec.split}-")
            remove_stale_temp_files(root / PARTS, f"{spec.split}-")


def _finalise(root: Path, spec: BuildSpec) -> dict[str, Any]:
    """Rebuild rejects.jsonl and the manifest from the unit records present now."""
    records = []
    for k in range(spec.num_units):
        path = part_path(root, spec.split, k)
        if path.exists() and (root / shard_name(spec.split, k)).exists():
            records.append(json.loads(path.read_text()))
    done = len(records) == spec.num_units
    reasons: Counter[str] = Counter()
    lines = []
    for rec in records:
        for reject in rec["rejects"]:
            reasons[reject["reason"]] += 1
            lines.append(json.dumps({"split": spec.split, **reject}, sort_keys=True))
    _write_rejects(root, spec.split, lines)
    accepted = sum(rec["count"] for rec in records)
    summary = {
        "split": spec.split,
        "units_done": len(records),
        "units": spec.num_units,
        "complete": done,
        "accepted": accepted,
        "rejected": sum(reasons.values()),
        "rejected_by_reason": dict(sorted(reasons.items())),
    }

    manifest = _checked_manifest(root, spec)  # re-read: another split or machine may have written
    shards = [
        ShardInfo(
            shard_name(spec.split, rec["unit"]),
            rec["count"],
            file_sha256(root / shard_name(spec.split, rec["unit"])) if done else "",
        )
        for rec in records
    ]
    manifest.splits[spec.split] = SplitInfo(count=accepted, shards=shards, complete=done, builder=spec.builder_args)
    manifest.choi_version = __version__
    counts = ", ".join(f"{name} {info.count}" for name, info in manifest.splits.items())
    manifest.card = f"{spec.card} Splits: {counts}. Rejected items and reasons: {REJECTS_NAME}."
    write_manifest(root, manifest)
    log.info(
        "%s: %d accepted, %d rejected%s%s",
        spec.split,
        accepted,
        summary["rejected"],
        "".join(f"; {r}: {n}" for r, n in summary["rejected_by_reason"].items()),
        "" if done else f" ({len(records)} of {spec.num_units} units done; re-run to complete)",
    )
    return summary


def _write_rejects(root: Path, split: str, lines: list[str]) -> None:
    """rejects.jsonl holds every split's rejects: keep the other splits' lines, replace this one's."""
    path = root / REJECTS_NAME
    keep = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                if json.loads(line).get("split") != split:
                    keep.append(line)
            except json.JSONDecodeError:
                continue
    atomic_write_text(path, "".join(f"{line}\n" for line in keep + lines))
