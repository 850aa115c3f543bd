"""The `image-to-latex` pipeline: images (paths, PIL, arrays, tensors) -> LaTeX strings with scores."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import Pipeline


class ImageToLatexPipeline(Pipeline):
    """Recognise handwritten mathematical expressions.

    ```python
    pipe = pipeline("image-to-latex", model=path)
    pipe(["a.png", pil_image], batch_size=2, num_beams=10)
    # [{"generated_text": "x ^ { 2 }", "score": -0.12}, ...]
    ```

    Each result is a dict with `generated_text` (canonical space-separated LaTeX tokens) and `score` (the
    length-normalised log-probability of the sequence; with bidirectional rescoring, of both directions).
    Pass `num_return_sequences=k` to get the k best as a list of such dicts per image, and `compact=True` for
    `x^{2}` instead of `x ^ { 2 }`. Any `generate()` parameter (`num_beams`, `max_new_tokens`,
    `bidirectional_rescoring`, ...) is accepted at construction or per call.
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = True
    _pipeline_calls_generate = True

    def _sanitize_parameters(
        self,
        compact: bool | None = None,
        bidirectional_rescoring: bool | None = None,
        syntax_constraints: bool | None = None,
        **kwargs,
    ):
        forward_params = self._prepare_generate_kwargs(kwargs) if hasattr(self, "_generate_kwargs") else dict(kwargs)
        if bidirectional_rescoring is not None:
            forward_params["bidirectional_rescoring"] = bidirectional_rescoring
        if syntax_constraints is not None:
            forward_params["syntax_constraints"] = syntax_constraints
        postprocess_params = {}
        if compact is not None:
            postprocess_params["compact"] = compact
        if "num_return_sequences" in forward_params:
            postprocess_params["num_return_sequences"] = forward_params["num_return_sequences"]
        return {}, forward_params, postprocess_params

    def __call__(self, images: Any, **kwargs):
        """Recognise one image (returns a dict) or a list of images (returns a list of dicts)."""
        return super().__call__(images, **kwargs)

    def preprocess(self, image: Any) -> dict:
        # Images are normalised one by one (crop, polarity, scale) and padded together in `_forward`, because the
        # default pipeline collation cannot pad 2-D images of different sizes.
        return {"image": self.image_processor.process_image(image)}

    def _forward(self, model_inputs: dict, **generate_kwargs) -> dict:
        images = model_inputs["image"]
        if isinstance(images, np.ndarray):
            images = [images]
        pixel_values, pixel_mask = self.image_processor.pad(images)
        pixel_values = torch.from_numpy(pixel_values).to(self.model.device, self.model.dtype)
        pixel_mask = torch.from_numpy(pixel_mask).to(self.model.device)
        generate_kwargs = {**generate_kwargs, "return_dict_in_generate": True, "output_scores": True}
        out = self.model.generate(pixel_values, pixel_mask=pixel_mask, **generate_kwargs)
        if getattr(out, "sequences_scores", None) is not None:
            scores = out.sequences_scores
        else:
            scores = self._greedy_scores(out)
        batch = len(images)
        # Keep a leading batch dimension so the pipeline's loader can split a batch back into items.
        return {
            "sequences": out.sequences.view(batch, -1, out.sequences.shape[-1]).cpu(),
            "scores": scores.view(batch, -1).float().cpu(),
        }

    def _greedy_scores(self, out) -> torch.Tensor:
        """Length-normalised log-probability of greedy/sampled sequences, from the per-step scores."""
        transition = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        generated = out.sequences[:, 1:]
        keep = generated != self.model.config.pad_token_id
        # A pad id equal to nothing generated is skipped; the end token counts as one step.
        transition = transition.masked_fill(~keep, 0.0)
        return transition.sum(-1) / keep.sum(-1).clamp(min=1)

    def postprocess(self, model_outputs: dict, compact: bool = False, num_return_sequences: int | None = None):
        sequences, scores = model_outputs["sequences"], model_outputs["scores"]
        if sequences.dim() == 3:  # a batch of one that the loader did not unbatch
            sequences, scores = sequences[0], scores[0]
        texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=True, compact=compact)
        results = [{"generated_text": text, "score": float(score)} for text, score in zip(texts, scores)]
        if num_return_sequences and num_return_sequences > 1:
            return results
        return results[0]
