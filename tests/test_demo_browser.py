"""The Gradio demo in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright's Python package.

The demo serves a small saved model whose output head is biased towards four safe symbols (`x`, `y`, `2`, `3`) and
away from the end tokens, so every result is a non-empty formula that KaTeX can render, while which symbols win (and
every score) still depends on the image. The browser test skips, saying why, only when gradio, playwright or
chromium is missing; `.ci/run` installs all three and sets HMER_REQUIRE_BROWSER=1, which turns such a skip into a
failure.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "demo" / "examples" / "x_squared_plus_1.png"
SAFE_SYMBOLS = ["x", "y", "2", "3"]
NUM_BEAMS = 3
TIMEOUT_MS = 90_000  # a recognition on a busy 2-core machine, with margin
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    """The system Chromium (Debian's package), never a browser downloaded by Playwright."""
    return os.environ.get("HMER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def missing(reason: str):
    """Skip for a missing optional piece; fail instead where HMER_REQUIRE_BROWSER=1 (CI, which installs them all)."""
    if os.environ.get("HMER_REQUIRE_BROWSER") == "1":
        pytest.fail(f"HMER_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def import_or_missing(module: str, reason: str):
    """Import an optional module, or skip/fail via [`missing`]."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return missing(reason)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def demo_model_dir(tiny_model_dir: Path, tmp_path_factory) -> Path:
    """The tiny random model with its output head biased towards safe symbols and against ending: at most 4 tokens,
    never empty, always valid LaTeX, and still input-dependent."""
    import torch

    from hmer_hf import HMERForConditionalGeneration, HMERProcessor

    model = HMERForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    processor = HMERProcessor.from_pretrained(tiny_model_dir)
    vocab = processor.tokenizer.get_vocab()
    with torch.no_grad():
        bias = model.lm_head.bias
        bias[[vocab[s] for s in SAFE_SYMBOLS]] += 10.0
        special = [model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id]
        bias[special] -= 30.0
    model.generation_config.max_new_tokens = 4
    folder = tmp_path_factory.mktemp("demo_model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def demo_url(demo_model_dir: Path) -> Iterator[str]:
    """The demo served on a free loopback port in this process (stopped after the module)."""
    import_or_missing("gradio", "the demo needs gradio: pip install -e '.[demo]'")
    from hmer_hf.demo import build_demo, launch

    demo = build_demo(str(demo_model_dir), num_beams=NUM_BEAMS, examples=[EXAMPLE])
    url = launch(demo, host="127.0.0.1", port=free_port(), block=False)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser_page(demo_url: str):
    """A page of headless Debian Chromium driven by Playwright (skips when either is missing)."""
    sync_api = import_or_missing("playwright.sync_api", "needs playwright: pip install -e '.[browser]'")
    chromium = find_chromium()
    if chromium is None:
        missing("needs Debian's chromium (apt-get install chromium), or HMER_CHROMIUM=/path/to/chromium")
    with sync_api.sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="hmer-chromium-") as profile:
        # A fresh, empty profile (--user-data-dir): Playwright takes it as the persistent context's folder.
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            yield page
        finally:
            context.close()


def _open(page, url: str) -> None:
    """Load the demo and wait until the canvas is ready to draw (the demo selects the brush itself)."""
    from playwright.sync_api import expect

    page.goto(url)
    page.locator("#sketch canvas").first.wait_for(state="visible")
    expect(page.get_by_text("select the draw tool to start")).to_have_count(0)


def _recognise_and_wait(page) -> str:
    """Click Recognise on a fresh page and return the LaTeX once it is shown."""
    from playwright.sync_api import expect

    latex = page.locator("#latex textarea")
    page.locator("#recognise").click()
    expect(latex).to_have_value(re.compile(r"\S"), timeout=TIMEOUT_MS)
    return latex.input_value()


def _table_rows(page, count: int) -> list[list[str]]:
    """The cells of the alternatives table (an ARIA grid), row by row, once it shows `count` rows."""
    from playwright.sync_api import expect

    expect(page.locator("#alternatives [role=grid]")).to_have_attribute("aria-rowcount", str(count + 1))  # + header
    cells = page.locator("#alternatives [role=gridcell]")
    return [
        [cells.and_(page.locator(f"[data-row='{row}'][data-col='{col}']")).inner_text().strip() for col in range(3)]
        for row in range(count)
    ]


def _expect_error_toast(page, text: str) -> None:
    from playwright.sync_api import expect

    toast = page.get_by_text(text).first
    expect(toast).to_be_visible(timeout=TIMEOUT_MS)
    assert "Traceback" not in page.content()


def _screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def test_draw_and_upload_in_a_real_browser(browser_page, demo_url: str, demo_model_dir: Path, tmp_path: Path):
    from playwright.sync_api import expect
    from transformers import pipeline

    page = browser_page
    _open(page, demo_url)

    # Nothing drawn yet: a clear message, no result.
    page.locator("#recognise").click()
    _expect_error_toast(page, "Nothing drawn yet")
    assert page.locator("#latex textarea").input_value() == ""

    # Draw an "x" and a "2" with the mouse, as a user would.
    canvas = page.locator("#sketch canvas").first
    box = canvas.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 100, box
    left, top = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
    size = box["height"] * 0.4
    strokes = [
        [(0, 0), (size, size)],
        [(size, 0), (0, size)],
        [(1.3 * size, 0.1 * size), (1.6 * size, -0.1 * size), (1.9 * size, 0.1 * size), (1.3 * size, 0.6 * size),
         (2.0 * size, 0.6 * size)],
    ]  # fmt: skip
    for stroke in strokes:
        page.mouse.move(left + stroke[0][0], top + stroke[0][1])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(left + x, top + y, steps=3)  # each move repaints the WebGL canvas: slow in software
        page.mouse.up()

    latex = _recognise_and_wait(page)
    assert set(latex.replace(" ", "")) <= set("".join(SAFE_SYMBOLS)), latex  # compact LaTeX of safe symbols
    rendered = page.locator("#rendered .katex")
    expect(rendered.first).to_be_visible()
    assert page.locator("#rendered .katex-error").count() == 0
    # KaTeX keeps its source in the MathML annotation: the rendered formula is exactly the LaTeX shown.
    assert page.locator("#rendered annotation").first.text_content().strip() == latex
    rows = _table_rows(page, NUM_BEAMS)
    assert [row[0] for row in rows] == ["1", "2", "3"] and rows[0][1] == latex, rows
    assert all(float(row[2]) <= 0 for row in rows), rows
    _screenshot(page, tmp_path / "demo_draw.png")

    # Upload: first a blank page (a clear error), then an example; the result is exactly the pipeline's.
    blank = tmp_path / "blank.png"
    Image.new("L", (200, 80), 255).save(blank)
    _open(page, demo_url)
    page.get_by_role("tab", name="Upload").click()
    file_input = page.locator("#upload input[type=file]")
    file_input.set_input_files(str(blank))
    expect(page.locator("#upload img").first).to_be_visible()
    page.locator("#recognise").click()
    _expect_error_toast(page, "could not be recognised")
    expect(page.get_by_text("looks blank").first).to_be_visible()
    assert page.locator("#latex textarea").input_value() == ""

    _open(page, demo_url)
    page.get_by_role("tab", name="Upload").click()
    page.locator("#upload input[type=file]").set_input_files(str(EXAMPLE))
    expect(page.locator("#upload img").first).to_be_visible()
    latex = _recognise_and_wait(page)
    expected = pipeline("image-to-latex", model=str(demo_model_dir))(
        str(EXAMPLE), num_beams=NUM_BEAMS, num_return_sequences=NUM_BEAMS, compact=True
    )
    assert latex == expected[0]["generated_text"]
    rows = _table_rows(page, NUM_BEAMS)
    assert [row[1] for row in rows] == [r["generated_text"] for r in expected]
    for row, result in zip(rows, expected):
        assert abs(float(row[2]) - result["score"]) <= 1e-4, (row, result)
    expect(page.locator("#rendered .katex").first).to_be_visible()
    assert page.locator("#rendered annotation").first.text_content().strip() == latex
    _screenshot(page, tmp_path / "demo_upload.png")


def test_gradio_stays_optional(tiny_model_dir: Path):
    """`import hmer_hf` and the CLI parser never import gradio; without it, `hmer-hf demo` prints the install hint."""
    code = (
        "import sys\n"
        "import hmer_hf, hmer_hf.cli\n"
        "hmer_hf.cli.build_parser()\n"
        "print('gradio imported:', 'gradio' in sys.modules)\n"
        "sys.modules['gradio'] = None  # as if it were not installed\n"
        f"sys.exit(hmer_hf.cli.main(['demo', '--model', {str(tiny_model_dir)!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )
    assert "gradio imported: False" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pip install 'hmer-hf[demo]'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
