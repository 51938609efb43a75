"""`report.md` and its figures from the benchmark's metrics (see :mod:`choi.evaluation.benchmark`)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from choi.data.schema import Sample  # noqa: E402
from choi.io import atomic_write_bytes, atomic_write_text, png_bytes  # noqa: E402
from choi.vocabulary import BY_NAME, CLASS_NAMES  # noqa: E402

GRID_ROWS = 6

Column = tuple[str, tuple[str, ...], str]  # (header, path into a method's metrics, format)

# choi's own evaluators: HOI-World only
EVALUATOR_COLUMNS: tuple[Column, ...] = (
    ("interaction acc", ("interaction_acc",), "{:.1f}"),
    ("mAP full", ("map", "full"), "{:.1f}"),
    ("mAP rare", ("map", "rare"), "{:.1f}"),
    ("mAP non-rare", ("map", "non_rare"), "{:.1f}"),
    ("mask acc", ("mask_acc",), "{:.1f}"),
    ("human sim", ("identity", "human"), "{:.1f}"),
    ("object sim", ("identity", "object"), "{:.1f}"),
    ("pair sim", ("identity", "pair"), "{:.1f}"),
    ("retrieval human", ("identity", "retrieval_human"), "{:.1f}"),
    ("retrieval object", ("identity", "retrieval_object"), "{:.1f}"),
    ("FID", ("quality", "fid"), "{:.2f}"),
    ("KID ×1000", ("quality", "kid_mean"), "{:.2f}"),
)
# --dino / --clip: shown when given
FOUNDATION_COLUMNS: tuple[Column, ...] = (
    ("DINO-human", ("foundation", "dino_human"), "{:.1f}"),
    ("DINO-object", ("foundation", "dino_object"), "{:.1f}"),
    ("DINO-pair", ("foundation", "dino_pair"), "{:.1f}"),
    ("CLIP-I human", ("foundation", "clip_i_human"), "{:.1f}"),
    ("CLIP-I object", ("foundation", "clip_i_object"), "{:.1f}"),
    ("CLIP-I pair", ("foundation", "clip_i_pair"), "{:.1f}"),
    ("CLIP-T", ("foundation", "clip_t"), "{:.1f}"),
    ("person found", ("foundation", "human_found"), "{:.0f}"),
    ("object found", ("foundation", "object_found"), "{:.0f}"),
)
CONTROL_COLUMNS: tuple[Column, ...] = (
    ("box IoU", ("controls", "box_iou"), "{:.1f}"),
    ("bg PSNR", ("controls", "background_psnr"), "{:.1f}"),
)


def _get(d: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _cell(metrics: dict, path: tuple[str, ...], fmt: str) -> str:
    value = _get(metrics, path)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if path == ("quality", "kid_mean"):
        value = value * 1000
    return fmt.format(value)


def _has(report: dict, key: str) -> bool:
    return any(key in m for m in report["methods"].values())


def columns(report: dict) -> tuple[Column, ...]:
    """The table's columns: the evaluators' where they ran, DINO / CLIP where given, the controls."""
    evaluators = EVALUATOR_COLUMNS if report.get("validation") is not None else ()
    foundation = FOUNDATION_COLUMNS if _has(report, "foundation") else ()
    return evaluators + foundation + CONTROL_COLUMNS


def results_table(report: dict) -> str:
    cols = columns(report)
    head = "| method | " + " | ".join(c[0] for c in cols) + " |"
    rows = [head, "|" + "---|" * (len(cols) + 1)]
    for name, m in report["methods"].items():
        if "missing" in m:
            rows.append(f"| {name} | missing: {m['missing']} |" + " |" * (len(cols) - 1))
        else:
            rows.append(f"| {name} | " + " | ".join(_cell(m, p, f) for _, p, f in cols) + " |")
    return "\n".join(rows)


def _figure_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def per_class_chart(report: dict) -> bytes:
    scored = {k: m for k, m in report["methods"].items() if "per_class_acc" in m}
    names = CLASS_NAMES
    fig, ax = plt.subplots(figsize=(14, 4.5))
    width = 0.8 / max(1, len(scored))
    for i, (method, m) in enumerate(scored.items()):
        values = [m["per_class_acc"].get(n, np.nan) for n in names]
        ax.bar(np.arange(len(names)) + i * width, values, width, label=method)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2)
    ax.set_xticklabels([n + (" (rare)" if BY_NAME[n].rare else "") for n in names], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("recognizer accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("Interaction accuracy per class")
    return _figure_bytes(fig)


def _fit(tile: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``tile`` at ``size`` (H, W): a method may draw at another resolution than the references'."""
    if tile.shape[:2] == size:
        return tile
    return np.asarray(Image.fromarray(tile).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def sample_grid(samples: list[Sample], folder: Path, rows: int = GRID_ROWS) -> bytes:
    """Per row: human ref | object ref | the method's output (| its masks when it made some)."""
    tiles = []
    for s in samples[:rows]:
        out = np.asarray(Image.open(folder / f"{s.key}.png").convert("RGB"))
        row = [s.human_ref, s.object_ref, out]
        masks = folder / f"{s.key}.masks.png"
        if masks.exists():
            row.append(np.asarray(Image.open(masks).convert("RGB")))
        row += [np.full_like(out, 255)] * (4 - len(row))
        tiles.append(np.concatenate([_fit(t, s.human_ref.shape[:2]) for t in row], axis=1))
    return png_bytes(np.concatenate(tiles, axis=0))


def _validation_lines(report: dict) -> list[str]:
    v = report["validation"]
    if v is None:
        return ["## Evaluators", "", f"Skipped: {report['skipped']}.", ""]
    return [
        "## Evaluator validation (ground truth and negative controls)",
        "",
        "| check | value (%) | expected |",
        "|---|---|---|",
        f"| interaction recognizer on GT renders | {v['recognizer_acc_gt']:.1f} | ≥ 95 |",
        f"| mask-only recognizer on GT masks | {v['mask_recognizer_acc_gt']:.1f} | ≥ 95 |",
        f"| human retrieval top-1 on GT renders | {v['retrieval_human_gt']:.1f} | ≥ 95 |",
        f"| object retrieval top-1 on GT renders | {v['retrieval_object_gt']:.1f} | ≥ 95 |",
        *(
            [
                f"| the same, also counting a look neither the scene nor the retrieved reference tells from the "
                f"true one | {v['retrieval_object_gt_ties_allowed']:.1f} | – |",
                f"| ceiling: a perfect evaluator's expected top-1, breaking such ties at random "
                f"| {v['retrieval_object_gt_ceiling']:.1f} | – |",
            ]
            if v.get("retrieval_object_gt_ceiling") is not None
            else []
        ),
        f"| swapped interaction accepted | {v['swapped_interaction_accepted']:.1f} | ≈ 0 |",
        f"| swapped human identity retrieved | {v['swapped_human_retrieved']:.1f} | ≈ 0 |",
        f"| swapped object identity retrieved | {v['swapped_object_retrieved']:.1f} | ≈ 0 |",
        "",
    ]


def _foundation_validation_lines(report: dict) -> list[str]:
    checks = report.get("foundation_validation")
    if not checks:
        return []
    names = {c[1][1]: c[0] for c in FOUNDATION_COLUMNS}
    return [
        "## DINO / CLIP on ground truth (negative control: another request's references and sentence)",
        "",
        "| score | own references | another request's | gap |",
        "|---|---|---|---|",
        *(
            f"| {names.get(k, k)} | {v['gt']:.1f} | {v['swapped']:.1f} | {v['gt'] - v['swapped']:.1f} |"
            for k, v in checks.items()
        ),  # fmt: skip
        "",
    ]


def _results_text(report: dict) -> str:
    parts = []
    if report["validation"] is not None:
        parts.append(
            "Accuracy, mAP, similarities and retrieval in %; identity similarity is the cosine ×100 between the "
            "evaluator's embeddings of the generated image and of the reference; retrieval is top-1 among the "
            "references of all requests, objects counted by look (HOI-World identities that differ only in what "
            "is never drawn, such as a ball's accent colour or any object's size, are one); FID/KID on the "
            f"interaction recognizer's features against {report['fid_reference']}; box IoU compares the box of "
            "pixels that differ from the given background with the requested box."
        )
    if _has(report, "foundation"):
        parts.append(
            f"DINO-* (`{report['config']['dino']}`) and CLIP-I (`{report['config']['clip']}`): cosine ×100 between "
            "the person / object region that choi's segmenters find in the generated image (MediaPipe on the "
            "image, GrabCut in the requested box minus the person), cut out like the references, and the human / "
            "object reference; pair is their mean. A role not found is scored on the box crop; person / object "
            "found say how often each was found (%). CLIP-T: cosine ×100 between the whole image and the "
            "interaction's sentence."
        )
    if any(_get(m, ("controls", "box_iou_from")) for m in report["methods"].values()):
        parts.append(
            "Without a background, box IoU compares the box of the segmented person and object with the "
            "requested box (0 when neither is found)."
        )
    return " ".join(parts)


def write_report(report: dict, samples: list[Sample], root: Path) -> None:
    cfg = report["config"]
    evaluators = f"evaluators `{report['evaluators']}`" if "evaluators" in report else "choi's evaluators skipped"
    lines = [
        "# choi benchmark report",
        "",
        f"choi {report['choi_version']}; data `{cfg['data']}` split `{cfg['split']}`; "
        f"{cfg['n']} requests (seed {cfg['seed']}), background given: "
        f"{cfg['use_background']}, box given: {cfg['use_box']}; "
        f"model `{cfg['model']}`; {evaluators}.",
        "",
        *_validation_lines(report),
        *_foundation_validation_lines(report),
        "## Results",
        "",
        _results_text(report),
        "",
        results_table(report),
        "",
    ]
    if _has(report, "per_class_acc"):
        atomic_write_bytes(root / "per_class_accuracy.png", per_class_chart(report))
        lines += ["![per-class accuracy](per_class_accuracy.png)", ""]
    lines += ["## Samples", ""]
    for name, m in report["methods"].items():
        if "missing" in m:
            continue
        atomic_write_bytes(root / f"grid_{name}.png", sample_grid(samples, root / "outputs" / name))
        lines += [
            f"### {name}",
            "",
            "human ref | object ref | output | masks",
            "",
            f"![{name}](grid_{name}.png)",
            "",
        ]
    atomic_write_text(root / "report.md", "\n".join(lines))
