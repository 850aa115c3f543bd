"""Processor pairing the HMER image processor and LaTeX tokenizer: images (+ captions) -> a batch for the model.

This file is shipped as Hugging Face remote code (copied flat next to the weights), so it only imports transformers,
numpy and its sibling model files.
"""

from __future__ import annotations

import numpy as np
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import TensorType

from .image_processing_hmer import HMERImageProcessor
from .tokenization_hmer import HMERTokenizer

__all__ = ["HMERProcessor"]

# Label positions that carry no token: ignored by the cross-entropy loss (the PyTorch / transformers convention).
IGNORE_INDEX = -100


class HMERProcessor(ProcessorMixin):
    r"""
    Wraps an [`HMERImageProcessor`] and an [`HMERTokenizer`].

    `processor(images, text)` returns `pixel_values`, `pixel_mask` and, with captions, `labels` (each caption's token
    ids without special tokens, right-padded with -100): the dict goes straight into `model(**batch)`, and its pixel
    keys into `model.generate`. `decode`/`batch_decode` forward to the tokenizer (`compact=True` gives `x^{2}`).

    Args:
        image_processor ([`HMERImageProcessor`], *optional*): defaults to a default-configured one.
        tokenizer ([`HMERTokenizer`], *optional*): defaults to the CROHME vocabulary.
    """

    def __init__(
        self, image_processor: HMERImageProcessor | None = None, tokenizer: HMERTokenizer | None = None, **kwargs
    ):
        if image_processor is None:
            image_processor = HMERImageProcessor()
        if tokenizer is None:
            tokenizer = HMERTokenizer()
        super().__init__(image_processor, tokenizer, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        """Inputs of the model's forward that this processor produces (labels are targets, not inputs)."""
        return list(self.image_processor.model_input_names)

    def __call__(
        self,
        images=None,
        text: str | list[str] | None = None,
        return_tensors: str | TensorType | None = "pt",
        strokes=None,
        **kwargs,
    ) -> BatchFeature:
        """
        Build a batch: `pixel_values` `[B, 1, H, W]` and `pixel_mask` `[B, H, W]` from `images` (or from online ink:
        `strokes`, one entry per expression, rendered like the training ink), and `labels` `[B, L]` (int64, -100
        padded) from `text` (space-separated LaTeX, one caption per image).

        Keyword arguments naming an image-processor setting (`max_height`, `pad_to_multiple_of`, ...) go to the image
        processor for this call; the others (e.g. `truncation`, `max_length`) go to the tokenizer.
        """
        if images is None and strokes is None and text is None:
            raise ValueError("HMERProcessor needs `images` (or `strokes`), `text`, or both.")
        image_settings = set(self.image_processor.valid_kwargs.__annotations__)
        image_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in image_settings and k != "return_tensors"}

        data = {}
        if images is not None or strokes is not None:
            pixels = self.image_processor(images, strokes=strokes, return_tensors=None, **image_kwargs)
            data.update(pixels)
        if text is not None:
            captions = [text] if isinstance(text, str) else list(text)
            if "pixel_values" in data and len(captions) != len(data["pixel_values"]):
                raise ValueError(f"Got {len(data['pixel_values'])} images but {len(captions)} captions.")
            data["labels"] = self._labels(captions, **kwargs)
        elif kwargs:
            raise TypeError(f"Unexpected keyword argument(s) without text: {sorted(kwargs)}")
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _labels(self, captions: list[str], **tokenizer_kwargs) -> np.ndarray:
        """Token ids of each caption (no special tokens), right-padded with -100 into an int64 `[B, L]` array."""
        encoded = self.tokenizer(captions, add_special_tokens=False, padding=False, **tokenizer_kwargs)["input_ids"]
        empty = [i for i, ids in enumerate(encoded) if not ids]
        if empty:
            raise ValueError(f"Caption(s) {empty} contain no tokens.")
        labels = np.full((len(encoded), max(len(ids) for ids in encoded)), IGNORE_INDEX, dtype=np.int64)
        for i, ids in enumerate(encoded):
            labels[i, : len(ids)] = ids
        return labels

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        """Load the two components with their own classes, so no Auto-class registration is needed."""
        # v5 would resolve them through AutoImageProcessor/AutoTokenizer, which only know registered classes.
        return [
            HMERImageProcessor.from_pretrained(pretrained_model_name_or_path, **kwargs),
            HMERTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs),
        ]
