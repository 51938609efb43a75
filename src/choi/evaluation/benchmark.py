"""`choi eval`: the benchmark runner, on HOI-World and on real-photo datasets (`choi data hico|video`).

1. One request list from the test split (seeded), the same for every method.
2. Each method's outputs cached under ``REPORT/outputs/<method>/``: a re-run computes only what
   is missing; a method that cannot run is reported as missing, never faked. The rows that run a
   choi model (choi-tiny, single-stage, gt-mask) run ``--model`` (default: the shipped choi-tiny),
   and their cache remembers which.
3. Evaluators validated on ground truth and on negative controls. choi's own evaluators are trained
   on HOI-World: on real photos they are skipped (said once), leaving the DINO / CLIP metrics
   (``--dino``/``--clip``, :mod:`choi.evaluation.foundation`) and box adherence.
4. Metrics per method → ``metrics.json``; ``report.md`` with the table, charts and sample grids.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from choi import __version__
from choi.data.batch import object_look_key
from choi.data.schema import Sample
from choi.data.shards import iter_samples, read_manifest
from choi.errors import ChoiError
from choi.evaluation import metrics as M
from choi.evaluation.evaluators import EvaluatorSuite
from choi.evaluation.foundation import FoundationMetrics
from choi.evaluation.regions import find_regions
from choi.io import atomic_write_bytes, atomic_write_text, make_output_folder, png_bytes
from choi.pipelines.baselines import (
    DEFAULT_MODEL,
    Method,
    MethodOutput,
    MethodUnavailable,
    Request,
    available_methods,
)
from choi.vocabulary import BY_NAME, CLASS_NAMES, CLASSES
from choi.world.renderer import object_view

log = logging.getLogger(__name__)

FOREGROUND_THRESHOLD = 24  # max channel difference (0-255) that counts as "changed from the background"
HOI_WORLD_METHODS = ("gt", "choi-tiny", "single-stage", "gt-mask", "copy-paste")
# single-stage and gt-mask need choi-tiny's own stage 2; two-stage runs any --model family
REAL_PHOTO_METHODS = ("gt", "two-stage", "copy-paste")


@dataclass
class EvalConfig:
    data: str
    out: str
    methods: tuple[str, ...] | None = None  # None: HOI_WORLD_METHODS or REAL_PHOTO_METHODS, by the data
    n: int = 500
    seed: int = 0
    split: str = "test"
    evaluators: str | None = None  # folder with trained evaluators; None: the shipped ones
    model: str = DEFAULT_MODEL  # the choi model of the choi-tiny, single-stage and gt-mask rows (or a folder)
    use_background: bool = True
    use_box: bool = True
    dino: str | None = None  # local DINOv2 folder: DINO-human/object/pair
    clip: str | None = None  # local CLIP folder: CLIP-I human/object/pair and CLIP-T


def sample_order(data: str, split: str, seed: int) -> np.ndarray:
    """The seeded order of ``split``'s sample indices: ``choi eval --n N`` takes the first N as
    requests and the next N as real renders, so indices past 2N are untouched by it."""
    _, info = read_manifest(data).split(split)
    return np.random.default_rng(seed).permutation(info.count)


def data_source(data: str, split: str) -> str:
    """Where ``split``'s samples come from (:attr:`Sample.source`: ``hoi-world``, ``hico``, ``video``)."""
    _, info = read_manifest(data).split(split)
    first = next(iter(iter_samples(data, split=split)), None) if info.count else None
    return "hoi-world" if first is None else first.source


def load_requests(cfg: EvalConfig, skip: int = 0, n_real: int | None = None) -> tuple[list[Sample], list[np.ndarray]]:
    """The seeded request samples and a disjoint set of real renders (the FID/KID reference).

    Requests are positions ``skip`` … ``skip + n - 1`` of :func:`sample_order`, the real renders the
    next ``n_real`` (default ``n``) positions, in split order. ``choi eval`` uses ``skip`` 0;
    a benchmark that must not tune on its tables skips past them.
    """
    order = sample_order(cfg.data, cfg.split, cfg.seed)
    n_real = cfg.n if n_real is None else n_real
    count, need = len(order), skip + cfg.n + n_real
    if count < need:
        real = f" + {n_real} real renders for FID/KID" if n_real else ""
        raise ChoiError(
            f"split '{cfg.split}' of {cfg.data} has {count} samples; --n {cfg.n} needs "
            f"{need} ({skip} skipped, requests{real})"
        )
    positions = order[skip : skip + cfg.n].tolist()
    wanted_req, wanted_real = set(positions), set(order[skip + cfg.n : need].tolist())
    requests, real = {}, []
    for i, s in enumerate(iter_samples(cfg.data, split=cfg.split)):
        if i in wanted_req:
            requests[i] = s
        elif i in wanted_real:
            real.append(s.image)
    return [requests[i] for i in positions], real


def _load_output(folder: Path, key: str) -> MethodOutput | None:
    img = folder / f"{key}.png"
    if not img.exists():
        return None
    image = np.asarray(Image.open(img).convert("RGB"))
    mask_file = folder / f"{key}.masks.png"
    if mask_file.exists():
        m = np.asarray(Image.open(mask_file))
        return MethodOutput(image, m[..., 0] > 127, m[..., 1] > 127)
    return MethodOutput(image)


def _save_output(folder: Path, key: str, out: MethodOutput) -> None:
    if out.human_mask is not None and out.object_mask is not None:
        h, w = out.human_mask.shape
        m = np.zeros((h, w, 3), np.uint8)
        m[..., 0], m[..., 1] = out.human_mask * 255, out.object_mask * 255
        atomic_write_bytes(folder / f"{key}.masks.png", png_bytes(m))
    atomic_write_bytes(folder / f"{key}.png", png_bytes(out.image))  # last: its presence marks "done"


def _check_model(folder: Path, model: str) -> None:
    """Outputs cached in ``folder`` must come from ``model``; the first run records it in ``model.txt``."""
    name = model if model == DEFAULT_MODEL else str(Path(model).resolve())
    marker = folder / "model.txt"
    if any(folder.glob("*.png")):  # caches from before the marker hold the shipped model's outputs
        made_with = marker.read_text().strip() if marker.is_file() else DEFAULT_MODEL
        if made_with != name:
            raise ChoiError(f"{folder} holds outputs of model {made_with}, not {name}: use another --out")
    atomic_write_text(marker, name + "\n")


def run_method(method: Method, samples: list[Sample], cfg: EvalConfig, root: Path) -> list[MethodOutput]:
    """Outputs for every request, from the cache where present; raises MethodUnavailable."""
    folder = root / "outputs" / method.name
    folder.mkdir(parents=True, exist_ok=True)
    if method.uses_model:
        _check_model(folder, cfg.model)
    outputs = []
    for s in tqdm(samples, desc=method.name, disable=not sys.stderr.isatty()):
        cached = _load_output(folder, s.key)
        if cached is None:
            req = Request.from_sample(s, cfg.use_background, cfg.use_box)
            cached = method.run(req, s if method.oracle else None, cfg.model)
            _save_output(folder, s.key, cached)
        outputs.append(cached)
    return outputs


def foreground_box(image: np.ndarray, background: np.ndarray) -> tuple[float, float, float, float]:
    """Normalised box of the pixels that differ from the background: what the image itself shows."""
    diff = np.abs(image.astype(np.int16) - background.astype(np.int16)).max(-1) > FOREGROUND_THRESHOLD
    return M.union_box_from_masks(diff)


def score_method(
    outputs: list[MethodOutput],
    samples: list[Sample],
    real_features: np.ndarray,
    suite: EvaluatorSuite,
    cfg: EvalConfig,
) -> dict:
    images = np.stack([o.image for o in outputs])
    labels = np.array([BY_NAME[s.interaction].index for s in samples])
    rare = np.array([c.rare for c in CLASSES])
    probs = suite.classify_images(images)
    pred = probs.argmax(-1)
    result: dict = {
        "n": len(samples),
        "interaction_acc": M.accuracy(pred, labels),
        "map": M.mean_average_precision(probs, labels, rare),
        "per_class_acc": M.per_class_accuracy(pred, labels, CLASS_NAMES),
    }
    if all(o.human_mask is not None for o in outputs):
        mprobs = suite.classify_masks(
            np.stack([o.human_mask for o in outputs]), np.stack([o.object_mask for o in outputs])
        )
        mpred = mprobs.argmax(-1)
        result["mask_acc"] = M.accuracy(mpred, labels)
        # Beside per_class_acc: a class whose masks pass but whose images fail is lost in stage 2.
        result["per_class_mask_acc"] = M.per_class_accuracy(mpred, labels, CLASS_NAMES)
    gen, ref_h, ref_o, hid, oid = _identities(suite, images, samples)
    sim_h, sim_o = M.cosine_similarity(gen["human"], ref_h), M.cosine_similarity(gen["object"], ref_o)
    result["identity"] = {
        "human": float(sim_h.mean()),
        "object": float(sim_o.mean()),
        "pair": float(M.pair_similarity(sim_h, sim_o).mean()),
        "retrieval_human": M.retrieval_top1(gen["human"], hid, ref_h, hid),
        "retrieval_object": M.retrieval_top1(gen["object"], oid, ref_o, oid),
    }
    result["quality"] = M.fid_kid(real_features, suite.features(images), seed=cfg.seed)
    with_bg = [(o, s) for o, s in zip(outputs, samples, strict=True) if s.background is not None]
    if cfg.use_box and with_bg:
        ious = [M.box_iou(foreground_box(o.image, s.background), s.union_box) for o, s in with_bg]
        pres = [M.background_preservation(o.image, s.background, s.union_box) for o, s in with_bg]
        mse = float(np.mean([p["mse"] for p in pres]))
        result["controls"] = {
            "box_iou": float(np.mean(ious)),
            # PSNR of the mean squared error: a mean of per-image PSNRs is inf as soon as one is untouched.
            "background_psnr": float(10 * np.log10(255.0**2 / mse)) if mse > 0 else float("inf"),
            "background_mae": float(np.mean([p["mae"] for p in pres])),
        }
    return result


def score_regions(
    outputs: list[MethodOutput], samples: list[Sample], foundation: FoundationMetrics | None, cfg: EvalConfig
) -> dict:
    """The metrics read from regions choi's segmenters find in each image: DINO / CLIP (when given) and,
    for requests without a background, box adherence. Means in percent; see docs/evaluation.md."""
    images = [o.image for o in outputs]
    boxes = [s.union_box if cfg.use_box else None for s in samples]
    regions = find_regions(images, boxes)
    result: dict = {}
    if foundation is not None:
        scores = foundation(
            images, regions, [s.human_ref for s in samples], [s.object_ref for s in samples], [s.text for s in samples]
        )
        result["foundation"] = {k: float(np.mean(v)) for k, v in scores.items()}
    if cfg.use_box and not (cfg.use_background and any(s.background is not None for s in samples)):
        # Nothing found is nothing drawn where asked: IoU 0.
        ious = [0.0 if b is None else M.box_iou(b, s.union_box) for b, s in zip(regions.boxes, samples, strict=True)]
        result["controls"] = {"box_iou": float(np.mean(ious)), "box_iou_from": "segmented person and object"}
    return result


def validate_foundation(samples: list[Sample], foundation: FoundationMetrics, cfg: EvalConfig) -> dict:
    """DINO / CLIP on the ground-truth images, with each request's own references and sentence and, as the
    negative control, with the next request's: the gap between the two is what a score can tell apart."""
    images = [s.image for s in samples]
    regions = find_regions(images, [s.union_box if cfg.use_box else None for s in samples])
    refs = ([s.human_ref for s in samples], [s.object_ref for s in samples], [s.text for s in samples])
    own = foundation(images, regions, *refs)
    other = foundation(images, regions, *(r[1:] + r[:1] for r in refs))
    scores = {k: v for k, v in own.items() if k not in ("human_found", "object_found")}  # the same either way
    return {k: {"gt": float(np.mean(v)), "swapped": float(np.mean(other[k]))} for k, v in scores.items()}


def _identities(suite: EvaluatorSuite, images: np.ndarray, samples: list[Sample]) -> tuple:
    """Embeddings of the images (both roles) and of each request's references (its own role), and the
    ids: people by identity, objects by look (identities no picture tells apart count as one)."""
    gen = suite.embed(images)
    ref_h = suite.embed(np.stack([s.human_ref for s in samples]), roles=("human",))["human"]
    ref_o = suite.embed(np.stack([s.object_ref for s in samples]), roles=("object",))["object"]
    hid = np.array([s.human_id for s in samples])
    return gen, ref_h, ref_o, hid, np.array([object_look_key(s.object_category, s.object_id) for s in samples])


def object_ties(samples: list[Sample]) -> list[set[int]] | None:
    """For each HOI-World ground-truth scene, the object looks (:func:`object_look_key`) of the other
    requests that no evaluator could tell from its own; None unless all are HOI-World renders.

    A scene shows its object in one state and each reference shows one in another. Another
    request's object ties with the scene's own when the scene cannot tell them apart (both drawn
    alike in the scene's state, :func:`~choi.world.renderer.object_view`: a ridden skateboard
    shows its side, not its graphic) or when that request's reference cannot (the scene's object
    would look just like it in the reference's state).
    """
    if not samples or any(s.source != "hoi-world" or "object_ref_view" not in s.meta for s in samples):
        return None
    views: dict[tuple, bytes] = {}

    def view(category: str, i: int, state: dict) -> bytes:
        key = (category, i, tuple(sorted(state.items())))
        if key not in views:
            views[key] = object_view(category, i, state).tobytes()
        return views[key]

    looks = [object_look_key(s.object_category, s.object_id) for s in samples]
    ties = []
    for s, look in zip(samples, looks, strict=True):
        seen = s.meta["object_pose"]["state"]
        tied: set[int] = set()
        for other, other_look in zip(samples, looks, strict=True):
            if other.object_category != s.object_category or other_look == look or other_look in tied:
                continue
            shown = other.meta["object_ref_view"]["state"]
            c, i, j = s.object_category, s.object_id, other.object_id
            if view(c, j, seen) == view(c, i, seen) or view(c, i, shown) == view(c, j, shown):
                tied.add(other_look)
        ties.append(tied)
    return ties


def _object_tie_checks(samples: list[Sample], retrieved: np.ndarray, looks: np.ndarray) -> dict:
    """Ground-truth object retrieval read against :func:`object_ties`: the hit rate when a tying
    look counts too, and the ceiling, the top-1 a perfect evaluator breaking ties at random would
    expect (a scene with k - 1 tying looks scores 1/k). Nones for data the renderer cannot redraw."""
    ties = object_ties(samples)
    if ties is None:
        return {"retrieval_object_gt_ties_allowed": None, "retrieval_object_gt_ceiling": None}
    hits = [r == own or int(r) in tied for r, own, tied in zip(retrieved, looks, ties, strict=True)]
    return {
        "retrieval_object_gt_ties_allowed": 100.0 * float(np.mean(hits)),
        "retrieval_object_gt_ceiling": 100.0 * float(np.mean([1 / (1 + len(t)) for t in ties])),
    }


def validate_evaluators(samples: list[Sample], suite: EvaluatorSuite, seed: int) -> dict:
    """Evaluator checks on ground truth and negative controls, reported before any method's numbers."""
    rng = np.random.default_rng(seed)
    images = np.stack([s.image for s in samples])
    labels = np.array([BY_NAME[s.interaction].index for s in samples])
    probs = suite.classify_images(images)
    mprobs = suite.classify_masks(np.stack([s.human_mask for s in samples]), np.stack([s.object_mask for s in samples]))
    swapped = (labels + rng.integers(1, len(CLASSES), len(labels))) % len(CLASSES)
    gen, ref_h, ref_o, hid, oid = _identities(suite, images, samples)
    perm = np.roll(np.arange(len(samples)), 1)  # every query paired with another request's identity
    return {
        "recognizer_acc_gt": M.accuracy(probs.argmax(-1), labels),
        "mask_recognizer_acc_gt": M.accuracy(mprobs.argmax(-1), labels),
        "retrieval_human_gt": M.retrieval_top1(gen["human"], hid, ref_h, hid),
        "retrieval_object_gt": M.retrieval_top1(gen["object"], oid, ref_o, oid),
        **_object_tie_checks(samples, M.nearest_ids(gen["object"], ref_o, oid), oid),
        # Negative controls: each should be near 0.
        "swapped_interaction_accepted": M.accuracy(probs.argmax(-1), swapped),
        "swapped_human_retrieved": M.retrieval_top1(gen["human"][perm], hid, ref_h, hid),
        "swapped_object_retrieved": M.retrieval_top1(gen["object"][perm], oid, ref_o, oid),
    }


def _finite(value):
    """JSON has no NaN/inf: write them as null (e.g. rare-class mAP when no rare class occurs)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def run_benchmark(cfg: EvalConfig) -> dict:
    root = Path(cfg.out)
    source = data_source(cfg.data, cfg.split)
    hoi_world = source == "hoi-world"
    cfg = replace(cfg, methods=cfg.methods or (HOI_WORLD_METHODS if hoi_world else REAL_PHOTO_METHODS))
    unknown = [m for m in cfg.methods if m not in available_methods()]
    if unknown:
        raise ChoiError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(available_methods())}")
    make_output_folder(root)
    foundation = FoundationMetrics.load(cfg.dino, cfg.clip)  # before the long part: a bad folder fails fast
    samples, real = load_requests(cfg, n_real=None if hoi_world else 0)
    report: dict = {"config": asdict(cfg), "choi_version": __version__}
    if hoi_world:
        suite = EvaluatorSuite.load(cfg.evaluators)
        log.info("%d requests, %d real renders for FID/KID", len(samples), len(real))
        report |= {
            "evaluators": cfg.evaluators or "shipped with choi (choi/weights/evaluators)",
            "validation": validate_evaluators(samples, suite, cfg.seed),
            "methods": {},
            "fid_reference": f"{len(real)} ground-truth renders of the {cfg.split} split, disjoint from the requests",
        }
        real_features = suite.features(np.stack(real))
    else:
        notice = (
            f"{source} data: the interaction recognizer, identity embedder and FID/KID are trained on HOI-World "
            "and skipped; DINO/CLIP (--dino/--clip) and box adherence remain"
        )
        log.warning("%s", notice)
        report |= {"skipped": notice, "validation": None, "methods": {}}
    if foundation is not None and len(samples) > 1:
        report["foundation_validation"] = validate_foundation(samples, foundation, cfg)
    for name in cfg.methods:
        method = available_methods()[name]
        try:
            outputs = run_method(method, samples, cfg, root)
        except MethodUnavailable as err:
            report["methods"][name] = {"missing": str(err)}
            log.warning("method %s missing: %s", name, err)
            continue
        result = score_method(outputs, samples, real_features, suite, cfg) if hoi_world else {"n": len(samples)}
        if foundation is not None or not hoi_world:
            for key, value in score_regions(outputs, samples, foundation, cfg).items():
                result.setdefault(key, value)
        report["methods"][name] = result
    atomic_write_text(root / "metrics.json", json.dumps(_finite(report), indent=2))
    from choi.evaluation.report import write_report

    write_report(report, samples, root)
    return report
