"""HMERProcessor: images + captions -> model batch, decoding, save/load; remote-code import rules of the files."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from hmer_hf.image_processing_hmer import HMERImageProcessor
from hmer_hf.processing_hmer import HMERProcessor
from hmer_hf.tokenization_hmer import HMERTokenizer

CAPTIONS = ["x ^ { 2 }", "\\frac { a } { b }"]


def make_images() -> list[np.ndarray]:
    """Two white-on-black images of different sizes."""
    first = np.zeros((60, 90), np.uint8)
    first[20:40, 20:70] = 255
    second = np.zeros((40, 40), np.uint8)
    second[15:25, 15:25] = 255
    return [first, second]


@pytest.fixture(scope="module")
def processor() -> HMERProcessor:
    """The default processor (CROHME vocabulary, default image settings)."""
    return HMERProcessor()


def test_images_and_text_make_a_training_batch(processor):
    batch = processor(images=make_images(), text=CAPTIONS)
    assert set(batch) == {"pixel_values", "pixel_mask", "labels"}
    assert batch["pixel_values"].dtype == torch.float32 and batch["pixel_values"].shape[:2] == (2, 1)
    assert batch["pixel_mask"].dtype == torch.int64
    assert batch["pixel_mask"].shape == (2, *batch["pixel_values"].shape[2:])
    labels = batch["labels"]
    assert labels.dtype == torch.int64 and labels.shape == (2, 7)
    ids = [processor.tokenizer(c)["input_ids"] for c in CAPTIONS]
    assert labels[0, :5].tolist() == ids[0] and labels[0, 5:].tolist() == [-100, -100]
    assert labels[1].tolist() == ids[1]
    # No special tokens: the model adds <s> / </s> itself.
    assert not set(labels.flatten().tolist()) & {processor.tokenizer.bos_token_id, processor.tokenizer.eos_token_id}
    pixels = processor.image_processor(make_images())
    torch.testing.assert_close(batch["pixel_values"], pixels["pixel_values"])
    assert torch.equal(batch["pixel_mask"], pixels["pixel_mask"])


def test_images_only_and_text_only(processor):
    assert set(processor(images=make_images()[0])) == {"pixel_values", "pixel_mask"}
    only_text = processor(text="x ^ { 2 }", return_tensors="np")
    assert set(only_text) == {"labels"} and isinstance(only_text["labels"], np.ndarray)
    assert only_text["labels"].tolist() == [processor.tokenizer("x ^ { 2 }")["input_ids"]]
    with pytest.raises(ValueError, match="images"):
        processor()


def test_mismatched_or_empty_captions_are_errors(processor):
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        processor(images=make_images(), text=CAPTIONS[:1])
    with pytest.raises(ValueError, match="no tokens"):
        processor(images=make_images(), text=["x", "   "])


def test_keyword_arguments_are_routed(processor):
    batch = processor(images=make_images(), text=CAPTIONS, pad_to_multiple_of=32, max_height=16)
    assert batch["pixel_values"].shape[2] == 32 and batch["pixel_values"].shape[3] % 32 == 0
    truncated = processor(text=CAPTIONS, truncation=True, max_length=3)
    assert truncated["labels"].shape == (2, 3)


def test_decode_and_batch_decode(processor):
    labels = processor(text=CAPTIONS)["labels"]
    assert processor.batch_decode(labels, skip_special_tokens=True) == CAPTIONS
    assert processor.batch_decode(labels, skip_special_tokens=True, compact=True) == ["x^{2}", "\\frac{a}{b}"]
    generated = torch.tensor([1, *processor.tokenizer(CAPTIONS[1])["input_ids"], 2, 0])
    assert processor.decode(generated, skip_special_tokens=True) == CAPTIONS[1]


def test_model_input_names(processor):
    assert processor.model_input_names == ["pixel_values", "pixel_mask"]


def test_save_and_load_round_trip(tmp_path):
    tokenizer = HMERTokenizer.from_captions(["解 x = 1", "设 y = 2"])
    processor = HMERProcessor(HMERImageProcessor(max_height=100, crop_margin=4, pad_to_multiple_of=8), tokenizer)
    processor.save_pretrained(tmp_path)
    loaded = HMERProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded.image_processor, HMERImageProcessor) and isinstance(loaded.tokenizer, HMERTokenizer)
    assert loaded.image_processor.to_dict() == processor.image_processor.to_dict()
    assert loaded.tokenizer.get_vocab() == tokenizer.get_vocab()
    a = processor(images=make_images(), text=["解 x = 1", "设 y"], return_tensors="np")
    b = loaded(images=make_images(), text=["解 x = 1", "设 y"], return_tensors="np")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_batch_goes_straight_into_the_model(processor):
    from hmer_hf.configuration_hmer import HMERConfig
    from hmer_hf.modeling_hmer import HMERForConditionalGeneration

    config = HMERConfig(
        growth_rate=4, num_dense_layers=2, stem_channels=8, d_model=32, num_attention_heads=2, dim_feedforward=32,
        num_decoder_layers=1, arm_channels=4,
    )  # fmt: skip
    torch.manual_seed(0)
    model = HMERForConditionalGeneration(config).eval()
    batch = processor(images=make_images(), text=CAPTIONS)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)
        generated = model.generate(**{k: v for k, v in batch.items() if k.startswith("pixel")}, max_new_tokens=3)
    assert len(processor.batch_decode(generated, skip_special_tokens=True)) == 2
