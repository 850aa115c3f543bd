"""hmer-hf: handwritten mathematical expression recognition as a transformers model family."""
