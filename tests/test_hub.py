"""Hub sharing: the model upload folder (remote code, model card, results) and the dataset export (Parquet + card).

Nothing here touches the real Hub: uploads are pointed (HF_ENDPOINT) at a closed local port or at a local HTTP
server that refuses the credentials, and must fail with one clear line.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from PIL import Image

import hmer_hf
from hmer_hf import HMERForConditionalGeneration, HMERProcessor
from hmer_hf.cli import main as cli_main
from hmer_hf.data.builders import HMER_FEATURES
from hmer_hf.data.export import CROHME_LICENSE, export_dataset
from hmer_hf.evaluation import score_records, write_results
from hmer_hf.hub import (
    EVAL_RATE_KEYS,
    build_upload_folder,
    eval_result_from_metrics,
    write_eval_results,
    write_model_card,
)

from .conftest import REPO_ROOT, draw_formula_image
from .test_remote_code import BLOCK_HMER_HF, REMOTE_CODE_IMPORTS

CLOSED_ENDPOINT = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once

MODEL_FILES = {
    "README.md", "config.json", "generation_config.json", "model.safetensors", "processor_config.json",
    "tokenizer_config.json", "vocab.json", *REMOTE_CODE_IMPORTS,
}

CHILD = BLOCK_HMER_HF + textwrap.dedent(
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor
    folder, images = sys.argv[1], sys.argv[2:]
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    batch = processor(images=images)
    out = {"model": type(model).__module__}
    for beams in (1, 3):
        ids = model.generate(**batch, max_new_tokens=6, num_beams=beams)
        out[f"ids_{beams}"] = ids.tolist()
        out[f"texts_{beams}"] = processor.batch_decode(ids, skip_special_tokens=True)
    out["hmer_hf_loaded"] = any(m == "hmer_hf" or m.startswith("hmer_hf.") for m in sys.modules)
    print(json.dumps(out))
    """
)


def _front_matter(readme: Path) -> dict:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n"), f"{readme} has no YAML front matter"
    return yaml.safe_load(text.split("---\n")[1])


def _clean_env(tmp_path: Path, endpoint: str | None = None) -> dict[str, str]:
    """The environment for a child process: no PYTHON* variables, no token or offline mode, a private HF_HOME."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTHON") and k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    return env


# ---------------------------------------------------------------------------------------------------------------
# model upload folder
# ---------------------------------------------------------------------------------------------------------------


def test_dry_run_folder_loads_without_hmer_hf_and_matches_library(tiny_model_dir, tmp_path, capsys):
    upload = tmp_path / "upload"
    assert cli_main(["push", str(tiny_model_dir), "me/hmer-tiny", "--dry-run", "--output", str(upload)]) == 0
    assert "16 files" in capsys.readouterr().out
    assert {p.name for p in upload.iterdir()} == MODEL_FILES
    config = json.loads((upload / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageTextToText"] == "modeling_hmer.HMERForConditionalGeneration"
    card = _front_matter(upload / "README.md")
    assert "model-index" not in card  # no eval_results.json: no measured results
    assert "No measured results" in (upload / "README.md").read_text()

    elsewhere = tmp_path / "elsewhere" / "hmer-tiny"
    shutil.copytree(upload, elsewhere)
    images = []
    for seed in (21, 22, 23):
        path = tmp_path / f"img{seed}.png"
        Image.fromarray(draw_formula_image(seed, width=120 + 20 * (seed - 21))).save(path)
        images.append(str(path))
    env = _clean_env(tmp_path)
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(elsewhere), *images], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    assert child["model"].startswith("transformers_modules") and child["hmer_hf_loaded"] is False

    model = HMERForConditionalGeneration.from_pretrained(tiny_model_dir)
    processor = HMERProcessor.from_pretrained(tiny_model_dir)
    batch = processor(images=images)
    for beams in (1, 3):
        ids = model.generate(**batch, max_new_tokens=6, num_beams=beams)
        assert child[f"ids_{beams}"] == ids.tolist()
        assert child[f"texts_{beams}"] == processor.batch_decode(ids, skip_special_tokens=True)


def test_upload_folder_takes_missing_remote_code_from_the_package(tiny_model_dir, tmp_path):
    # The shipped default model carries no .py copies: the upload gets the installed package's files.
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare, ignore=shutil.ignore_patterns("*.py"))
    files = build_upload_folder(bare, tmp_path / "out")
    package = Path(hmer_hf.__file__).resolve().parent
    code = [name for name in files if name.endswith(".py")]
    assert set(code) == {p.name for p in tiny_model_dir.glob("*.py")}
    for name in code:
        assert (tmp_path / "out" / name).read_bytes() == (package / name).read_bytes(), name


def test_upload_folder_refuses_incomplete_model_dirs(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors"):
        build_upload_folder(broken, tmp_path / "out2")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        build_upload_folder(tiny_model_dir, tiny_model_dir)


def test_model_card_metadata_and_results(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    # Real `hmer-hf evaluate` outputs: metrics scored by the ExpRate metric and written by write_results.
    references = ["x ^ { 2 }", "\\frac { 1 } { 2 }", "a + b", "y", "\\sqrt { x }"]
    greedy = ["x ^ { 2 }", "\\frac { 1 } { 3 }", "a - b", "y", "x"]  # token edits 0 1 1 0 3
    beam = ["x ^ { 2 }", "\\frac { 1 } { 2 }", "a - b", "y", "x"]  # 0 0 1 0 3
    entries, metrics_files = [], []
    for name, predictions, num_beams in (("greedy", greedy, 1), ("beam", beam, 10)):
        records = [{"id": str(i), "reference": r, "prediction": p} for i, (r, p) in enumerate(zip(references,
                                                                                                 predictions))]
        metrics = score_records(records)
        metrics.update(model=str(model_dir), data="crohme/2014", split=None, num_beams=num_beams)
        write_results(tmp_path / name, records, metrics)
        metrics_files.append(tmp_path / name / "metrics.json")
    config = json.loads((model_dir / "config.json").read_text())
    entries.append(eval_result_from_metrics(metrics_files[0], model_config=config))
    assert entries[0] == {"dataset": "CROHME 2014", "split": "test", "num_samples": 5, "decoding": "greedy",
                          "exprate": 0.4, "exprate_le1": 0.8, "exprate_le2": 0.8, "exprate_le3": 1.0,
                          "command": f"hmer-hf evaluate --model {model_dir} --data crohme/2014 --num-beams 1"}
    write_eval_results(model_dir, entries)

    upload = tmp_path / "upload"
    assert cli_main(["push", str(model_dir), "me/hmer-tiny", "--dry-run", "--output", str(upload),
                     "--metrics", str(metrics_files[1]), "--dataset", "me/crohme", "--tag", "test-tag",
                     "--training-data", "Five toy captions."]) == 0
    expected = entries + [eval_result_from_metrics(metrics_files[1], model_config=config)]
    assert expected[1]["decoding"] == "beam 10 + bidirectional rescoring" and expected[1]["exprate"] == 0.6
    assert json.loads((upload / "eval_results.json").read_text()) == expected
    assert not (model_dir / "README.md").exists()  # MODEL_DIR is not modified

    card = _front_matter(upload / "README.md")
    assert card["library_name"] == "transformers" and card["pipeline_tag"] == "image-to-text"
    assert card["license"] == CROHME_LICENSE and card["datasets"] == ["me/crohme"]
    assert {"hmer", "handwritten-math", "latex", "ocr", "image-to-latex", "test-tag"} <= set(card["tags"])
    (index,) = card["model-index"]
    assert index["name"] == "hmer-tiny"
    (result,) = index["results"]  # one task + dataset; a metric per rate and decoding
    assert result["task"]["type"] == "image-to-text"
    assert result["dataset"] == {"name": "CROHME 2014", "type": "crohme", "split": "test"}
    got = {(m["config"], m["type"]): m["value"] for m in result["metrics"]}
    assert got == {(e["decoding"], k): round(100 * e[k], 2) for e in expected for k in EVAL_RATE_KEYS}
    text = (upload / "README.md").read_text()
    assert "| CROHME 2014 | test | 5 | greedy | 40.00 | 80.00 | 80.00 | 100.00 |" in text
    assert "| CROHME 2014 | test | 5 | beam 10 + bidirectional rescoring | 60.00 | 80.00 | 80.00 | 100.00 |" in text
    assert "Five toy captions." in text and 'trust_remote_code=True' in text and "me/hmer-tiny" in text
    assert "| parameters | " + f"{HMERForConditionalGeneration.from_pretrained(model_dir).num_parameters():,}" in text

    # write_model_card on the folder itself (how the shipped model's card is made), another licence.
    path = write_model_card(model_dir, license="apache-2.0")
    assert path == model_dir / "README.md"
    card = _front_matter(path)
    assert card["license"] == "apache-2.0"
    assert [m["value"] for m in card["model-index"][0]["results"][0]["metrics"]] == [40.0, 80.0, 80.0, 100.0]

    (model_dir / "eval_results.json").write_text(json.dumps([{"dataset": "CROHME 2014", "exprate": 59.3}]))
    with pytest.raises(ValueError, match=r"eval_results\.json: entry 0 lacks \['split', 'num_samples', 'decoding'\]"):
        write_model_card(model_dir)


# ---------------------------------------------------------------------------------------------------------------
# pushing without network / with refused credentials
# ---------------------------------------------------------------------------------------------------------------


class _RefusingHub(http.server.BaseHTTPRequestHandler):
    """A local stand-in for the Hub that answers every request with 401 Unauthorized."""

    def _refuse(self):
        body = json.dumps({"error": "Invalid credentials in Authorization header"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _refuse

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing_endpoint():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _push_script(tmp_path, model_dir, endpoint, *extra):
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "push_to_hub.py"), str(model_dir), "me/hmer-tiny", *extra],
        capture_output=True, text=True, cwd=tmp_path, env=_clean_env(tmp_path, endpoint), timeout=300,
    )


def test_push_without_network_fails_with_one_clear_line(tiny_model_dir, tmp_path, refusing_endpoint):
    proc = _push_script(tmp_path, tiny_model_dir, CLOSED_ENDPOINT)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: push to me/hmer-tiny failed: cannot reach the Hub at {CLOSED_ENDPOINT} ("), last
    assert "check the network connection" in last

    proc = _push_script(tmp_path, tiny_model_dir, refusing_endpoint, "--token", "hf_not_a_real_token")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: push to me/hmer-tiny failed: the Hub at {refusing_endpoint} refused the "
                           "credentials (HTTP 401): log in with `hf auth login`"), last


def test_push_argument_errors(tiny_model_dir, tmp_path, capsys):
    assert cli_main(["push", str(tiny_model_dir), "me/x", "--dry-run"]) == 2
    assert "--dry-run needs --output" in capsys.readouterr().err
    assert cli_main(["push", str(tmp_path / "nothing"), "me/x", "--dry-run", "--output", str(tmp_path / "o")]) == 2
    assert "no such model folder" in capsys.readouterr().err
    assert cli_main(["push", str(tiny_model_dir), "not a repo!", "--dry-run", "--output", str(tmp_path / "o")]) == 2
    assert "invalid repository id 'not a repo!'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------------------------
# dataset export
# ---------------------------------------------------------------------------------------------------------------


def _caption_splits(root: Path, sizes: dict[str, int]) -> Path:
    """A folder of CoMER-style split folders (caption.txt + img/NAME.bmp) with drawn images of varying width."""
    for s, (split, n) in enumerate(sizes.items()):
        (root / split / "img").mkdir(parents=True)
        lines = []
        for i in range(n):
            name = f"{split}_{i:03d}"
            image = Image.fromarray(draw_formula_image(100 * s + i, width=90 + 7 * i))
            image.save(root / split / "img" / f"{name}.bmp")
            lines.append(f"{name}\tx ^ {{ {i} }} + {s}")
        (root / split / "caption.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _assert_same_rows(loaded: datasets.Dataset, reference: datasets.Dataset) -> None:
    assert loaded.features == reference.features == HMER_FEATURES
    for column in ("latex", "id", "height", "width"):
        assert loaded[column] == reference[column]
    raw = datasets.Image(decode=False)
    assert loaded.cast_column("image", raw)["image"] == [
        {"bytes": r["bytes"], "path": r["path"]} for r in reference.cast_column("image", raw)["image"]]
    for a, b in zip(loaded["image"], reference["image"]):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_prepare_dry_run_exports_a_loadable_hub_layout(tmp_path, capsys):
    src = _caption_splits(tmp_path / "src", {"train": 5, "test": 3})
    out, prepared = tmp_path / "export", tmp_path / "prepared"
    assert cli_main(["prepare", str(src), "--out", str(prepared), "--no-progress", "--dry-run", "--output", str(out),
                     "--push", "me/hmer-toy"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "README.md", "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]

    card = _front_matter(out / "README.md")
    assert card["configs"] == [{"config_name": "default", "data_files": [
        {"split": "test", "path": "data/test-*"}, {"split": "train", "path": "data/train-*"}]}]
    assert {s["name"]: s["num_examples"] for s in card["dataset_info"]["splits"]} == {"train": 5, "test": 3}
    assert [f["name"] for f in card["dataset_info"]["features"]] == list(HMER_FEATURES)
    assert card["license"] == "unknown" and "image-to-text" in card["task_categories"]
    assert 'load_dataset("me/hmer-toy")' in (out / "README.md").read_text()

    reference = datasets.load_from_disk(str(prepared))
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == {"train", "test"}
    for split in reference:
        _assert_same_rows(loaded[split], reference[split])
    # The files also read as plain Parquet, features included.
    parquet = datasets.load_dataset("parquet", data_files={"train": str(out / "data" / "train-*.parquet")},
                                    cache_dir=str(tmp_path / "cache2"))
    _assert_same_rows(parquet["train"], reference["train"])


def test_export_shards_and_crohme_card(tmp_path):
    src = _caption_splits(tmp_path / "src", {"train": 9})
    from hmer_hf.data import load_hmer_dataset

    dataset, _ = load_hmer_dataset(src / "train", progress=False)  # images still as paths: embedded on export
    files = export_dataset(dataset, tmp_path / "out", layout="crohme", source=src, max_shard_size=30_000,
                           progress=False)
    shards = [f for f in files if f.endswith(".parquet")]
    n = len(shards)
    assert n > 1 and shards == [f"data/train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    card = _front_matter(tmp_path / "out" / "README.md")
    assert card["license"] == CROHME_LICENSE and "crohme" in card["tags"]
    assert "@inproceedings{mouchere2014icfhr" in (tmp_path / "out" / "README.md").read_text()
    shutil.rmtree(src)  # the export stands alone: no image paths left
    loaded = datasets.load_dataset(str(tmp_path / "out"), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded["id"] == [f"train_{i:03d}" for i in range(9)]
    assert [np.asarray(im).shape for im in loaded["image"]] == [(60, 90 + 7 * i) for i in range(9)]


def test_prepare_push_without_network_fails_with_one_clear_line(tmp_path):
    src = _caption_splits(tmp_path / "src", {"train": 2})
    proc = subprocess.run(
        [sys.executable, "-m", "hmer_hf.cli", "prepare", str(src / "train"), "--out", str(tmp_path / "prep"),
         "--no-progress", "--push", "me/hmer-toy"],
        capture_output=True, text=True, cwd=REPO_ROOT, env=_clean_env(tmp_path, CLOSED_ENDPOINT), timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: push to me/hmer-toy failed: cannot reach the Hub at {CLOSED_ENDPOINT} ("), last
    assert (tmp_path / "prep" / "dataset_info.json").is_file()  # the prepared copy is kept


def test_prepare_dry_run_needs_output(tmp_path, capsys):
    assert cli_main(["prepare", str(tmp_path), "--out", str(tmp_path / "p"), "--dry-run"]) == 2
    assert "--dry-run needs --output" in capsys.readouterr().err
    assert cli_main(["prepare", str(tmp_path), "--out", str(tmp_path / "p"), "--push", "bad id"]) == 2
    assert "invalid repository id 'bad id'" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()  # both checked before building anything


@pytest.mark.parametrize(
    "num_beams, rescoring, syntax, name",
    [
        (1, True, False, "greedy"),
        (1, True, True, "greedy + syntax constraints"),
        (10, False, False, "beam 10"),
        (10, True, True, "beam 10 + bidirectional rescoring + syntax constraints"),
    ],
)
def test_decoding_name(num_beams, rescoring, syntax, name):
    from hmer_hf.hub import decoding_name

    assert decoding_name(num_beams, rescoring, syntax) == name
