"""The choi web app: a thin Gradio UI over :class:`~choi.pipelines.choi.CHOIPipeline`.

Upload a person and an object, pick or type an interaction, optionally upload a background and
click two corners of the box where the pair should go. "Generate masks" shows stage 1's layouts;
pick one, edit it with the brush (red: person, blue: object, black: nothing) or upload your own,
then "Generate images" renders candidates with their seeds. Every run is saved (images, masks,
choi.json) in the outputs folder, the only folder the app serves files from.

Example:
    >>> from choi.app import launch
    >>> launch(CHOIPipeline.from_pretrained("choi-tiny"), host="127.0.0.1", port=7860)
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

from choi.data.segment import as_rgb, load_image
from choi.errors import ChoiError
from choi.models.image_generator import check_prior_strength
from choi.pipelines.choi import DEFAULT_PRIOR_STRENGTH, LAYOUT_CANDIDATES, check_layout_candidates
from choi.pipelines.mask import HUMAN_COLOUR, OBJECT_COLOUR, parse_box
from choi.vocabulary import CLASSES, resolve

log = logging.getLogger(__name__)

MAX_UPLOAD = "25mb"  # per file; the pixel limit (choi.data.segment.MAX_PIXELS) catches small decompression bombs
MAX_CANDIDATES = 8
PREVIEW_SIDE = 512  # the box-drawing preview is shown at most this large
ERASE_COLOUR = (0, 0, 0)
_COLOUR_TOLERANCE = (
    90  # max channel distance from the mask colours: brush edges blend, the dimmed background never gets close
)


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


def _load(path: str, what: str) -> np.ndarray:
    """load_image, with messages naming the uploaded file rather than its path in Gradio's cache."""
    try:
        return load_image(path, what)
    except ChoiError as err:
        raise ChoiError(str(err).replace(str(path), f"'{Path(path).name}'")) from err


def masks_from_preview(preview: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A colour-coded mask image (red person, blue object, anything else nothing) → two (H, W) bool masks."""
    rgb = as_rgb(preview, "mask image").astype(np.int16)
    human = np.abs(rgb - np.array(HUMAN_COLOUR)).max(-1) <= _COLOUR_TOLERANCE
    obj = np.abs(rgb - np.array(OBJECT_COLOUR)).max(-1) <= _COLOUR_TOLERANCE
    if not human.any() or not obj.any():
        raise ChoiError("the mask must show the person in red and the object in blue; generate masks or paint them")
    return human, obj & ~human


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


class Handlers:
    """The app's event handlers as plain methods, so tests can call them with a fake pipeline."""

    def __init__(self, pipeline: Any, outputs: str | os.PathLike):
        self.pipe = pipeline
        self.outputs = Path(outputs)

    # --- inputs ---------------------------------------------------------------------------------

    @staticmethod
    def _image(path: str | None, what: str, required: bool = True) -> np.ndarray | None:
        if path is None:
            if required:
                raise ChoiError(f"upload the {what}")
            return None
        return _load(path, what)

    @staticmethod
    def _box(x1, y1, x2, y2) -> tuple[float, float, float, float] | None:
        values = [x1, y1, x2, y2]
        if all(v is None for v in values):
            return None
        if any(v is None for v in values):
            raise ChoiError("give all four box values x1, y1, x2, y2, or none")
        return parse_box(values)

    @staticmethod
    def _settings(num_images, seed, steps, guidance, fit_object=True, layouts=LAYOUT_CANDIDATES) -> dict[str, Any]:
        # Gradio's number fields cannot be empty: -1 / 0 / -1 stand for "random" / "default" / "default".
        seed = None if seed is None or seed == -1 else seed
        steps = steps or None
        guidance = None if guidance is None or guidance == -1 else guidance
        num = int(num_images or 1)
        if not 1 <= num <= MAX_CANDIDATES:
            raise ChoiError(f"the number of candidates must be in [1, {MAX_CANDIDATES}], got {num}")
        if seed is not None and seed < 0:
            raise ChoiError(f"the seed must be >= 0, got {seed}")
        if steps is not None and not 1 <= steps <= 1000:
            raise ChoiError(f"steps must be in [1, 1000], got {steps}")
        if guidance is not None and guidance < 0:
            raise ChoiError(f"guidance must be >= 0, got {guidance}")
        return {
            "num_images": num,
            "seed": None if seed is None else int(seed),
            "num_inference_steps": None if steps is None else int(steps),
            "guidance_scale": None if guidance is None else float(guidance),
            "fit_object": bool(fit_object),
            # a slider's value may arrive as a float: 4.0 is 4, 2.5 stays 2.5 and is refused
            "layout_candidates": check_layout_candidates(int(layouts) if float(layouts).is_integer() else layouts),
        }

    def _request(self, human, obj, interaction, background, x1, y1, x2, y2) -> dict[str, Any]:
        resolve(interaction or "")
        return {
            "human": self._image(human, "person image"),
            "object": self._image(obj, "object image"),
            "interaction": interaction,
            "background": self._image(background, "background image", required=False),
            "box": self._box(x1, y1, x2, y2),
        }

    @_user_errors
    def check_upload(self, path: str | None, what: str) -> None:
        """On upload: read the file now, so a bad one is reported at once rather than at generation."""
        if path is not None:
            _load(path, what)

    # --- box ------------------------------------------------------------------------------------

    @_user_errors
    def show_box(self, background, x1, y1, x2, y2) -> np.ndarray | None:
        if background is None:
            return None
        bg = _load(background, "background image")
        try:
            box = self._box(x1, y1, x2, y2)
        except ChoiError:
            box = None  # half-typed: show the background without a box until the four values are valid
        return draw_box(bg, box)

    @_user_errors
    def click_corner(self, background, corner, evt: gr.SelectData):
        """Two clicks on the preview set the box: the first corner is kept in state until the second."""
        if background is None:
            raise ChoiError("upload a background first")
        preview = draw_box(_load(background, "background image"), None)
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
        self,
        human, obj, interaction, background, x1, y1, x2, y2, num_images, seed, steps, guidance, fit_object=True,
        layouts=LAYOUT_CANDIDATES,
        progress=gr.Progress(),  # noqa: B008 - Gradio injects the progress tracker through this default
    ):  # fmt: skip
        """Stage 1 → the mask candidates (gallery), the first one in the editor, and their previews (state)."""
        request = self._request(human, obj, interaction, background, x1, y1, x2, y2)
        settings = self._settings(num_images, seed, steps, guidance, fit_object, layouts)
        progress(0, desc="mask stage")
        out = self.pipe.generate_masks(**request, **settings, callback=self._progress(progress))
        previews = [out.preview(k) for k in range(len(out.human_masks))]
        seeds = out.metadata["seeds"]
        gallery = [(p, f"seed {s}") for p, s in zip(previews, seeds, strict=True)]
        return gallery, previews[0], previews

    def pick_mask(self, previews, evt: gr.SelectData):
        """Clicking a mask candidate puts it in the editor."""
        return previews[evt.index] if previews else gr.skip()

    @_user_errors
    def generate_images(
        self,
        human, obj, interaction, background, x1, y1, x2, y2, editor, num_images, seed, steps, guidance,
        fit_object=True, keep_human=DEFAULT_PRIOR_STRENGTH[0], keep_object=DEFAULT_PRIOR_STRENGTH[1],
        layouts=LAYOUT_CANDIDATES,
        progress=gr.Progress(),  # noqa: B008 - Gradio injects the progress tracker through this default
    ):  # fmt: skip
        """Stage 2 (with stage 1 first when the editor is empty) → gallery with seeds, and the files to download."""
        request = self._request(human, obj, interaction, background, x1, y1, x2, y2)
        settings = self._settings(num_images, seed, steps, guidance, fit_object, layouts)
        settings["prior_strength"] = check_prior_strength((keep_human, keep_object))
        composite = editor.get("composite") if isinstance(editor, dict) else editor
        mask = masks_from_preview(composite) if composite is not None else None
        progress(0, desc="image stage" if mask is not None else "mask stage")
        out = self.pipe(**request, mask=mask, **settings, callback=self._progress(progress))
        run = self.outputs / uuid.uuid4().hex[:12]
        inputs = {"interaction": interaction, "box": request["box"], "mask": "edited" if mask is not None else None}
        files = out.save(run, inputs=inputs)
        seeds = out.metadata["seeds"]
        images = [run / f"image_{k}.png" for k in range(len(out.images))]
        gallery = [(str(p), f"seed {s}") for p, s in zip(images, seeds, strict=True)]
        downloads = [str(f) for f in files if f.name.startswith("image_") or f.name.endswith("_preview.png")]
        downloads.append(str(run / "choi.json"))
        return gallery, downloads


def _theme() -> gr.themes.Base:
    # System fonts only: the default theme would fetch Google Fonts, and the app makes no outside requests.
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def build_app(pipeline: Any, outputs: str | os.PathLike | None = None) -> gr.Blocks:
    """The Gradio Blocks over ``pipeline`` (a CHOIPipeline, or anything with its interface)."""
    outputs = Path(outputs) if outputs is not None else Path(tempfile.mkdtemp(prefix="choi-app-"))
    outputs.mkdir(parents=True, exist_ok=True)
    h = Handlers(pipeline, outputs)
    suggestions = [c.text for c in CLASSES]
    image = functools.partial(image_upload, height=220)

    with gr.Blocks(title="choi", analytics_enabled=False) as demo:
        gr.Markdown(
            "## choi — a given person interacting with a given object\n"
            "Upload the person and the object, each on a plain background; choose or type the interaction. "
            "Optionally add a background and click two corners of the box where they should appear."
        )
        with gr.Row():
            human = image(label="Person", elem_id="human")
            obj = image(label="Object", elem_id="object")
            with gr.Column():
                interaction = gr.Dropdown(
                    suggestions, value=suggestions[0], label="Interaction", allow_custom_value=True,
                    info="pick one or type your own, e.g. 'a person riding a bike'", elem_id="interaction",
                )  # fmt: skip
                num_images = gr.Slider(1, MAX_CANDIDATES, value=2, step=1, label="Candidates", elem_id="num-images")
                seed = gr.Number(-1, label="Seed (-1: random)", precision=0, minimum=-1, elem_id="seed")
                with gr.Accordion("Sampler", open=False):
                    steps = gr.Number(0, label="Steps (0: the model's default)", precision=0, minimum=0)
                    guidance = gr.Number(-1, label="Guidance (-1: the model's default)", minimum=-1)
                    fit_object = gr.Checkbox(
                        True, label="Fit each object mask to the object's own outline", elem_id="fit-object"
                    )
                    # how much of each reference, stretched into its mask, stage 2 keeps as it is
                    keep_human, keep_object = (
                        gr.Slider(0, 1, value=v, step=0.05, label=f"Keep the {who}'s reference (0: repaint, 1: keep)")
                        for v, who in zip(DEFAULT_PRIOR_STRENGTH, ("person", "object"), strict=True)
                    )
                    layouts = gr.Slider(
                        1, 16, value=LAYOUT_CANDIDATES, step=1, elem_id="layout-candidates",
                        label="Layouts drawn per candidate (the one the object fits best is kept)",
                    )  # fmt: skip
        with gr.Accordion("Background and box (optional)", open=False):
            with gr.Row():
                background = image(label="Background", elem_id="background")
                box_view = gr.Image(label="Click two corners to set the box", interactive=False, height=220)
            with gr.Row():
                x1, y1, x2, y2 = (gr.Number(None, label=n, minimum=0, maximum=1) for n in ("x1", "y1", "x2", "y2"))
            corner = gr.State(None)
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
                previews = gr.State([])
            with gr.Column():
                image_button = gr.Button("2. Generate images", variant="primary", elem_id="generate-images")
                gallery = gr.Gallery(label="Images (with seeds)", columns=2, height=320, elem_id="gallery")
                downloads = gr.File(label="Download images, masks and choi.json", file_count="multiple")

        # Light handlers run at once (no concurrency limit), never behind a generation in the queue;
        # queued all the same, as only queued events show their errors in the page.
        light = {"concurrency_limit": None, "show_progress": "hidden"}
        for component, what in ((human, "person image"), (obj, "object image"), (background, "background image")):
            component.upload(functools.partial(h.check_upload, what=what), component, None, **light)
        box_fields = [x1, y1, x2, y2]
        for trigger in (background.change, *(f.change for f in box_fields)):
            trigger(h.show_box, [background, *box_fields], box_view, **light)
        box_view.select(h.click_corner, [background, corner], [corner, *box_fields], **light)
        request = [human, obj, interaction, background, *box_fields]
        settings = [num_images, seed, steps, guidance, fit_object]
        mask_button.click(h.generate_masks, [*request, *settings, layouts], [mask_gallery, editor, previews])
        mask_gallery.select(h.pick_mask, previews, editor, **light)
        image_button.click(
            h.generate_images, [*request, editor, *settings, keep_human, keep_object, layouts], [gallery, downloads]
        )
    return demo


def launch(
    pipeline: Any,
    host: str = "127.0.0.1",
    port: int = 7860,
    outputs: str | os.PathLike | None = None,
    concurrency: int = 1,
    block: bool = True,
) -> gr.Blocks:
    """Build and serve the app. One generation runs at a time per worker (``concurrency``); others queue."""
    outputs = Path(outputs) if outputs is not None else Path(tempfile.mkdtemp(prefix="choi-app-"))
    demo = build_app(pipeline, outputs)
    demo.queue(default_concurrency_limit=concurrency, max_size=32)
    log.info("choi app on http://%s:%d (outputs in %s)", host, port, outputs)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        allowed_paths=[str(outputs)],  # the only files served besides Gradio's own upload cache
        max_file_size=MAX_UPLOAD,
        show_error=True,
        ssr_mode=False,
        prevent_thread_lock=not block,
        quiet=True,
        theme=_theme(),
        footer_links=[],
    )
    return demo
