"""The stroke renderer of the data layer: `hmer_hf/rendering_hmer.py`, which lives beside the model files so that the
image processor (exported as remote code) renders strokes exactly as training data was rendered."""

from ..rendering_hmer import MARGIN, REFERENCE_HEIGHT, STROKE_WIDTH, as_traces, ink_scale, render_strokes

__all__ = ["render_strokes", "ink_scale", "as_traces", "REFERENCE_HEIGHT", "STROKE_WIDTH", "MARGIN"]
