"""Export a prepared dataset as a Hub dataset repository: Parquet shards + dataset card (`hmer-hf prepare --push`).

The folder is laid out the way `datasets`' `push_to_hub` lays out a repository, so `load_dataset(REPO_ID)` (or
`load_dataset(FOLDER)` on the written folder) reads it back with the same features:

    data/<split>-00000-of-0000N.parquet   one or more shards per split (at most ~500 MB of Arrow data each),
                                          images embedded as bytes (no paths), HF features in the schema metadata
    README.md                             dataset card: YAML `configs` (data files per split), `dataset_info`
                                          (features, splits with sizes), licence, task, tags; then the body:
                                          fields, splits, source, licence and citations

`export_dataset` writes the folder (no network: `--dry-run --output DIR`); `push_dataset` writes it to a temporary
folder (or `output_dir`) and uploads it with `huggingface_hub` (`hmer_hf.hub.push_folder`: one clear error line when
the Hub cannot be reached or refuses the credentials).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import datasets

from .builders import HMER_FEATURES
from .report import SkipReport

DATA_DIR = "data"
CARD_FILE = "README.md"
CROHME_LICENSE = "cc-by-nc-sa-3.0"
TAGS = ("hmer", "handwritten-math", "handwriting-recognition", "math", "latex", "ocr", "image-to-latex")

CROHME_CITATION = """\
@inproceedings{mouchere2014icfhr,
  title={ICFHR 2014 Competition on Recognition of On-line Handwritten Mathematical Expressions (CROHME 2014)},
  author={Mouch{\\`e}re, Harold and Viard-Gaudin, Christian and Zanibbi, Richard and Garain, Utpal},
  booktitle={ICFHR},
  year={2014}
}"""

# What the CROHME splits built by `hmer_hf.data.build_crohme` are.
CROHME_SPLITS = {
    "train": "CROHME training set (the 2014/2016 training InkML, online ink), rendered to offline images by "
             "`hmer_hf.data.render_strokes` (white ink on black, the scale of the canonical CROHME offline images), "
             "with the canonical captions of `train_caption.txt`",
    "test": "CROHME {year}test set: the canonical offline images (8-bit, white ink on black) and captions on which "
            "published ExpRates are computed",
}

FEATURE_DESCRIPTIONS = {
    "image": "the expression image as stored (rendered ink: white on black; no model preprocessing)",
    "latex": "the label: canonical space-separated LaTeX tokens, e.g. `\\frac { 1 } { 2 }`",
    "id": "sample name (InkML file stem / caption key)",
    "height": "image height in pixels",
    "width": "image width in pixels",
}


def _as_dict(dataset: datasets.Dataset | datasets.DatasetDict) -> datasets.DatasetDict:
    """A DatasetDict: a lone Dataset becomes the split "train"; checks the hmer columns are present."""
    splits = dataset if isinstance(dataset, datasets.DatasetDict) else datasets.DatasetDict({"train": dataset})
    for name, split in splits.items():
        missing = [c for c in HMER_FEATURES if c not in split.column_names]
        if missing:
            raise ValueError(f"split {name!r} lacks the columns {missing}; expected a dataset built by hmer_hf.data "
                             f"({list(HMER_FEATURES)})")
    return splits


def _num_shards(split: datasets.Dataset, max_shard_size: int | str) -> tuple[int, int]:
    """(estimated Arrow bytes with images embedded, number of shards): the rule of `Dataset.push_to_hub`."""
    from datasets.utils.py_utils import convert_file_size_to_int

    estimate = getattr(split, "_estimate_nbytes", None)  # push_to_hub's estimate (counts external image files)
    nbytes = estimate() if estimate is not None else split.data.nbytes
    num_shards = int(nbytes / convert_file_size_to_int(max_shard_size)) + 1
    return nbytes, max(1, min(num_shards, split.num_rows))


def _write_shards(split: datasets.Dataset, name: str, output_dir: Path, num_shards: int) -> list[str]:
    """Write `data/<name>-XXXXX-of-NNNNN.parquet` shards with images embedded; returns their relative paths."""
    from datasets.arrow_writer import get_writer_batch_size_from_features
    from datasets.table import embed_table_storage

    batch_size = get_writer_batch_size_from_features(split.features) or datasets.config.DEFAULT_MAX_BATCH_SIZE
    paths = []
    for index in range(num_shards):
        shard = split.shard(num_shards=num_shards, index=index, contiguous=True)
        # Same as push_to_hub: image paths become the files' bytes, so the Parquet file stands alone.
        shard = shard.with_format("arrow").map(embed_table_storage, batched=True, batch_size=batch_size,
                                               keep_in_memory=True).with_format(None)
        relative = f"{DATA_DIR}/{name}-{index:05d}-of-{num_shards:05d}.parquet"
        (output_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        shard.to_parquet(str(output_dir / relative), batch_size=batch_size)
        paths.append(relative)
    return paths


def size_category(num_rows: int) -> str:
    """The Hub's `size_categories` value for a dataset of `num_rows` rows."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if num_rows < limit:
            return label
    return "1M<n<10M"


def default_license(layout: str | None) -> str:
    """CROHME's licence for CROHME data; otherwise `unknown` (pass the licence of your data)."""
    return CROHME_LICENSE if layout == "crohme" else "unknown"


def dataset_card(
    splits: datasets.DatasetDict,
    split_infos: list[datasets.SplitInfo],
    download_size: int,
    *,
    repo_id: str | None = None,
    source: str | None = None,
    layout: str | None = None,
    license: str | None = None,
    pretty_name: str | None = None,
    skipped: SkipReport | None = None,
) -> str:
    """The README.md of an exported dataset: YAML metadata in push_to_hub's format, then the description."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    license = license or default_license(layout)
    crohme = layout == "crohme"
    pretty_name = pretty_name or ("CROHME (hmer-hf prepared)" if crohme else (repo_id or "HMER dataset"))
    total = sum(s.num_examples for s in split_infos)
    card_data = DatasetCardData(
        license=license, task_categories=["image-to-text"], tags=list(TAGS) + (["crohme"] if crohme else []),
        pretty_name=pretty_name, size_categories=[size_category(total)],
    )
    info = DatasetInfo(features=next(iter(splits.values())).features, splits=datasets.SplitDict(),
                       download_size=download_size, dataset_size=sum(s.num_bytes for s in split_infos))
    for split_info in split_infos:
        info.splits.add(split_info)
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    MetadataConfigs({"default": {"data_files": [{"split": s.name, "path": f"{DATA_DIR}/{s.name}-*"}
                                                for s in split_infos]}}).to_dataset_card_data(card_data)

    ref = repo_id or "PATH_OR_REPO_ID"
    fields = "\n".join(
        f"| `{name}` | {feature.dtype if isinstance(feature, datasets.Value) else type(feature).__name__.lower()} | "
        f"{FEATURE_DESCRIPTIONS.get(name, '')} |" for name, feature in info.features.items())
    split_rows = ["| split | rows |" + (" what |" if crohme else ""), "|---|---|" + ("---|" if crohme else "")]
    for s in split_infos:
        what = ""
        if crohme:
            what = " " + (CROHME_SPLITS["train"] if s.name == "train" else CROHME_SPLITS["test"].format(
                year=s.name.removeprefix("test_") + " " if s.name.startswith("test_") else "")) + " |"
        split_rows.append(f"| `{s.name}` | {s.num_examples:,} |{what}")
    source_text = (f"Built with `hmer-hf prepare` from `{Path(source).name if source else 'a local folder'}`"
                   + (f" (layout `{layout}`)" if layout else "") + ".")
    if skipped:
        source_text += f" Left out while building: {skipped.summary()}."
    if crohme:
        licence_text = ("CC BY-NC-SA 3.0, the licence under which the CROHME organisers release the data "
                        "(non-commercial, share-alike, attribution). Models trained on it inherit the licence.")
        citation = (
            "Cite the CROHME competitions when you use this data:\n\n```bibtex\n" + CROHME_CITATION + "\n```\n\n"
            "and, for splits of later editions, CROHME 2016 (Mouchère et al., ICFHR 2016) or CROHME 2019 (Mahdavi "
            "et al., ICDAR 2019). The offline test images and the caption convention are those of WAP (Zhang et "
            "al., Pattern Recognition 2017), BTTR (Zhao et al., ICDAR 2021) and CoMER (Zhao & Gao, ECCV 2022)."
        )
    else:
        licence_text = (f"`{license}`" + (": the licence of the source data was not given; pass it with "
                                          "`hmer-hf prepare ... --license ID`." if license == "unknown" else "."))
        citation = "Cite the source of the data (see its documentation)."

    body = f"""
# {pretty_name}

Handwritten mathematical expressions with their LaTeX, for image → LaTeX recognition (e.g. with the
[hmer-hf](https://pypi.org/project/hmer-hf/) models).

## Fields

| field | type | description |
|---|---|---|
{fields}

## Splits

{chr(10).join(split_rows)}

## Usage

```python
from datasets import load_dataset

ds = load_dataset("{ref}")
ds["{split_infos[0].name}"][0]   # {{'image': <PIL.Image>, 'latex': '...', 'id': '...', 'height': ..., 'width': ...}}
```

To train or evaluate with hmer-hf, save it once (`ds.save_to_disk("prepared/NAME")`) and pass that folder as
`data.train` / `--data`.

## Source

{source_text}

## Licence

{licence_text}

## Citation

{citation}
"""
    return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n{body}").content


def export_dataset(
    dataset: datasets.Dataset | datasets.DatasetDict,
    output_dir: str | Path,
    *,
    repo_id: str | None = None,
    source: str | Path | None = None,
    layout: str | None = None,
    license: str | None = None,
    pretty_name: str | None = None,
    skipped: SkipReport | None = None,
    max_shard_size: int | str = "500MB",
    progress: bool = True,
) -> list[str]:
    """Write `dataset` into `output_dir` (new or empty) as a Hub dataset repository (see the module docstring).

    `source` and `layout` describe where it came from (for the card; a CROHME layout selects CROHME's licence and
    citation); `license` overrides the licence (default: [`default_license`]); `progress=False` hides the
    `datasets` progress bars. Returns the relative paths written.
    """
    from ..hub import prepare_output_dir

    output_dir = Path(output_dir)
    splits = _as_dict(dataset)
    prepare_output_dir(output_dir)
    written: list[str] = []
    split_infos = []
    bars_were_on = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        for name, split in splits.items():
            nbytes, num_shards = _num_shards(split, max_shard_size)
            written += _write_shards(split, name, output_dir, num_shards)
            split_infos.append(datasets.SplitInfo(name=name, num_bytes=nbytes, num_examples=split.num_rows))
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    download_size = sum((output_dir / p).stat().st_size for p in written)
    card = dataset_card(splits, split_infos, download_size, repo_id=repo_id, source=str(source) if source else None,
                        layout=layout, license=license, pretty_name=pretty_name, skipped=skipped)
    (output_dir / CARD_FILE).write_text(card, encoding="utf-8")
    return [*written, CARD_FILE]


def push_dataset(
    dataset: datasets.Dataset | datasets.DatasetDict,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    output_dir: str | Path | None = None,
    commit_message: str | None = None,
    **export_kwargs: Any,
) -> str:
    """Export `dataset` (into `output_dir`, else a temporary folder) and upload it as dataset repository `repo_id`;
    returns the commit URL. Raises `hmer_hf.hub.HubError` with a clear message when the push fails."""
    from ..hub import push_folder

    with tempfile.TemporaryDirectory(prefix="hmer-hf-dataset-") as tmp:
        folder = Path(output_dir) if output_dir is not None else Path(tmp) / "export"
        export_dataset(dataset, folder, repo_id=repo_id, **export_kwargs)
        return push_folder(folder, repo_id, repo_type="dataset", private=private, token=token,
                           commit_message=commit_message or "Upload dataset with hmer-hf")
