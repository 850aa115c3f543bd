"""Data layer: reading ink and images, building `datasets` datasets, augmentation and size-aware batching.

Nothing here imports the model: datasets store images as they are (rendered ink is white on black like the CROHME
images; photos stay photos), and the image processor does all model-side preprocessing. docs/data.md has the guide.
"""

from .augment import (
    AUGMENTATION_PRESETS,
    ElasticDistortion,
    HMERAugmentation,
    RandomAffine,
    RandomScale,
    RandomScalePad,
    StrokeWidthJitter,
    build_augmentation,
)
from .builders import (
    HMER_FEATURES,
    LAYOUTS,
    BuildResult,
    ImageFileError,
    build_caption_dataset,
    build_caption_splits,
    build_crohme,
    build_hme100k_dataset,
    build_imagefolder_dataset,
    build_inkml_dataset,
    caption_symbol_counts,
    detect_layout,
    iter_captions,
    load_hmer_dataset,
    prepare_crohme,
    prepare_dataset,
    read_caption_file,
    read_metadata_file,
    read_skip_report,
)
from .inkml import InkML, InkMLError, iter_inkml_dir, list_inkml_files, read_inkml, read_inkml_dir
from .latex import CANONICAL_SYMBOLS, LatexParseError, normalize_latex, tokenize_latex
from .render import ink_scale, render_strokes
from .report import SkipReport
from .sampler import PixelBudgetBatchSampler, dataset_sizes, pack_batches, padding_fraction

__all__ = [
    # reading and rendering ink, normalising labels (inkml.py, render.py, latex.py)
    "InkML", "InkMLError", "read_inkml", "read_inkml_dir", "iter_inkml_dir", "list_inkml_files",
    "render_strokes", "ink_scale",
    "normalize_latex", "tokenize_latex", "LatexParseError", "CANONICAL_SYMBOLS",
    "SkipReport",
    # dataset builders (builders.py)
    "HMER_FEATURES", "LAYOUTS", "BuildResult", "ImageFileError",
    "load_hmer_dataset", "detect_layout", "prepare_dataset", "prepare_crohme", "build_crohme",
    "build_inkml_dataset", "build_caption_dataset", "build_caption_splits", "build_hme100k_dataset",
    "build_imagefolder_dataset", "read_caption_file", "read_metadata_file", "read_skip_report",
    "iter_captions", "caption_symbol_counts",
    # augmentation (augment.py)
    "HMERAugmentation", "build_augmentation", "AUGMENTATION_PRESETS",
    "RandomScale", "RandomScalePad", "RandomAffine", "StrokeWidthJitter", "ElasticDistortion",
    # batching (sampler.py)
    "PixelBudgetBatchSampler", "dataset_sizes", "pack_batches", "padding_fraction",
]
