"""Sharing on the Hugging Face Hub: `hmer-hf push MODEL_DIR REPO_ID` (= scripts/push_to_hub.py).

A saved model folder (written by `save_pretrained` of the model and the processor) becomes an upload folder with

- the weights (`*.safetensors`), `config.json` (with `auto_map`), `generation_config.json`, the processor and
  tokenizer files (`processor_config.json`, `tokenizer_config.json`, `vocab.json`, ...),
- the flat remote-code files that `save_pretrained` copies next to the weights (`configuration_hmer.py`,
  `modeling_hmer*.py`, `image_processing_hmer.py`, `rendering_hmer.py`, `tokenization_hmer.py`,
  `processing_hmer.py`): every module named in an `auto_map` and everything those import relatively, checked here,
  so the repository loads with `trust_remote_code=True` where `hmer_hf` is not installed,
- `eval_results.json` (measured results, optional, format below) and `trainer_info.json` when present,
- a model card `README.md` ([`write_model_card`]): YAML metadata (library, pipeline tag, tags, licence, datasets and
  a `model-index` with the measured ExpRates) and a body (architecture, usage, data, evaluation, limitations).

`--dry-run --output DIR` writes that folder and stops (no network); otherwise the folder is uploaded with
`huggingface_hub.create_repo(..., exist_ok=True)` + `upload_folder`. Network and authentication failures end with
one clear line and a non-zero exit status, not a traceback.

`eval_results.json` is a JSON list with one entry per measured (dataset, split, decoding):

    {"dataset": "CROHME 2014", "split": "test", "num_samples": 986, "decoding": "greedy",
     "exprate": 0.5933, "exprate_le1": 0.71, "exprate_le2": 0.78, "exprate_le3": 0.81,
     "command": "hmer-hf evaluate --model runs/comer/best --data ../shared/data/crohme/2014 --num-beams 1"}

Rates are fractions in [0, 1], as in the `metrics.json` that `hmer-hf evaluate --out DIR` writes;
[`eval_result_from_metrics`] turns such a file into an entry and `hmer-hf push ... --metrics DIR/metrics.json` adds
it to the upload (MODEL_DIR itself is never modified). Optional keys: `dataset_id` (a Hub dataset id or short type
for the model-index, default: derived from the name) and `notes`.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

EVAL_RESULTS_FILE = "eval_results.json"
MODEL_CARD_FILE = "README.md"
TRAINER_INFO_FILE = "trainer_info.json"  # written beside best/ and last/ models by the trainer

# Licence of weights trained on CROHME (the data's licence, CC BY-NC-SA 3.0, carries over to the weights).
DEFAULT_LICENSE = "cc-by-nc-sa-3.0"
DEFAULT_TAGS = ("hmer", "handwritten-math", "handwriting-recognition", "math", "latex", "ocr", "image-to-latex",
                "crohme")
PIPELINE_TAG = "image-to-text"
TASK_NAME = "Handwritten mathematical expression recognition"

# Configuration files of the model, processor and tokenizer that travel with the weights (those present are copied).
CONFIG_FILES = (
    "config.json",
    "generation_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer_config.json",
    "vocab.json",
    "special_tokens_map.json",
    "added_tokens.json",
    TRAINER_INFO_FILE,
)
# Auto classes a shared model must name in its auto_map, and the file that names each.
REQUIRED_AUTO_MAP = {
    "config.json": ("AutoConfig", "AutoModelForImageTextToText"),
    "tokenizer_config.json": ("AutoTokenizer",),
}
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")

# Keys of an eval_results.json entry: required, and the rates (fractions) that go into the model-index.
EVAL_REQUIRED_KEYS = ("dataset", "split", "num_samples", "decoding", "exprate")
EVAL_RATE_KEYS = ("exprate", "exprate_le1", "exprate_le2", "exprate_le3")
EVAL_RATE_NAMES = {"exprate": "ExpRate", "exprate_le1": "ExpRate ≤1", "exprate_le2": "ExpRate ≤2",
                   "exprate_le3": "ExpRate ≤3"}

# State-dict entries that are buffers, not parameters (BatchNorm statistics), left out of the parameter count.
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


class HubError(RuntimeError):
    """A push that failed for a reason outside this package (network, authentication, refused by the Hub)."""


def exit_code_of(action: Callable[[], int], repo_id: str | None) -> int:
    """Run a command-line push/export action and return its exit code: bad input (a missing or existing file, a bad
    value) is one `error:` line on stderr and 2, a failed push (`HubError`) one line naming the repo and 1."""
    try:
        return action()
    except (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except HubError as e:
        print(f"error: push to {repo_id} failed: {e}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------------------------------------------
# eval_results.json
# ---------------------------------------------------------------------------------------------------------------


def decoding_name(num_beams: int, bidirectional_rescoring: bool = False, syntax_constraints: bool = False) -> str:
    """How an evaluation decoded: `greedy`, `beam N` or `beam N + bidirectional rescoring`, each with
    ` + syntax constraints` when the LaTeX grammar constraints were on."""
    name = "greedy" if num_beams <= 1 else f"beam {num_beams}"
    if num_beams > 1 and bidirectional_rescoring:
        name += " + bidirectional rescoring"
    return name + (" + syntax constraints" if syntax_constraints else "")


def eval_result_from_metrics(
    metrics: dict[str, Any] | str | Path,
    *,
    dataset: str = "CROHME 2014",
    split: str | None = None,
    decoding: str | None = None,
    model_config: dict[str, Any] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """An eval_results.json entry from `hmer-hf evaluate`'s metrics (the dict or its `metrics.json` path).

    `split` defaults to the metrics' split, else "test". `decoding` defaults to [`decoding_name`] of the metrics'
    `num_beams`, with rescoring when `model_config` (config.json as a dict) has it on for a bidirectional model, and
    with syntax constraints when the metrics record them on. `command` defaults to the `hmer-hf evaluate` command
    line that reproduces the metrics.
    """
    if not isinstance(metrics, dict):
        path = Path(metrics)
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read metrics file {path}: {e}") from e
        if not isinstance(metrics, dict):
            raise ValueError(f"{path} is not a metrics.json of `hmer-hf evaluate` (expected a JSON object)")
    missing = [k for k in (*EVAL_RATE_KEYS, "num_samples") if k not in metrics]
    if missing:
        raise ValueError(
            f"these metrics lack {missing}; expected the metrics.json that `hmer-hf evaluate --out` writes")
    num_beams = int(metrics.get("num_beams") or 1)
    if decoding is None:
        config = model_config or {}
        rescoring = bool(config.get("bidirectional", True) and config.get("bidirectional_rescoring", True))
        decoding = decoding_name(num_beams, rescoring, bool(metrics.get("syntax_constraints")))
    if command is None and metrics.get("model") and metrics.get("data"):
        command = f"hmer-hf evaluate --model {metrics['model']} --data {metrics['data']}"
        command += f" --split {metrics['split']}" if metrics.get("split") else ""
        command += f" --num-beams {num_beams}"
        command += " --no-syntax-constraints" if metrics.get("syntax_constraints") is False else ""
    entry: dict[str, Any] = {
        "dataset": dataset,
        "split": split or metrics.get("split") or "test",
        "num_samples": int(metrics["num_samples"]),
        "decoding": decoding,
        **{k: float(metrics[k]) for k in EVAL_RATE_KEYS},
    }
    if command:
        entry["command"] = command
    return entry


def validate_eval_results(entries: Any, source: str = EVAL_RESULTS_FILE) -> list[dict[str, Any]]:
    """Check the eval_results.json format (see the module docstring); returns the entries or raises ValueError."""
    if not isinstance(entries, list):
        raise ValueError(f"{source}: expected a JSON list of result entries, got {type(entries).__name__}")
    for i, entry in enumerate(entries):
        where = f"{source}: entry {i}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not an object")
        missing = [k for k in EVAL_REQUIRED_KEYS if k not in entry]
        if missing:
            raise ValueError(f"{where} lacks {missing} (required: {list(EVAL_REQUIRED_KEYS)})")
        for key in EVAL_RATE_KEYS:
            value = entry.get(key)
            if key in entry and not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ValueError(f"{where}: {key} must be a fraction in [0, 1], got {value!r}")
    return entries


def read_eval_results(path: str | Path) -> list[dict[str, Any]]:
    """The entries of an eval_results.json file (a missing file is no results: an empty list)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    return validate_eval_results(entries, str(path))


def write_eval_results(path: str | Path, entries: Sequence[dict[str, Any]]) -> Path:
    """Write (validated) entries as eval_results.json; `path` may be the file or the model folder."""
    path = Path(path)
    if path.is_dir():
        path = path / EVAL_RESULTS_FILE
    validate_eval_results(list(entries), str(path))
    path.write_text(json.dumps(list(entries), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Model description (from the saved files, without loading the model)
# ---------------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from e


def count_parameters(model_dir: str | Path) -> int:
    """Number of parameters in the folder's safetensors weights (BatchNorm statistics, which are buffers, excluded)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                if not name.endswith(_BUFFER_SUFFIXES):
                    shape = f.get_slice(name).get_shape()
                    numel = 1
                    for dim in shape:
                        numel *= dim
                    total += numel
    return total


def family_member(config: dict[str, Any]) -> str:
    """The family member a config describes (its `preset` when saved, else recognised from its fields)."""
    if config.get("preset"):
        return {"comer": "CoMER", "bttr": "BTTR", "hmer-mtl": "HMER-MTL", "abm": "ABM", "san-da": "SAN-DA"}.get(
            config["preset"], config["preset"])
    if config.get("decoder_type") == "gru":
        return "ABM"
    if config.get("decoder_type") == "lstm":
        return "SAN-DA"
    if config.get("arm_cbam") or config.get("skeleton_head"):
        return "HMER-MTL"
    if config.get("cross_coverage", True) or config.get("self_coverage", True):
        return "CoMER"
    return "BTTR"


def describe_architecture(
    config: dict[str, Any], image_processor: dict[str, Any] | None = None
) -> list[tuple[str, str]]:
    """(part, description) rows of a model card's architecture table, from config.json (and the image processor)."""
    c = config
    rows = [("family member", family_member(c))]
    if c.get("encoder_type", "densenet") == "densenet":
        blocks = c.get("num_dense_blocks", 3)
        pooling = c.get("transition_pooling") or [True] * (blocks - 1)
        stride = 4 * 2 ** sum(bool(p) for p in pooling)
        rows.append(("encoder", f"DenseNet-B: {blocks} blocks × {c.get('num_dense_layers')} bottlenecks, growth "
                                f"{c.get('growth_rate')}, stem {c.get('stem_channels')} ch; output stride {stride}"))
    else:
        rows.append(("encoder", f"ResNet-18 (stride-1 convolutions, max-pool downsampling), stage widths "
                                f"{c.get('resnet_channels')}"))
    if c.get("decoder_type", "transformer") == "transformer":
        coverage = [name for name, key in (("self", "self_coverage"), ("cross", "cross_coverage")) if c.get(key)]
        arm = f"; ARM coverage ({' + '.join(coverage)})" if coverage else "; no coverage"
        arm += " with CBAM" if coverage and c.get("arm_cbam") else ""
        rows.append(("decoder", f"Transformer: {c.get('num_decoder_layers')} layers, d_model {c.get('d_model')}, "
                                f"{c.get('num_attention_heads')} heads, FFN {c.get('dim_feedforward')}{arm}"
                                + ("; structure-skeleton auxiliary head" if c.get("skeleton_head") else "")))
    else:
        kind = c["decoder_type"].upper()
        count = "two (L2R and R2L) " if c.get("twin_decoders") else ""
        rows.append(("decoder", f"{count}{kind} attention decoder{'s' if count else ''} with coverage, hidden size "
                                f"{c.get('hidden_size')}"))
    bidirectional = c.get("bidirectional", True)
    rows.append(("training", "left-to-right and right-to-left at once" if bidirectional else "left-to-right"))
    rescoring = bidirectional and c.get("bidirectional_rescoring", True) and not c.get("twin_decoders")
    decoding = ("greedy, or beam search in both directions with rescoring by the opposite direction"
                if rescoring else "greedy or beam search, left to right")
    if c.get("syntax_constrained_decoding") and c.get("syntax_token_ids"):
        decoding += ("; kept within the LaTeX grammar of the training labels (balanced braces, complete scripts, "
                     "fractions and roots; `syntax_constraints=False` turns it off)")
    rows.append(("decoding", decoding))
    rows.append(("vocabulary", f"{c.get('vocab_size')} tokens (4 special tokens + LaTeX symbols)"))
    if image_processor:
        p = image_processor
        scale = p.get("scale", 1.0)
        limits = (f"height {p.get('min_height')}–{p.get('max_height')}, width {p.get('min_width')}–"
                  f"{p.get('max_width')}, ≤ {p.get('max_pixels')} px")
        rows.append(("input", "any image (dark-on-light or light-on-dark, detected), cropped to the ink"
                              + (f", scaled ×{scale}" if scale != 1.0 else "") + f"; {limits}"))
    return rows


def _image_processor_config(model_dir: Path) -> dict[str, Any] | None:
    for name in PROCESSOR_FILES:
        path = model_dir / name
        if path.is_file():
            data = _read_json(path)
            return data.get("image_processor", data)
    return None


# ---------------------------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _model_index_results(entries: Sequence[dict[str, Any]]) -> list:
    """huggingface_hub EvalResults (percentages, 2 decimals) of eval_results entries."""
    from huggingface_hub import EvalResult

    results = []
    for entry in entries:
        for key in EVAL_RATE_KEYS:
            if key in entry:
                results.append(EvalResult(
                    task_type=PIPELINE_TAG, task_name=TASK_NAME,
                    dataset_type=entry.get("dataset_id") or _slug(entry["dataset"].split()[0]),
                    dataset_name=entry["dataset"], dataset_split=entry["split"],
                    metric_type=key, metric_name=f"{EVAL_RATE_NAMES[key]} ({entry['decoding']})",
                    metric_config=entry["decoding"], metric_value=round(100 * entry[key], 2),
                ))
    return results


def _results_section(entries: Sequence[dict[str, Any]]) -> str:
    protocol = (
        "ExpRate is the share of expressions whose predicted LaTeX token sequence equals the reference exactly "
        "(both split into canonical tokens, so `x^{2}` and `x ^ { 2 }` compare equal); ExpRate ≤1 / ≤2 / ≤3 also "
        "count predictions within 1, 2 or 3 token edits (insertions, deletions, substitutions). The standard "
        "benchmark is the 986 expressions of the CROHME 2014 test set, recognised from its canonical offline "
        "images against its canonical captions. Measured with `hmer-hf evaluate` (the `exprate` evaluate module "
        "shipped with hmer-hf)."
    )
    if not entries:
        return f"## Evaluation\n\n{protocol}\n\nNo measured results for these weights yet.\n"
    lines = [
        "## Evaluation", "", protocol, "",
        "| dataset | split | expressions | decoding | ExpRate | ≤1 | ≤2 | ≤3 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        rates = " | ".join(f"{100 * e[k]:.2f}" if k in e else "–" for k in EVAL_RATE_KEYS)
        lines.append(f"| {e['dataset']} | {e['split']} | {e['num_samples']:,} | {e['decoding']} | {rates} |")
    commands = [e["command"] for e in entries if e.get("command")]
    notes = [f"- {e['dataset']} ({e['decoding']}): {e['notes']}" for e in entries if e.get("notes")]
    if commands:
        lines += ["", "Measured with:", "", "```bash", *commands, "```"]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def _training_section(model_dir: Path, training_data: str | None) -> str:
    lines = ["## Training data", ""]
    if training_data:
        lines.append(training_data)
    else:
        lines.append("Not documented for this upload (`hmer-hf push --training-data TEXT` describes it).")
    info_path = model_dir / TRAINER_INFO_FILE
    if info_path.is_file():
        info = _read_json(info_path)
        facts = [f"{k} {info[k]}" for k in ("epoch", "step") if k in info]
        if "val_exprate" in info:
            on = f" on {info['val_num_samples']:,} expressions" if "val_num_samples" in info else ""
            facts.append(f"validation ExpRate (greedy) {100 * info['val_exprate']:.2f}%{on}")
        if facts:
            lines += ["", f"Checkpoint: {', '.join(facts)} (`{TRAINER_INFO_FILE}`)."]
    return "\n".join(lines) + "\n"


def render_model_card(
    model_dir: str | Path,
    *,
    repo_id: str | None = None,
    eval_results: Sequence[dict[str, Any]] | None = None,
    license: str = DEFAULT_LICENSE,
    datasets: Iterable[str] = (),
    tags: Iterable[str] = (),
    training_data: str | None = None,
) -> str:
    """The model card (README.md text) of a saved model folder; see [`write_model_card`]."""
    from huggingface_hub import ModelCard, ModelCardData

    model_dir = Path(model_dir)
    config = _read_json(model_dir / "config.json")
    entries = read_eval_results(model_dir / EVAL_RESULTS_FILE) if eval_results is None else validate_eval_results(
        list(eval_results), "eval_results")
    name = repo_id.split("/")[-1] if repo_id else model_dir.resolve().name
    ref = repo_id or "MODEL_DIR_OR_REPO_ID"
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        license=license,
        tags=list(dict.fromkeys([*DEFAULT_TAGS, *tags])),
        datasets=list(datasets) or None,
        model_name=name if entries else None,
        eval_results=_model_index_results(entries) or None,
    )
    rows = describe_architecture(config, _image_processor_config(model_dir))
    rows.append(("parameters", f"{count_parameters(model_dir):,}"))
    table = "\n".join(["| part | |", "|---|---|", *(f"| {part} | {text} |" for part, text in rows)])
    licence_note = (
        "CC BY-NC-SA 3.0: the weights are trained on CROHME data, released by its organisers under that licence "
        "(non-commercial, share-alike); the hmer-hf code is Apache-2.0."
        if license == DEFAULT_LICENSE else f"`{license}` (the code of hmer-hf is Apache-2.0)."
    )
    body = f"""
# {name}

Handwritten mathematical expression recognition: an image of a handwritten formula in, its LaTeX out, as canonical
space-separated tokens (e.g. `\\frac {{ 1 }} {{ 2 }}`). A {rows[0][1]} model of the
[hmer-hf](https://pypi.org/project/hmer-hf/) family: a `transformers` encoder-decoder that loads through the Auto
classes and decodes with `generate()`.

## Model

{table}

## Usage

With `trust_remote_code=True` (needs only `transformers`, `torch`, `numpy` and `pillow`; the model code comes from
this repository):

```python
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{ref}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{ref}", trust_remote_code=True)
batch = processor(images=["formula.png"])            # paths, PIL images, numpy arrays; dark or light ink
ids = model.generate(**batch, num_beams=10)          # num_beams=1: greedy
print(processor.batch_decode(ids, skip_special_tokens=True))   # ['x ^ {{ 2 }} + 1']
```

Online ink (e.g. from a drawing canvas) is rendered like the training ink: `processor(strokes=[[[(x, y), ...], ...]])`.

Without remote code, with the `hmer-hf` package (`pip install hmer-hf`), which registers the classes and an
`image-to-latex` pipeline:

```python
import hmer_hf  # registers the model and the "image-to-latex" pipeline
from transformers import pipeline

pipe = pipeline("image-to-latex", model="{ref}")
pipe("formula.png", num_beams=10)     # {{'generated_text': 'x ^ {{ 2 }} + 1', 'score': ...}}
pipe("formula.png", compact=True)     # 'x^{{2}}+1'
```

```bash
hmer-hf predict formula.png --model {ref} --num-beams 10
```

{_training_section(model_dir, training_data)}
{_results_section(entries)}
## Limitations

- The output vocabulary is fixed ({config.get('vocab_size')} tokens); a symbol outside it cannot be produced, and the
  output is the canonical token form, not arbitrary LaTeX (use `compact=True` or `hmer_hf.to_compact` for `x^{{2}}`).
- CROHME, the training data of the hmer-hf weights, is online ink written on pen devices and rendered as thin strokes
  of fixed width; photos or scans of paper, very different stroke widths and typeset formulas are out of
  distribution (the image processor normalises polarity, crop and scale, not style). One expression per image.
- ExpRate on the CROHME 2014 test set measures one benchmark; accuracy on other writers and devices may be lower.

## Licence

{licence_note}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}").content


def write_model_card(
    model_dir: str | Path,
    output: str | Path | None = None,
    *,
    repo_id: str | None = None,
    eval_results: Sequence[dict[str, Any]] | None = None,
    license: str = DEFAULT_LICENSE,
    datasets: Iterable[str] = (),
    tags: Iterable[str] = (),
    training_data: str | None = None,
) -> Path:
    """Write the model card of a saved model folder to `output` (default: `MODEL_DIR/README.md`); returns its path.

    The YAML front matter has `library_name: transformers`, `pipeline_tag: image-to-text`, tags (the defaults plus
    `tags`), `license`, `datasets` (Hub dataset ids, when given) and, when there are measured results, a
    `model-index` with ExpRate and ExpRate ≤1/2/3 in percent. Results: `eval_results` if given, else
    `MODEL_DIR/eval_results.json` if present, else the card says there are none (and has no model-index). The body
    describes the architecture (from config.json), usage with and without remote code, the training data, the
    evaluation protocol and results, limitations and the licence.
    """
    model_dir = Path(model_dir)
    text = render_model_card(model_dir, repo_id=repo_id, eval_results=eval_results, license=license,
                             datasets=datasets, tags=tags, training_data=training_data)
    output = Path(output) if output is not None else model_dir / MODEL_CARD_FILE
    output.write_text(text, encoding="utf-8")
    return output


# ---------------------------------------------------------------------------------------------------------------
# Upload folder
# ---------------------------------------------------------------------------------------------------------------


def _auto_map_modules(value: Any) -> Iterable[str]:
    """Module names referenced by an auto_map (nested in sub-configs too): "module.Class" or "repo--module.Class"."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "auto_map":
                targets = item.values() if isinstance(item, dict) else []
                for target in targets:
                    for ref in target if isinstance(target, list) else [target]:
                        if ref:
                            yield ref.split("--")[-1].rsplit(".", 1)[0]
            else:
                yield from _auto_map_modules(item)


def remote_code_files(model_dir: str | Path) -> list[str]:
    """The .py files a folder needs to load with trust_remote_code: the modules its auto_maps name, plus their
    relative imports (transitively). Raises ValueError naming any that is missing or any required Auto class that
    no auto_map names."""
    model_dir = Path(model_dir)
    named: dict[str, str] = {}  # module -> the file that needs it
    for config_name in ("config.json", "tokenizer_config.json", *PROCESSOR_FILES):
        path = model_dir / config_name
        if path.is_file():
            config = _read_json(path)
            for module in _auto_map_modules(config):
                named.setdefault(module, config_name)
            for auto_class in REQUIRED_AUTO_MAP.get(config_name, ()):
                if auto_class not in config.get("auto_map", {}):
                    raise ValueError(
                        f"{path} has no auto_map entry for {auto_class}: save the model and processor with "
                        "`import hmer_hf` done first (it marks the classes for remote-code export)"
                    )
    if not any("AutoProcessor" in _read_json(model_dir / n).get("auto_map", {})
               for n in PROCESSOR_FILES if (model_dir / n).is_file()):
        raise ValueError(f"{model_dir} has no processor config with an AutoProcessor auto_map "
                         f"({' or '.join(PROCESSOR_FILES)}): save the processor there with save_pretrained")
    needed: list[str] = []
    queue = list(named.items())
    while queue:
        module, needed_by = queue.pop()
        filename = f"{module}.py"
        if filename in needed:
            continue
        path = _source(model_dir, filename)
        if not path.is_file():
            raise ValueError(f"{model_dir} lacks the remote-code file {filename} (needed by {needed_by}); "
                             "re-save the model and processor with save_pretrained after `import hmer_hf`")
        needed.append(filename)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                modules = [node.module] if node.module else [a.name for a in node.names]
                queue += [(m, filename) for m in modules]
    return sorted(needed)


def _source(model_dir: Path, name: str) -> Path:
    """Where to copy `name` from: the model folder, or for a remote-code file it lacks, this package (the shipped
    default model carries no .py copies: the installed classes load it)."""
    path = model_dir / name
    if path.is_file() or not name.endswith(".py"):
        return path
    packaged = Path(__file__).resolve().parent / name
    return packaged if packaged.is_file() else path


def _model_files(model_dir: Path) -> list[str]:
    """Names of the files to copy from a saved model folder (weights, configs, remote code); checks completeness."""
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} holds no config.json: pass a folder written by save_pretrained")
    weights = sorted(p.name for p in model_dir.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"{model_dir} holds no *.safetensors weights (save with save_pretrained)")
    index = [p.name for p in model_dir.glob("*.safetensors.index.json")]
    for required in ("tokenizer_config.json", "vocab.json"):
        if not (model_dir / required).is_file():
            raise FileNotFoundError(f"{model_dir} lacks {required}: save the processor there with save_pretrained")
    configs = [n for n in CONFIG_FILES if (model_dir / n).is_file()]
    return weights + index + configs + remote_code_files(model_dir)


def prepare_output_dir(output_dir: Path) -> None:
    """Create `output_dir`, refusing one that exists and is not empty (nothing we did not write gets overwritten)."""
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise FileExistsError(f"{output_dir} exists and is not an empty folder; choose another --output")
    output_dir.mkdir(parents=True, exist_ok=True)


def build_upload_folder(
    model_dir: str | Path,
    output_dir: str | Path,
    *,
    repo_id: str | None = None,
    extra_eval_results: Sequence[dict[str, Any]] = (),
    license: str = DEFAULT_LICENSE,
    datasets: Iterable[str] = (),
    tags: Iterable[str] = (),
    training_data: str | None = None,
) -> list[str]:
    """Assemble what `hmer-hf push` uploads into `output_dir` (new or empty); returns the file names written.

    Copies the weights, configs, processor/tokenizer files and the remote-code closure (see
    [`remote_code_files`]) from `model_dir`, writes eval_results.json (MODEL_DIR's entries plus
    `extra_eval_results`) when there are results, and the model card README.md ([`write_model_card`]).
    """
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"no such model folder: {model_dir}")
    files = _model_files(model_dir)
    entries = read_eval_results(model_dir / EVAL_RESULTS_FILE) + validate_eval_results(
        list(extra_eval_results), "extra eval results")
    prepare_output_dir(output_dir)
    for name in files:
        shutil.copy2(_source(model_dir, name), output_dir / name)
    if entries:
        write_eval_results(output_dir / EVAL_RESULTS_FILE, entries)
        files.append(EVAL_RESULTS_FILE)
    write_model_card(output_dir, output_dir / MODEL_CARD_FILE, repo_id=repo_id, eval_results=entries,
                     license=license, datasets=datasets, tags=tags, training_data=training_data)
    files.append(MODEL_CARD_FILE)
    return sorted(files)


# ---------------------------------------------------------------------------------------------------------------
# Pushing (shared with dataset export, hmer_hf.data.export)
# ---------------------------------------------------------------------------------------------------------------


def _network_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the Hub could not be reached or refused": huggingface_hub's and its HTTP clients'."""
    from huggingface_hub.errors import HfHubHTTPError

    # ConnectionError covers requests' and huggingface_hub's offline-mode errors; TimeoutError socket timeouts.
    types: list[type[BaseException]] = [HfHubHTTPError, ConnectionError, TimeoutError]
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            types.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


def describe_hub_error(error: BaseException, endpoint: str) -> str:
    """One line saying why talking to the Hub failed and what to do."""
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None) if response is not None else None
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if status in (401, 403):
        return (f"the Hub at {endpoint} refused the credentials (HTTP {status}): log in with `hf auth login`, set "
                f"HF_TOKEN or pass --token with write access ({detail})")
    if status is not None:
        return f"the Hub at {endpoint} answered HTTP {status}: {detail}"
    return (f"cannot reach the Hub at {endpoint} ({type(error).__name__}: {detail}); check the network connection, "
            "HF_ENDPOINT and HF_HUB_OFFLINE")


def check_repo_id(repo_id: str) -> str:
    """Raise ValueError naming the problem unless `repo_id` is a valid Hub repository id (`owner/name`)."""
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except ValueError as e:  # HFValidationError
        raise ValueError(f"invalid repository id {repo_id!r}: {e}") from e
    return repo_id


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    repo_type: str = "model",
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Create `repo_id` (if absent) and upload `folder` to it; returns the commit URL. Raises HubError with a clear
    message when the Hub cannot be reached, refuses the credentials or rejects the upload (ValueError for an
    invalid `repo_id`)."""
    from huggingface_hub import constants, create_branch, create_repo, upload_folder

    check_repo_id(repo_id)
    try:
        create_repo(repo_id, repo_type=repo_type, private=private, token=token, exist_ok=True)
        if revision:
            create_branch(repo_id, branch=revision, repo_type=repo_type, token=token, exist_ok=True)
        commit = upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type=repo_type, revision=revision, token=token,
            commit_message=commit_message or f"Upload {repo_type} with hmer-hf",
        )
    except _network_error_types() as e:
        raise HubError(describe_hub_error(e, constants.ENDPOINT)) from e
    return str(getattr(commit, "commit_url", commit))


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by `push` and `prepare --push`: --dry-run, --output, --private, --token."""
    parser.add_argument("--dry-run", action="store_true",
                        help="write the upload folder to --output and stop (no network)")
    parser.add_argument("--output", type=Path, default=None,
                        help="folder to write the upload to (new or empty; required with --dry-run)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", default=None,
                        help="Hub token with write access (default: HF_TOKEN / `hf auth login`)")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `push` arguments to a parser (or subparser); returns it."""
    parser.description = (
        "Upload a saved model folder to the Hugging Face Hub with its remote code and a generated model card "
        "(README.md); --dry-run --output DIR writes the upload folder without any network access."
    )
    parser.add_argument("model_dir", type=Path, help="folder written by save_pretrained (model + processor)")
    parser.add_argument("repo_id", help="Hub repository, e.g. USER/hmer-comer-crohme")
    add_hub_arguments(parser)
    parser.add_argument("--revision", default=None, help="branch to push to (created if absent; default: main)")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--license", default=DEFAULT_LICENSE,
                        help=f"licence of the weights (default: {DEFAULT_LICENSE}, CROHME's licence)")
    parser.add_argument("--dataset", action="append", default=[], dest="datasets", metavar="ID",
                        help="Hub dataset id the model was trained or evaluated on (repeatable)")
    parser.add_argument("--tag", action="append", default=[], dest="tags", help="extra card tag (repeatable)")
    parser.add_argument("--training-data", default=None, help="text for the card's training-data section")
    parser.add_argument("--metrics", action="append", default=[], type=Path, metavar="METRICS_JSON",
                        help="a metrics.json of `hmer-hf evaluate --out`: added to the upload's eval_results.json "
                        "(repeatable; MODEL_DIR/eval_results.json is read too)")
    parser.add_argument("--metrics-dataset", default="CROHME 2014", help="dataset name for --metrics entries")
    parser.add_argument("--metrics-split", default=None, help="split name for --metrics entries (default: test)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Build the upload folder and push it (or stop after writing it with --dry-run); returns the exit code."""
    if args.dry_run and args.output is None:
        print("error: --dry-run needs --output DIR (the folder to write)", file=sys.stderr)
        return 2
    return exit_code_of(lambda: _push_model(args), args.repo_id)


def _push_model(args: argparse.Namespace) -> int:
    check_repo_id(args.repo_id)
    config = _read_json(Path(args.model_dir) / "config.json") if (Path(args.model_dir) / "config.json").is_file() \
        else {}
    extra = [eval_result_from_metrics(path, dataset=args.metrics_dataset, split=args.metrics_split,
                                      model_config=config) for path in args.metrics]
    with tempfile.TemporaryDirectory(prefix="hmer-hf-push-") as tmp:
        folder = args.output if args.output is not None else Path(tmp) / "upload"
        files = build_upload_folder(
            args.model_dir, folder, repo_id=args.repo_id, extra_eval_results=extra, license=args.license,
            datasets=args.datasets, tags=args.tags, training_data=args.training_data,
        )
        if args.dry_run:
            print(f"wrote {folder}: {len(files)} files ({', '.join(files)})")
            return 0
        print(f"uploading {len(files)} files to {args.repo_id}: {', '.join(files)}")
        url = push_folder(folder, args.repo_id, private=args.private, token=args.token, revision=args.revision,
                          commit_message=args.commit_message)
    print(f"pushed {args.model_dir} to {args.repo_id}: {url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (scripts/push_to_hub.py)."""
    return run(add_arguments(argparse.ArgumentParser(prog="push_to_hub")).parse_args(argv))
