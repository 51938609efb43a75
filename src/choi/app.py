"""The choi web app: a thin Gradio UI over :class:`~choi.pipelines.choi.CHOIPipeline`.

Upload a person and an object, pick or type an interaction, optionally upload a background and
click two corners of the box where the pair should go. "Generate masks" shows stage 1's layouts;
pick one, edit it with the brush (red: person, blue: object, black: nothing) or upload your own,
then "Generate images" renders candidates with their seeds. Every run is saved (images, masks,
choi.json) in the outputs folder, the only folder the app serves files from besides its own
uploads folder; runs older than ``keep_outputs_hours`` are removed.

Example:
    >>> from choi.app import launch
    >>> launch(CHOIPipeline.from_pretrained("choi-tiny"), host="127.0.0.1", port=7860)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

from choi.data.segment import REFERENCE_SIDE, as_rgb, load_image
from choi.errors import ChoiError, quote
from choi.io import make_output_folder
from choi.pipelines.inputs import HUMAN_COLOUR, OBJECT_COLOUR, parse_box, read_layout_mask
from choi.pipelines.request import MAX_IMAGES, MAX_OUTPUT_SIDE, GenerationRequest
from choi.pipelines.stages import parse_set
from choi.vocabulary import CLASSES

log = logging.getLogger(__name__)

MAX_UPLOAD = "25mb"  # per file; the pixel limit (choi.data.segment.MAX_PIXELS) catches small decompression bombs
PREVIEW_SIDE = 512  # the box-drawing preview is shown at most this large
ERASE_COLOUR = (0, 0, 0)
# Every handler that decodes an image shares this queue group: 8 phone photos at once would otherwise
# decode 8 x 100 MB side by side. Two at a time keep the page responsive while a generation runs.
DECODE_GROUP, DECODE_LIMIT = "decode", 2
KEEP_OUTPUTS_HOURS = 24.0  # runs older than this are removed from the outputs folder


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _user_errors(fn: Callable) -> Callable:
    """A ChoiError becomes a gr.Error: the user sees the one-line message, the app keeps running."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ChoiError as err:
            raise gr.Error(str(err), print_exception=False) from err

    return wrapper


def _load(path: str, what: str, max_side: int | None = None) -> np.ndarray:
    """load_image (shrunk to ``max_side``), with messages naming the uploaded file rather than its path in the cache."""
    try:
        return load_image(path, what, max_side)
    except ChoiError as err:
        raise ChoiError(str(err).replace(quote(str(path), path=True), quote(Path(path).name))) from err


def draw_box(background: np.ndarray, box: tuple[float, float, float, float] | None) -> np.ndarray:
    """The background scaled to at most PREVIEW_SIDE, with the normalised box outlined."""
    im = Image.fromarray(as_rgb(background, "background image"))
    im.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    if box is not None:
        w, h = im.size
        x1, y1, x2, y2 = box
        width = max(2, round(max(w, h) / 128))
        ImageDraw.Draw(im).rectangle((x1 * w, y1 * h, x2 * w - 1, y2 * h - 1), outline=(255, 220, 0), width=width)
    return np.asarray(im)


def release_memory() -> None:
    """Hand glibc's freed heap back to the system (images are freed when their last reference goes).

    Without it, a burst of decodes leaves the process hundreds of MB larger for good (freed, not returned).
    No gc.collect(): it takes 0.3-0.7 s over the app's heap and images are not held in cycles.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    # Looked up once: find_library runs ldconfig in a subprocess.
    libc = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None  # glibc only


def clean_outputs(folder: str | os.PathLike, keep_hours: float) -> int:
    """Remove the runs (sub-folders) of ``folder`` last changed over ``keep_hours`` ago; how many were removed."""
    cutoff, removed = time.time() - keep_hours * 3600, 0
    for run in Path(folder).iterdir() if Path(folder).is_dir() else ():
        try:
            if run.is_dir() and not run.is_symlink() and run.stat().st_mtime < cutoff:
                shutil.rmtree(run)
                removed += 1
        except OSError as err:  # removed by another worker meanwhile, or not ours to remove
            log.debug("could not remove %s: %s", run, err)
    if removed:
        log.info("removed %d run(s) older than %g hours from %s", removed, keep_hours, folder)
    return removed


def _uploaded_path(payload: Any) -> str | None:
    return None if payload is None or payload.path is None else str(payload.path)


def image_upload(**kwargs: Any) -> gr.Image:
    """A gr.Image whose handlers receive the uploaded file's path undecoded.

    gr.Image opens every upload with Pillow before a handler runs, so a file that is not an image
    ends in a long internal error; here choi's own loader (:func:`choi.data.segment.load_image`)
    reads it and reports what is wrong in one line. (Overridden on the instance: a gr.Image
    subclass would make Gradio write a .pyi stub next to this module.)
    """
    component = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"], **kwargs)
    component.preprocess = _uploaded_path
    return component


def one_line_errors(component: gr.components.Component, what: str) -> gr.components.Component:
    """A component whose own decoding (an ImageEditor opens uploads with Pillow) fails in one line, no traceback."""
    decode = component.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return decode(payload)
        except Exception as err:  # Pillow raises many types on a file that is not an image
            reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
            raise gr.Error(f"cannot read the {what}: not an image file Pillow can read ({reason})",
                           print_exception=False) from err  # fmt: skip

    component.preprocess = preprocess
    return component


class Handlers:
    """The app's event handlers as plain methods, so tests can call them with a fake pipeline."""

    def __init__(self, pipeline: Any, outputs: str | os.PathLike, keep_outputs_hours: float = KEEP_OUTPUTS_HOURS):
        self.pipe = pipeline
        self.outputs = Path(outputs)
        self.keep_outputs_hours = keep_outputs_hours

    # --- inputs ---------------------------------------------------------------------------------

    @staticmethod
    def _image(path: str | None, what: str, max_side: int, required: bool = True) -> np.ndarray | None:
        if path is None:
            if required:
                raise ChoiError(f"upload the {what}")
            return None
        return _load(path, what, max_side)

    @staticmethod
    def _box(x1, y1, x2, y2) -> tuple[float, float, float, float] | None:
        values = [x1, y1, x2, y2]
        if all(v is None for v in values):
            return None
        if any(v is None for v in values):
            raise ChoiError("give all four box values x1, y1, x2, y2, or none")
        return parse_box(values)

    @staticmethod
    def _settings(num_images, seed, mask_steps, mask_guidance, steps, guidance, options) -> dict[str, Any]:
        """The form's sampler fields → request fields (the request checks them, with the CLI's limits)."""

        def number(value, unset, kind=float):
            # Gradio's number fields cannot be empty: -1 (or 0 for steps) stands for "the model's default".
            if value is None or value == unset:
                return None
            return int(value) if kind is int and float(value).is_integer() else kind(value) if kind is float else value

        return {
            "num_images": number(num_images, None, int) or 1,
            "seed": number(seed, -1, int),
            "mask_steps": number(mask_steps, 0, int),
            "mask_guidance": number(mask_guidance, -1),
            "steps": number(steps, 0, int),
            "guidance": number(guidance, -1),
            "options": parse_set([line for line in (options or "").splitlines() if line.strip()]),
        }

    @staticmethod
    def _fixes(human_draw, object_draw, human_file, object_file, object_box) -> dict[str, Any]:
        """The reference fixes: a silhouette drawn over the photo (or an uploaded mask), and the object's box."""

        def drawn(value) -> np.ndarray | None:
            layers = value.get("layers") if isinstance(value, dict) else None
            painted = [np.asarray(layer)[..., 3] > 0 for layer in layers or [] if np.ndim(layer) == 3]
            return np.any(painted, axis=0) if painted and np.any(painted) else None

        fixes: dict[str, Any] = {}
        for role, draw, upload in (("human", human_draw, human_file), ("object", object_draw, object_file)):
            mask = drawn(draw)
            fixes[f"{role}_mask"] = mask if mask is not None else upload
        fixes["object_box"] = (object_box or "").strip() or None
        return fixes

    @staticmethod
    def _references(out) -> list[tuple[np.ndarray, str]]:
        rules = out.metadata.get("references", {})
        return [(cut, f"{role}: {rules.get(role, {}).get('rule', '')}") for role, cut in out.references.items()]

    def _request(
        self, human, obj, interaction, background, x1, y1, x2, y2, settings, fixes=None, mask=None
    ) -> GenerationRequest:
        values = {
            # Decoded once, at what the pipeline would shrink them to anyway (references are segmented at
            # REFERENCE_SIDE; the output is at most MAX_OUTPUT_SIDE long), so a phone photo is never whole.
            "human": self._image(human, "person image", REFERENCE_SIDE),
            "object": self._image(obj, "object image", REFERENCE_SIDE),
            "interaction": interaction or "",
            "background": self._image(background, "background image", MAX_OUTPUT_SIDE, required=False),
            "box": self._box(x1, y1, x2, y2),
            "mask": mask,
            **(fixes or {}),
        }
        return GenerationRequest(**values, **settings)

    @_user_errors
    def check_upload(self, path: str | None, what: str) -> None:
        """On upload: read the file now, so a bad one is reported at once rather than at generation."""
        if path is not None:
            _load(path, what, PREVIEW_SIDE)  # the whole file is decoded (a JPEG at 1/8 scale), kept small
            release_memory()

    # --- box ------------------------------------------------------------------------------------

    @_user_errors
    def show_box(self, background, x1, y1, x2, y2) -> np.ndarray | None:
        if background is None:
            return None
        bg = _load(background, "background image", PREVIEW_SIDE)
        try:
            box = self._box(x1, y1, x2, y2)
        except ChoiError:
            box = None  # half-typed: show the background without a box until the four values are valid
        preview = draw_box(bg, box)
        del bg
        release_memory()
        return preview

    @_user_errors
    def click_corner(self, background, corner, evt: gr.SelectData):
        """Two clicks on the preview set the box: the first corner is kept in state until the second."""
        if background is None:
            raise ChoiError("upload a background first")
        preview = draw_box(_load(background, "background image", PREVIEW_SIDE), None)
        h, w = preview.shape[:2]
        x, y = (min(max(float(v), 0.0), 1.0) for v in (evt.index[0] / w, evt.index[1] / h))
        if corner is None:
            return (x, y), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        (cx, cy), box = corner, None
        box = (min(x, cx), min(y, cy), max(x, cx), max(y, cy))
        if box[2] - box[0] < 0.02 or box[3] - box[1] < 0.02:
            raise ChoiError("the box is too small: click two opposite corners")
        return None, *(round(v, 3) for v in box)

    # --- generation -----------------------------------------------------------------------------

    def _progress(self, progress: Callable) -> Callable[[str, int, int], None]:
        def callback(stage: str, step: int, total: int) -> None:
            progress((step, total), desc=f"{stage} stage", unit="steps")

        return callback

    @_user_errors
    def generate_masks(
        self, human, obj, interaction, background, x1, y1, x2, y2, num_images, seed, mask_steps, mask_guidance,
        steps, guidance, options, human_draw=None, object_draw=None, human_file=None, object_file=None,
        object_box=None,
        progress=gr.Progress(),  # noqa: B008 - Gradio injects the progress tracker through this default
    ):  # fmt: skip
        """Stage 1 → the mask candidates (gallery), the first one in the editor, their previews (state) and the
        references as the model got them."""
        settings = self._settings(num_images, seed, mask_steps, mask_guidance, steps, guidance, options)
        fixes = self._fixes(human_draw, object_draw, human_file, object_file, object_box)
        request = self._request(human, obj, interaction, background, x1, y1, x2, y2, settings, fixes)
        progress(0, desc="mask stage")
        out = self.pipe.generate_masks(request, callback=self._progress(progress))
        previews = [out.preview(k) for k in range(len(out.human_masks))]
        seeds = out.metadata["seeds"]
        gallery = [(p, f"seed {s}") for p, s in zip(previews, seeds, strict=True)]
        return gallery, previews[0], previews, self._references(out)

    def pick_mask(self, previews, evt: gr.SelectData):
        """Clicking a mask candidate puts it in the editor."""
        return previews[evt.index] if previews else gr.skip()

    @_user_errors
    def generate_images(
        self, human, obj, interaction, background, x1, y1, x2, y2, editor, num_images, seed, mask_steps,
        mask_guidance, steps, guidance, options, human_draw=None, object_draw=None, human_file=None,
        object_file=None, object_box=None,
        progress=gr.Progress(),  # noqa: B008 - Gradio injects the progress tracker through this default
    ):  # fmt: skip
        """Stage 2 (with stage 1 first when the editor is empty) → gallery with seeds, the files to download and
        the references as the model got them."""
        composite = editor.get("composite") if isinstance(editor, dict) else editor
        mask = read_layout_mask(composite) if composite is not None else None
        settings = self._settings(num_images, seed, mask_steps, mask_guidance, steps, guidance, options)
        fixes = self._fixes(human_draw, object_draw, human_file, object_file, object_box)
        request = self._request(human, obj, interaction, background, x1, y1, x2, y2, settings, fixes, mask)
        progress(0, desc="image stage" if mask is not None else "mask stage")
        out = self.pipe(request, callback=self._progress(progress))
        clean_outputs(self.outputs, self.keep_outputs_hours)
        run = self.outputs / uuid.uuid4().hex[:12]
        files = out.save(run)
        seeds = out.metadata["seeds"]
        images = [run / f"image_{k}.png" for k in range(len(out.images))]
        gallery = [(str(p), f"seed {s}") for p, s in zip(images, seeds, strict=True)]
        downloads = [
            str(f) for f in files if f.name.startswith(("image_", "reference_")) or f.name.endswith("_preview.png")
        ]
        downloads.append(str(run / "choi.json"))
        references = self._references(out)
        del out, request, mask, composite, editor
        release_memory()  # the request's full-size images go now: memory back near its baseline after a burst
        return gallery, downloads, references

    @staticmethod
    def photo_to_draw_on(path: str | None):
        """An uploaded reference photo becomes the canvas its silhouette can be drawn on (a bad file: none;
        :meth:`check_upload` reports it)."""
        try:
            if path is None:
                return None
            # The reference's own working size: the silhouette drawn on it has the size the pipeline reads it at.
            return {"background": _load(path, "photo", REFERENCE_SIDE), "layers": [], "composite": None}
        except ChoiError:
            return None


def _theme() -> gr.themes.Base:
    # System fonts only: the default theme would fetch Google Fonts, and the app makes no outside requests.
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def build_app(
    pipeline: Any, outputs: str | os.PathLike | None = None, keep_outputs_hours: float = KEEP_OUTPUTS_HOURS
) -> gr.Blocks:
    """The Gradio Blocks over ``pipeline`` (a CHOIPipeline, or anything with its interface)."""
    outputs = (
        make_output_folder(outputs, "--outputs") if outputs is not None else Path(tempfile.mkdtemp(prefix="choi-app-"))
    )
    clean_outputs(outputs, keep_outputs_hours)
    h = Handlers(pipeline, outputs, keep_outputs_hours)
    options_class = getattr(pipeline, "options_class", None)
    family_options = ", ".join(f.name for f in dataclasses.fields(options_class)) if options_class else ""
    suggestions = [c.text for c in CLASSES]
    image = functools.partial(image_upload, height=220)

    # Gradio removes its own uploads as old as the outputs kept.
    keep_s = max(60, round(keep_outputs_hours * 3600))
    with gr.Blocks(title="choi", analytics_enabled=False, delete_cache=(min(keep_s, 3600), keep_s)) as demo:
        gr.Markdown(
            "## choi — a given person interacting with a given object\n"
            "Upload a photo of the person and one of the object; choose or type the interaction. "
            "Optionally add a background and click two corners of the box where they should appear. "
            "Each photo is cut out automatically: check the cut-outs under *What the model got* and fix one "
            "by drawing or uploading its mask."
        )
        with gr.Row():
            human = image(label="Person", elem_id="human")
            obj = image(label="Object", elem_id="object")
            with gr.Column():
                interaction = gr.Dropdown(
                    suggestions, value=suggestions[0], label="Interaction", allow_custom_value=True,
                    info="pick one or type your own, e.g. 'a person riding a bike'", elem_id="interaction",
                )  # fmt: skip
                num_images = gr.Slider(1, MAX_IMAGES, value=2, step=1, label="Candidates", elem_id="num-images")
                seed = gr.Number(-1, label="Seed (-1: random)", precision=0, minimum=-1, elem_id="seed")
                with gr.Accordion("Sampler", open=False):
                    with gr.Row():
                        mask_steps = gr.Number(0, label="Stage 1 (masks): steps (0: default)", precision=0, minimum=0)
                        mask_guidance = gr.Number(-1, label="Stage 1: guidance (-1: default)", minimum=-1)
                    with gr.Row():
                        steps = gr.Number(0, label="Stage 2 (image): steps (0: default)", precision=0, minimum=0)
                        guidance = gr.Number(-1, label="Stage 2: guidance (-1: default)", minimum=-1)
                    options = gr.Textbox(
                        "", lines=2, label="Model options, key=value, one per line", elem_id="options",
                        placeholder=f"{family_options}", max_length=2000,
                    )  # fmt: skip
        with gr.Accordion("Background and box (optional)", open=False):
            with gr.Row():
                background = image(label="Background", elem_id="background")
                box_view = gr.Image(label="Click two corners to set the box", interactive=False, height=220)
            with gr.Row():
                x1, y1, x2, y2 = (gr.Number(None, label=n, minimum=0, maximum=1) for n in ("x1", "y1", "x2", "y2"))
            corner = gr.State(None)
        with gr.Accordion("Fix a reference (optional): its mask, or where the object is", open=False):
            draw = functools.partial(
                gr.ImageEditor, type="numpy", image_mode="RGBA", format="png", sources=(), layers=False,
                brush=gr.Brush(colors=["#ffffff"], default_color="#ffffff", color_mode="fixed"), eraser=gr.Eraser(),
                transforms=(), height=260,
            )  # fmt: skip
            with gr.Row():
                human_draw = draw(label="Paint the person over the photo", elem_id="human-draw")
                object_draw = draw(label="Paint the object over the photo", elem_id="object-draw")
            with gr.Row():
                human_file = image(label="…or upload the person's mask (white = person)", elem_id="human-mask")
                object_file = image(label="…or upload the object's mask (white = object)", elem_id="object-mask")
                object_box = gr.Textbox(label="Object box in its photo: x1,y1,x2,y2 in [0, 1]", elem_id="object-box")
        references = gr.Gallery(label="What the model got (reference cut-outs)", columns=2, height=200,
                                elem_id="references")  # fmt: skip
        with gr.Row():
            with gr.Column():
                mask_button = gr.Button("1. Generate masks (optional)", elem_id="generate-masks")
                mask_gallery = gr.Gallery(label="Mask candidates (click one to edit it)", columns=4, height=200)
                editor = gr.ImageEditor(
                    label="Mask: red person, blue object, black nothing (or upload your own)",
                    type="numpy", image_mode="RGB", format="png", sources=["upload"], layers=False,
                    brush=gr.Brush(colors=[_hex(HUMAN_COLOUR), _hex(OBJECT_COLOUR), _hex(ERASE_COLOUR)],
                                   default_color=_hex(HUMAN_COLOUR), color_mode="fixed"),
                    eraser=gr.Eraser(), transforms=(), elem_id="mask-editor",
                )  # fmt: skip
                one_line_errors(editor, "mask")
                previews = gr.State([])
            with gr.Column():
                image_button = gr.Button("2. Generate images", variant="primary", elem_id="generate-images")
                gallery = gr.Gallery(label="Images (with seeds)", columns=2, height=320, elem_id="gallery")
                downloads = gr.File(label="Download images, masks and choi.json", file_count="multiple")

        # Light handlers never wait behind a generation (their own queue group), but those that decode an
        # image run DECODE_LIMIT at a time; queued all the same, as only queued events show their errors.
        light = {"concurrency_limit": None, "show_progress": "hidden"}
        decode = {"concurrency_limit": DECODE_LIMIT, "concurrency_id": DECODE_GROUP, "show_progress": "hidden"}
        for component, what in ((human, "person image"), (obj, "object image"), (background, "background image")):
            check = functools.partial(h.check_upload, what=what)
            component.upload(check, component, None, api_name=f"check_{what.split()[0]}", **decode)
        box_fields = [x1, y1, x2, y2]
        for trigger in (background.change, *(f.change for f in box_fields)):
            trigger(h.show_box, [background, *box_fields], box_view, **decode)
        box_view.select(h.click_corner, [background, corner], [corner, *box_fields], **decode)
        request = [human, obj, interaction, background, *box_fields]
        settings = [num_images, seed, mask_steps, mask_guidance, steps, guidance, options]
        fixes = [human_draw, object_draw, human_file, object_file, object_box]
        for photo, canvas in ((human, human_draw), (obj, object_draw)):
            photo.change(h.photo_to_draw_on, photo, canvas, **decode)
        mask_button.click(h.generate_masks, [*request, *settings, *fixes], [mask_gallery, editor, previews, references])
        mask_gallery.select(h.pick_mask, previews, editor, **light)
        image_button.click(h.generate_images, [*request, editor, *settings, *fixes], [gallery, downloads, references])
    return demo


def launch(
    pipeline: Any,
    host: str = "127.0.0.1",
    port: int = 7860,
    outputs: str | os.PathLike | None = None,
    concurrency: int = 1,
    block: bool = True,
    keep_outputs_hours: float = KEEP_OUTPUTS_HOURS,
) -> gr.Blocks:
    """Build and serve the app. One generation runs at a time per worker (``concurrency``); others queue.

    The app's files live in one new temporary folder: ``outputs/`` (unless given) and ``uploads/``,
    Gradio's upload cache, which Gradio 6 takes from ``GRADIO_TEMP_DIR`` when the app is built; so
    the app serves its own uploads, never the machine's shared ``/tmp/gradio``.
    """
    own = Path(tempfile.mkdtemp(prefix="choi-app-"))
    outputs = Path(outputs) if outputs is not None else own / "outputs"
    os.environ["GRADIO_TEMP_DIR"] = str(own / "uploads")  # read by gr.Blocks() and by launch()
    demo = build_app(pipeline, outputs, keep_outputs_hours)
    demo.queue(default_concurrency_limit=concurrency, max_size=32)
    log.info("choi app on http://%s:%d (outputs in %s)", host, port, outputs)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        allowed_paths=[str(outputs)],  # the only files served besides the app's own uploads
        max_file_size=MAX_UPLOAD,
        show_error=True,
        ssr_mode=False,
        prevent_thread_lock=not block,
        quiet=True,
        theme=_theme(),
        footer_links=[],
    )
    return demo
