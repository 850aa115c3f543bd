"""Gradio demo: draw or upload a handwritten formula, get its LaTeX, the rendered formula and the beam alternatives.

```bash
pip install "hmer-hf[demo]"
hmer-hf demo [--model DIR] [--host 127.0.0.1] [--port 7860] [--share]    # or: python demo/app.py ...
```

gradio is an optional extra: it is imported only when the demo is built, so `import hmer_hf` and the rest of the
command line never need it. Recognition goes through the `image-to-latex` pipeline, loaded once per model path.
docs/demo.md has the guide.
"""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # gradio is optional: only for type hints here
    import gradio as gr
    from transformers import Pipeline

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_HOST",
    "EXAMPLES_DIR",
    "add_arguments",
    "build_demo",
    "launch",
    "load_pipeline",
    "main",
    "recognise",
    "run",
]

DEFAULT_HOST = "127.0.0.1"  # loopback only unless --host says otherwise
DEFAULT_MAX_FILE_SIZE = "10mb"  # upload limit (gradio refuses larger files before they reach the model)
MAX_BEAMS = 10
# The examples made by scripts/make_demo_examples.py (present in a source checkout, not in an installed wheel).
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "demo" / "examples"
# KaTeX display math: gr.Markdown renders what lies between these.
LATEX_DELIMITERS = [{"left": "$$", "right": "$$", "display": True}]
INSTALL_HINT = "pip install 'hmer-hf[demo]'"
# Canvas ink: black on white, a pen about as wide relative to the writing as CROHME's ~3 px strokes on ~28 px
# characters when a character is drawn some 70-100 px tall.
BRUSH_SIZE = 8
CANVAS_SIZE = (800, 300)
# gr.Sketchpad starts with no tool selected ("select the draw tool to start"): pick the brush once the page is up,
# so that the first stroke draws. The button is found by its (English) label; if not found, the user picks it.
SELECT_BRUSH_JS = """
() => {
  const pick = (tries) => {
    const brush = document.querySelector('#sketch button[aria-label="Brush"]');
    if (brush) brush.click();
    else if (tries > 0) setTimeout(() => pick(tries - 1), 100);
  };
  pick(100);
}
"""
CSS = "#rendered .katex { font-size: 1.8em; }"  # the formula large enough to check against the drawing
GREEDY, BEAM = "greedy", "beam search"
DRAW, UPLOAD = "draw", "upload"


def import_gradio():
    """Import gradio, or exit with the install command when the optional `demo` extra is missing."""
    try:
        import gradio
    except ImportError as error:
        raise SystemExit(f"error: the demo needs gradio, an optional extra: {INSTALL_HINT} ({error})") from error
    return gradio


def model_key(model: str) -> str:
    """A cache key for a model reference: an existing local folder by its resolved path, anything else as given."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


@functools.lru_cache(maxsize=4)
def _cached_pipeline(key: str, device: str | None) -> Pipeline:
    from transformers import pipeline

    from . import TASK

    logger.info("loading %s", key)
    return pipeline(TASK, model=key, device=device)


def load_pipeline(model: str, device: str | None = None) -> Pipeline:
    """The `image-to-latex` pipeline for `model` (a saved folder), loaded once and cached per path and device."""
    return _cached_pipeline(model_key(model), device)


def recognise(
    image: Any, model: str, num_beams: int = 1, compact: bool = False, device: str | None = None
) -> list[dict]:
    """Recognise one image: the best `num_beams` results (one when greedy), best first, each a pipeline result
    dict (`generated_text`, `score`). Raises ValueError for unreadable or blank images (the image processor's
    message)."""
    pipe = load_pipeline(model, device)
    if num_beams > 1:
        return list(pipe(image, num_beams=num_beams, num_return_sequences=num_beams, compact=compact))
    return [pipe(image, compact=compact)]


def latex_markdown(latex: str) -> str:
    """Markdown that KaTeX renders as a display formula (a note when there is nothing to render)."""
    if not latex.strip():
        return "*(the model returned an empty formula)*"
    return f"$$ {latex} $$"


def alternative_rows(results: Sequence[dict]) -> list[list]:
    """Table rows for the alternatives: rank, LaTeX, score (length-normalised log-probability, 4 decimals)."""
    return [[rank, r["generated_text"], round(r["score"], 4)] for rank, r in enumerate(results, start=1)]


def _canvas_image(sketch: dict | None) -> Any:
    """The drawing's flattened image from a gr.Sketchpad value (None when nothing was drawn)."""
    if not sketch:
        return None
    return sketch.get("composite")


def build_demo(
    model: str | None = None,
    *,
    num_beams: int = 5,
    device: str | None = None,
    examples: Sequence[str | Path] | None = None,
    model_editable: bool = True,
    title: str = "Handwritten math → LaTeX",
) -> gr.Blocks:
    """The demo UI as a `gr.Blocks` (not launched; see [`launch`]).

    Args:
        model: model folder (or Hub id); default the shipped `hmer_hf.DEFAULT_MODEL` when it is installed.
        num_beams: initial beam width (1 = greedy decoding).
        device: torch device for the pipeline (default: the pipeline's choice).
        examples: image files offered on the Upload tab; default the PNGs in `demo/examples/` of a checkout.
        model_editable: whether the model path field can be changed from the page (off for public share links,
            where a visitor should not make the server load arbitrary folders).
        title: page heading and browser title.
    """
    gr = import_gradio()
    from . import DEFAULT_MODEL, default_model_available

    if model is None and default_model_available():
        model = DEFAULT_MODEL
    if examples is None:
        examples = sorted(EXAMPLES_DIR.glob("*.png"))
    num_beams = max(1, min(int(num_beams), MAX_BEAMS))

    def on_recognise(
        source: str, sketch: dict | None, upload: Any, model_path: str, decoding: str, beams: float, compact: bool
    ) -> tuple[str, str, list[list]]:
        image = _canvas_image(sketch) if source == DRAW else upload
        if image is None:
            what = "Nothing drawn yet: draw a formula on the canvas" if source == DRAW else "Upload an image first"
            raise gr.Error(what, print_exception=False)
        model_path = (model_path or "").strip()
        if not model_path:
            raise gr.Error("No model: start the demo with --model DIR (a folder saved with save_pretrained).")
        try:
            load_pipeline(model_path, device)
        except Exception as error:  # a folder that does not exist, is incomplete or holds another kind of model
            logger.warning("cannot load the model %r", model_path, exc_info=True)
            raise gr.Error(f"Cannot load the model {model_path!r}: {error}", print_exception=False) from None
        width = int(beams) if decoding == BEAM else 1
        try:
            results = recognise(image, model_path, num_beams=width, compact=compact, device=device)
        except ValueError as error:  # unreadable or blank input: the image processor says why
            where = "The drawing" if source == DRAW else "The uploaded image"
            raise gr.Error(f"{where} could not be recognised: {error}", print_exception=False) from None
        except Exception as error:
            logger.exception("recognition failed")
            raise gr.Error(f"Recognition failed ({type(error).__name__}); see the server log.") from None
        latex = results[0]["generated_text"]
        return latex, latex_markdown(latex), alternative_rows(results)

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {title}\n"
            "Write a formula with the mouse, a pen or a finger on the **Draw** tab, or give an image on the "
            "**Upload** tab, then press **Recognise**."
        )
        source = gr.State(DRAW)
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Tabs():
                    with gr.Tab("Draw", id=DRAW) as draw_tab:
                        sketch = gr.Sketchpad(
                            label="Canvas",
                            type="pil",
                            image_mode="RGBA",
                            format="png",
                            canvas_size=CANVAS_SIZE,
                            height=CANVAS_SIZE[1] + 120,
                            fixed_canvas=True,
                            layers=False,
                            transforms=(),
                            brush=gr.Brush(default_size=BRUSH_SIZE, colors=["#000000"], color_mode="fixed"),
                            eraser=gr.Eraser(default_size=4 * BRUSH_SIZE),
                            elem_id="sketch",
                        )
                    with gr.Tab("Upload", id=UPLOAD) as upload_tab:
                        upload = gr.Image(
                            label="Image of a formula",
                            type="pil",
                            image_mode=None,  # keep the file's mode: the image processor handles every mode
                            format="png",
                            sources=["upload", "clipboard"],
                            elem_id="upload",
                        )
                        if examples:
                            gr.Examples(examples=[[str(path)] for path in examples], inputs=upload, label="Examples")
                recognise_button = gr.Button("Recognise", variant="primary", elem_id="recognise")
                with gr.Accordion("Options", open=True):
                    with gr.Row():
                        decoding = gr.Radio([GREEDY, BEAM], value=BEAM if num_beams > 1 else GREEDY, label="Decoding")
                        beam_width = gr.Slider(
                            2, MAX_BEAMS, value=max(num_beams, 2), step=1, label="Beam width (alternatives shown)",
                            visible=num_beams > 1,
                        )  # fmt: skip
                    compact = gr.Checkbox(value=True, label="Compact LaTeX (x^{2} instead of x ^ { 2 })")
                    model_box = gr.Textbox(
                        value=model or "",
                        label="Model folder",
                        placeholder="a folder saved with save_pretrained",
                        interactive=model_editable,
                    )
            with gr.Column(scale=2):
                latex = gr.Textbox(label="LaTeX", buttons=["copy"], interactive=False, elem_id="latex")
                gr.Markdown("**Rendered**")
                rendered = gr.Markdown(latex_delimiters=LATEX_DELIMITERS, elem_id="rendered", min_height=60)
                alternatives = gr.Dataframe(
                    headers=["#", "LaTeX", "score"],
                    datatype=["number", "str", "number"],
                    label="Alternatives (score: mean log-probability per token)",
                    interactive=False,
                    wrap=True,
                    column_widths=["10%", "68%", "22%"],
                    elem_id="alternatives",
                )

        demo.load(None, js=SELECT_BRUSH_JS, queue=False, api_visibility="private")
        draw_tab.select(lambda: DRAW, outputs=source, queue=False, api_visibility="private")
        upload_tab.select(lambda: UPLOAD, outputs=source, queue=False, api_visibility="private")
        decoding.change(
            lambda d: gr.update(visible=d == BEAM), decoding, beam_width, queue=False, api_visibility="private"
        )
        recognise_button.click(
            on_recognise,
            inputs=[source, sketch, upload, model_box, decoding, beam_width, compact],
            outputs=[latex, rendered, alternatives],
            api_name="recognise",
        )
    return demo


def launch(
    demo: gr.Blocks,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    share: bool = False,
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE,
    block: bool = True,
) -> str:
    """Queue and serve the demo (one recognition at a time); returns the local URL.

    `port=None` takes the first free port from 7860 up. `block=False` returns once the server is up (tests, notebooks;
    stop it with `demo.close()`).
    """
    gr = import_gradio()
    demo.queue(default_concurrency_limit=1, max_size=32)
    theme = gr.themes.Default(
        # system fonts: the page then needs nothing from the internet (the default theme fetches Google Fonts)
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "Consolas", "monospace"],
    )
    _, local_url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=max_file_size,
        prevent_thread_lock=not block,
        ssr_mode=False,
        theme=theme,
        css=CSS,
        footer_links=["gradio"],
        quiet=not block,
    )
    return local_url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `hmer-hf demo` (and `python demo/app.py`)."""
    parser.add_argument("--model", help="model folder (default: the shipped model)")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine)")
    parser.add_argument("--port", type=int, default=None, help="port (default: the first free one from 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (locks the model)")
    parser.add_argument("--num-beams", type=int, default=5, help="initial beam width (1 = greedy)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--max-file-size", default=DEFAULT_MAX_FILE_SIZE, help="upload limit, e.g. 10mb")


def run(args: argparse.Namespace) -> int:
    """`hmer-hf demo`: load the model once, build the UI and serve it until interrupted."""
    from .cli import resolve_model

    import_gradio()  # fail with the install hint before loading anything
    model = resolve_model(args.model)
    if not 1 <= args.num_beams <= MAX_BEAMS:
        raise SystemExit(f"error: --num-beams must be between 1 and {MAX_BEAMS}")
    load_pipeline(model, args.device)  # load at start: a bad folder fails here, and the first request is fast
    demo = build_demo(model, num_beams=args.num_beams, device=args.device, model_editable=not args.share)
    launch(demo, host=args.host, port=args.port, share=args.share, max_file_size=args.max_file_size)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python demo/app.py`."""
    parser = argparse.ArgumentParser(prog="demo/app.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
