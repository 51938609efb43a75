"""Generation requests, one at a time or in batches: check, run, save; skip what is already done.

A batch is a JSON Lines file, one request per line with the fields of
:class:`~choi.pipelines.request.GenerationRequest` (``choi generate``'s options: ``human``, ``object``,
``interaction``, ``background``, ``box``, ``mask``, ``seed``, ``num_images``, ``mask_steps``,
``mask_guidance``, ``steps``, ``guidance``, ``options``, ...) and an optional ``id``.
Relative paths are relative to the jobs file. Job ``j``
writes to ``OUT/<id>`` (or ``OUT/<line number>``); it is done when its ``choi.json`` exists, which
:meth:`CHOIOutput.save` writes last, so a killed batch re-run redoes only the unfinished jobs.

Started by ``accelerate launch -m choi generate --jobs FILE`` (or ``torchrun``), the processes share
the batch: process ``r`` of ``N`` takes jobs ``r, r + N, ...``, each on its own GPU, and the main
process logs the summary of all of them.

Example:
    >>> jobs = read_jobs("requests.jsonl")
    >>> summary = run_jobs(jobs, "out/", lambda: load_pipeline())
    >>> summary.failed  # [(job id, one-line message), ...]
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from choi.errors import ChoiError, quote
from choi.launch import cpu_processes, process_count
from choi.pipelines.request import PATH_FIELDS, GenerationRequest

log = logging.getLogger(__name__)

DONE_FILE = "choi.json"  # written last by CHOIOutput.save: its presence means the job is complete
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "float32": "float32", "float16": "float16",
          "bfloat16": "bfloat16"}  # fmt: skip
DEVICES = ("cpu", "cuda", "mps")
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a safe folder name: no "/", no "..", no hidden files


def check_files(request: GenerationRequest) -> None:
    """Every file the request names exists: checked before a model loads, so a typo fails fast."""
    for name in PATH_FIELDS:
        value = getattr(request, name)
        if isinstance(value, str | os.PathLike) and not _is_file(value):
            raise ChoiError(f"{name.replace('_', ' ')} not found: {quote(value, path=True)}")


def _is_file(path: str | os.PathLike) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: not a file either
        return False


def generate(pipe: Any, request: GenerationRequest, out_dir: str | os.PathLike, progress: bool = False) -> Any:
    """Run ``pipe`` on ``request``, save the outputs in ``out_dir`` (``choi.json`` last) and return them."""
    bar = tqdm(desc="generating", unit="step", disable=None if progress else True, leave=False)

    def callback(stage: str, step: int, total: int) -> None:
        bar.set_description(f"{stage} stage")
        bar.total = total
        bar.n = step
        bar.refresh()

    try:
        out = pipe(request, callback=callback)
    finally:
        bar.close()
    out.save(out_dir)
    return out


def load_pipeline(model: str | None = None, device: str = "cpu", dtype: str = "float32", offload: bool = False) -> Any:
    """:class:`~choi.pipelines.choi.CHOIPipeline` from a name (``choi-tiny``) or folder, on ``device``.

    ``offload``: stage 2's models sit in CPU memory and each visits ``device`` only while it runs
    (diffusers' model CPU offload; families that support it).
    """
    import torch

    if device not in DEVICES:
        raise ChoiError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise ChoiError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ChoiError("--device cuda: no CUDA GPU is available to this torch build; use --device cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ChoiError("--device mps: no Apple GPU is available to this torch build; use --device cpu")
    if offload and device == "cpu":
        raise ChoiError("--offload moves models to a GPU only while they run; give --device cuda or mps")
    from choi.pipelines.choi import CHOIPipeline

    torch_dtype = getattr(torch, DTYPES[dtype])
    pipe = CHOIPipeline.from_pretrained(model or "choi-tiny", device="cpu" if offload else device,
                                        torch_dtype=torch_dtype)  # fmt: skip
    if offload:
        if not hasattr(pipe.image_stage, "enable_model_cpu_offload"):
            raise ChoiError(f"--offload: the {pipe.family} family is small enough to run whole on {device}; drop it")
        pipe.mask_stage.to(device)
        pipe.image_stage.enable_model_cpu_offload(device)
    return pipe


# --- batches --------------------------------------------------------------------------------------


@dataclass
class Job:
    """One line of a jobs file: its request, or why it could not be read."""

    id: str
    line: int
    request: GenerationRequest | None = None
    error: str | None = None


@dataclass
class Summary:
    total: int = 0
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already done by an earlier run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (job id, one-line reason)
    reports: bool = True  # False on a process that is not the main one: the main process reports the batch

    def __str__(self) -> str:
        text = f"{self.total} jobs: {len(self.done)} done, {len(self.skipped)} already done, {len(self.failed)} failed"
        return text + (f" ({', '.join(i for i, _ in self.failed)})" if self.failed else "")


def read_jobs(path: str | os.PathLike, defaults: Mapping[str, Any] | None = None) -> list[Job]:
    """Parse a JSON Lines jobs file. A bad line becomes a failed job; the other lines still run.

    ``defaults`` fill keys a line does not set (e.g. ``steps`` given on the command line).
    Blank lines and lines starting with ``#`` are skipped.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else "not UTF-8 text"
        raise ChoiError(f"cannot read jobs file {path}: {reason}") from err
    jobs: list[Job] = []
    seen: set[str] = set()
    for number, text in enumerate(lines, 1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        job = Job(id=str(number), line=number)
        try:
            values = json.loads(text)
            if not isinstance(values, dict):
                raise ChoiError("a job must be a JSON object {...}")
            job_id = values.pop("id", None)
            if job_id is not None:
                job.id = str(job_id)
                if not _JOB_ID.fullmatch(job.id):
                    raise ChoiError(f"id {job_id!r} is not a safe folder name (letters, digits, '.', '_', '-')")
            job.request = GenerationRequest.from_dict({**(defaults or {}), **values}, base=path.parent)
        except json.JSONDecodeError as err:
            job.error = f"not valid JSON ({err.msg} at column {err.colno})"
        except ChoiError as err:
            job.error = str(err)
        if job.id in seen:
            job.error, job.id = f"duplicate job id {job.id!r}", f"{job.id}@line{number}"
        seen.add(job.id)
        jobs.append(job)
    if not jobs:
        raise ChoiError(f"no jobs in {path}: write one JSON request per line")
    return jobs


def is_done(out_dir: str | os.PathLike) -> bool:
    return (Path(out_dir) / DONE_FILE).is_file()


def run_jobs(
    jobs: Iterable[Job],
    out: str | os.PathLike,
    pipeline: Callable[[], Any],
    progress: bool = True,
) -> Summary:
    """Run every job not already done into ``out/<job id>``; a failing job is logged and the rest go on.

    ``pipeline`` is called once, on the first job that needs it: a re-run with nothing left to do
    loads no model. Under ``accelerate launch`` / ``torchrun`` this process runs only its share
    (:func:`process_share`); the main process returns the summary of the whole batch, the others
    their own share's.
    """
    jobs = list(jobs)
    state = distributed_state()
    if state is None:
        summary = _run_share(jobs, out, pipeline, progress)
        log.info("%s", summary)
        return summary
    mine = process_share(jobs, state.process_index, state.num_processes)
    try:
        who = f"process {state.process_index} of {state.num_processes}"
        summary, error = _run_share(mine, out, pipeline, progress and state.is_main_process, who), None
    except ChoiError as err:  # the model did not load: still meet the others, or they would wait forever
        summary, error = Summary(total=len(mine)), str(err)
    parts = _gather((summary, error), state.num_processes)
    errors = [e for _, e in parts if e is not None]
    if errors:
        raise ChoiError(errors[0])
    if not state.is_main_process:
        summary.reports = False
        return summary
    merged = merge_summaries(jobs, [s for s, _ in parts])
    log.info("%s (%d processes)", merged, state.num_processes)
    return merged


def distributed_state() -> Any:
    """accelerate's ``PartialState`` when ``accelerate launch`` / ``torchrun`` started several processes
    (it also gives each process its own GPU); None for a single process, which stays as it always was."""
    if process_count() <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=cpu_processes())  # with GPUs, each process its own


def process_share(jobs: list[Job], index: int, count: int) -> list[Job]:
    """The jobs process ``index`` of ``count`` runs: every ``count``-th from the ``index``-th, so the
    shares are disjoint, cover the batch, and stay even when jobs are ordered by cost."""
    if not 0 <= index < count:
        raise ValueError(f"process index {index} is not in [0, {count})")
    return jobs[index::count]


def _gather(value: Any, count: int) -> list[Any]:
    import torch.distributed as dist

    parts: list[Any] = [None] * count
    dist.all_gather_object(parts, value)
    return parts


def merge_summaries(jobs: list[Job], parts: Iterable[Summary]) -> Summary:
    """One summary of the whole batch from the processes' summaries, in the jobs file's order."""
    status: dict[str, tuple[str, str | None]] = {}
    for part in parts:
        status |= {i: ("done", None) for i in part.done} | {i: ("skipped", None) for i in part.skipped}
        status |= {i: ("failed", reason) for i, reason in part.failed}
    merged = Summary(total=len(jobs))
    for job in jobs:
        kind, reason = status.get(job.id, ("failed", "no process ran it"))
        if kind == "done":
            merged.done.append(job.id)
        elif kind == "skipped":
            merged.skipped.append(job.id)
        else:
            merged.failed.append((job.id, reason or ""))
    return merged


def _run_share(
    jobs: list[Job], out: str | os.PathLike, pipeline: Callable[[], Any], progress: bool, who: str = "this process"
) -> Summary:
    summary, pipe = Summary(total=len(jobs)), None
    for job in tqdm(jobs, desc="jobs", unit="job", disable=None if progress else True):
        target = Path(out) / job.id
        if job.error is None and is_done(target):
            summary.skipped.append(job.id)
            continue
        try:
            if job.error is not None:
                raise ChoiError(job.error)
            assert job.request is not None
            check_files(job.request)  # before the model loads: a batch of bad requests fails fast
        except ChoiError as err:
            _failed(summary, job, err)
            continue
        # A model that cannot load fails every job alike: that stops the batch (a ChoiError for the caller).
        pipe = pipe or pipeline()
        try:
            generate(pipe, job.request, target)
            summary.done.append(job.id)
            log.debug("%s ran job %s", who, job.id)
        except Exception as err:  # noqa: BLE001 - one bad job (bad input, OOM, ...) must not stop the batch
            _failed(summary, job, err)
    return summary


def _failed(summary: Summary, job: Job, err: Exception) -> None:
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if not isinstance(err, ChoiError):
        message = f"{type(err).__name__}: {message}"
        log.debug("job %s failed", job.id, exc_info=True)
    log.error("job %s (line %d) failed: %s", job.id, job.line, message)
    summary.failed.append((job.id, message))
