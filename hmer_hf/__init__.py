"""hmer-hf: handwritten mathematical expression recognition (image -> LaTeX) as a transformers model family.

Importing the package registers the model with the transformers Auto classes (config, model, image processor,
tokenizer, processor) and the `image-to-latex` pipeline task, and marks the classes for remote-code export so that
`save_pretrained` writes `auto_map` and the model files next to the weights.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_hmer import PRESETS, HMERConfig
from .image_processing_hmer import HMERImageProcessor
from .modeling_hmer import HMERForConditionalGeneration, HMERPreTrainedModel
from .pipeline_hmer import ImageToLatexPipeline
from .processing_hmer import HMERProcessor
from .tokenization_hmer import CROHME_SYMBOLS, HMERTokenizer, to_compact

__version__ = "0.1.0"

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
# The trained model shipped inside the package (a local folder; see README "Results").
DEFAULT_MODEL = str(PRETRAINED_DIR / "hmer-comer-crohme")

TASK = "image-to-latex"


def default_model_available() -> bool:
    """Whether the shipped default model is present in this installation."""
    return (Path(DEFAULT_MODEL) / "config.json").is_file()


def _register() -> None:
    """Register the family with the Auto classes, remote-code export and the pipeline registry (idempotent)."""
    AutoConfig.register(HMERConfig.model_type, HMERConfig, exist_ok=True)
    AutoModel.register(HMERConfig, HMERForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(HMERConfig, HMERForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(HMERConfig, image_processor_classes={"pil": HMERImageProcessor}, exist_ok=True)
    AutoTokenizer.register(HMERConfig, tokenizer_class=HMERTokenizer, exist_ok=True)
    AutoProcessor.register(HMERConfig, HMERProcessor, exist_ok=True)

    HMERConfig.register_for_auto_class()
    HMERForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    HMERImageProcessor.register_for_auto_class("AutoImageProcessor")
    HMERTokenizer.register_for_auto_class("AutoTokenizer")
    HMERProcessor.register_for_auto_class("AutoProcessor")

    default = {"model": (DEFAULT_MODEL, None)} if default_model_available() else None
    if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            TASK,
            pipeline_class=ImageToLatexPipeline,
            pt_model=AutoModelForImageTextToText,
            default=default,
            type="multimodal",
        )


_register()

__all__ = [
    "CROHME_SYMBOLS",
    "DEFAULT_MODEL",
    "PRESETS",
    "HMERConfig",
    "HMERForConditionalGeneration",
    "HMERImageProcessor",
    "HMERPreTrainedModel",
    "HMERProcessor",
    "HMERTokenizer",
    "ImageToLatexPipeline",
    "default_model_available",
    "to_compact",
]
