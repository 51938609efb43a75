"""Generation requests, one at a time or in batches: check, run, save; skip what is already done.

A batch is a JSON Lines file, one request per line with the keys of ``choi generate``'s options
(``human``, ``object``, ``interaction``, ``background``, ``box``, ``mask``, ``seed``, ``steps``,
``guidance``, ``mask_steps``, ``mask_guidance``, ``fit_object``, ``prior_strength``, ``layout_candidates``,
``num_images``) and an optional ``id``. Relative paths are relative to the jobs file. Job ``j``
writes to ``OUT/<id>`` (or ``OUT/<line number>``); it is done when its ``choi.json`` exists, which
:meth:`CHOIOutput.save` writes last, so a killed batch re-run redoes only the unfinished jobs.

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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from choi.data.segment import load_image
from choi.errors import ChoiError

log = logging.getLogger(__name__)

DONE_FILE = "choi.json"  # written last by CHOIOutput.save: its presence means the job is complete
MAX_IMAGES = 64  # per request; more is almost certainly a typo, and the candidates share memory
DTYPES = ("float32", "bfloat16")
DEVICES = ("cpu", "cuda")
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a safe folder name: no "/", no "..", no hidden files


@dataclass(frozen=True)
class Request:
    """One generation request, as typed on the command line or written on a jobs line.

    Paths stay strings (they are recorded in ``choi.json`` as given); :meth:`check` loads them.
    ``None`` means "the pipeline's default".
    """

    human: str
    object: str
    interaction: str
    background: str | None = None
    box: str | None = None  # normalised "x1,y1,x2,y2"
    mask: str | None = None  # colour-coded mask PNG (human red, object blue), e.g. an edited mask_K_preview.png
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    mask_steps: int | None = None
    mask_guidance: float | None = None
    fit_object: bool | None = None  # stage-1 object masks fitted to the reference's outline (default: on)
    prior_strength: str | None = None  # "H,O": how much of each warped reference stage 2 keeps as it is
    layout_candidates: int | None = None  # stage-1 layouts drawn per image, the best-fitting kept
    num_images: int = 1

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base: Path | None = None) -> Request:
        """Build from a jobs line (or CLI options): unknown keys, missing keys and wrong types raise ChoiError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            run_wide = {"model", "device", "dtype", "out"} & set(unknown)
            hint = f" ({', '.join(sorted(run_wide))}: set for the whole batch on the command line)" if run_wide else ""
            raise ChoiError(
                f"unknown key(s) {', '.join(map(repr, unknown))}{hint}; allowed: {', '.join(sorted(known))}"
            )
        missing = [k for k in ("human", "object", "interaction") if values.get(k) in (None, "")]
        if missing:
            raise ChoiError(
                f"missing {', '.join(map(repr, missing))}: every request needs human, object and interaction"
            )
        out: dict[str, Any] = {}
        for key, value in values.items():
            if value is None:
                continue
            if key in ("human", "object", "background", "mask"):
                value = _path(key, value, base)
            elif key == "interaction":
                value = _typed(key, value, str)
            elif key in ("box", "prior_strength"):
                value = ",".join(str(v) for v in value) if isinstance(value, list | tuple) else _typed(key, value, str)
            elif key in ("seed", "steps", "mask_steps", "num_images", "layout_candidates"):
                value = _typed(key, value, int)
            elif key == "fit_object":
                value = _typed(key, value, bool)
            else:
                value = float(_typed(key, value, (int, float)))
            out[key] = value
        return cls(**out)

    def check(self) -> dict[str, Any]:
        """Validate every input without a model; returns the pipeline keyword arguments (images loaded).

        Raises :class:`ChoiError` naming the first bad input: nothing is generated or written before.
        """
        from choi.models.image_generator import check_prior_strength
        from choi.pipelines.choi import MAX_LAYOUT_CANDIDATES
        from choi.pipelines.mask import parse_box
        from choi.vocabulary import resolve

        resolve(self.interaction)
        box = parse_box(self.box) if self.box is not None else None
        strength = check_prior_strength(self.prior_strength) if self.prior_strength is not None else None
        for name, value, low, high in (
            ("seed", self.seed, 0, 2**63 - 1),
            ("steps", self.steps, 1, 1000),
            ("mask_steps", self.mask_steps, 1, 1000),
            ("num_images", self.num_images, 1, MAX_IMAGES),
            ("layout_candidates", self.layout_candidates, 1, MAX_LAYOUT_CANDIDATES),
        ):
            if value is not None and not low <= value <= high:
                raise ChoiError(f"{name} must be in [{low}, {high}], got {value}")
        for name, value in (("guidance", self.guidance), ("mask_guidance", self.mask_guidance)):
            if value is not None and not (np.isfinite(value) and value >= 0):
                raise ChoiError(f"{name} must be a number >= 0, got {value}")
        return {
            "human": load_image(self.human, "human image"),
            "object": load_image(self.object, "object image"),
            "interaction": self.interaction,
            "background": load_image(self.background, "background image") if self.background else None,
            "box": box,
            "mask": load_image(self.mask, "mask image")[..., :3] if self.mask else None,
            "num_images": self.num_images,
            "seed": self.seed,
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance,
            "mask_steps": self.mask_steps,
            "mask_guidance": self.mask_guidance,
            "fit_object": True if self.fit_object is None else self.fit_object,
            "prior_strength": strength,
            "layout_candidates": self.layout_candidates,
        }

    def inputs(self) -> dict[str, Any]:
        """The request as recorded in ``choi.json``."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def _path(key: str, value: Any, base: Path | None) -> str:
    text = _typed(key, value, str)
    return str(base / text) if base is not None and not Path(text).is_absolute() else text


def _typed(key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    # bool is an int in Python; "seed": true is a mistake, not seed 1.
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ChoiError(f"{key!r} must be a {names}, got {value!r}")
    return value


def generate(
    pipe: Any,
    request: Request,
    out_dir: str | os.PathLike,
    checked: dict[str, Any] | None = None,
    progress: bool = False,
) -> Any:
    """Run ``pipe`` on ``request``, save the outputs in ``out_dir`` (``choi.json`` last) and return them.

    ``checked`` is what :meth:`Request.check` returned, when the caller already checked the request.
    """
    kwargs = checked if checked is not None else request.check()
    bar = tqdm(desc="generating", unit="step", disable=None if progress else True, leave=False)

    def callback(stage: str, step: int, total: int) -> None:
        bar.set_description(f"{stage} stage")
        bar.total = total
        bar.n = step
        bar.refresh()

    try:
        out = pipe(**kwargs, callback=callback)
    finally:
        bar.close()
    out.save(out_dir, inputs=request.inputs())
    return out


def load_pipeline(model: str | None = None, device: str = "cpu", dtype: str = "float32") -> Any:
    """:class:`~choi.pipelines.choi.CHOIPipeline` from a name (``choi-tiny``) or folder, on ``device``."""
    import torch

    if device not in DEVICES:
        raise ChoiError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise ChoiError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ChoiError("--device cuda: no CUDA GPU is available to this torch build; use --device cpu")
    from choi.pipelines.choi import CHOIPipeline

    return CHOIPipeline.from_pretrained(model or "choi-tiny", device=device, torch_dtype=getattr(torch, dtype))


# --- batches --------------------------------------------------------------------------------------


@dataclass
class Job:
    """One line of a jobs file: its request, or why it could not be read."""

    id: str
    line: int
    request: Request | None = None
    error: str | None = None


@dataclass
class Summary:
    total: int = 0
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already done by an earlier run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (job id, one-line reason)

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
            job.request = Request.from_dict({**(defaults or {}), **values}, base=path.parent)
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
    loads no model.
    """
    jobs = list(jobs)
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
            checked = job.request.check()  # before the model loads: a batch of bad requests fails fast
        except ChoiError as err:
            _failed(summary, job, err)
            continue
        # A model that cannot load fails every job alike: that stops the batch (a ChoiError for the caller).
        pipe = pipe or pipeline()
        try:
            generate(pipe, job.request, target, checked=checked)
            summary.done.append(job.id)
        except Exception as err:  # noqa: BLE001 - one bad job (bad input, OOM, ...) must not stop the batch
            _failed(summary, job, err)
    log.info("%s", summary)
    return summary


def _failed(summary: Summary, job: Job, err: Exception) -> None:
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if not isinstance(err, ChoiError):
        message = f"{type(err).__name__}: {message}"
        log.debug("job %s failed", job.id, exc_info=True)
    log.error("job %s (line %d) failed: %s", job.id, job.line, message)
    summary.failed.append((job.id, message))
