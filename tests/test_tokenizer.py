"""HMERTokenizer: CROHME vocabulary, exact round trips, unknown symbols, compact LaTeX, custom vocabularies, I/O."""

from __future__ import annotations

import json

import pytest
import torch
from transformers.testing_utils import CaptureLogger

from hmer_hf import tokenization_hmer
from hmer_hf.configuration_hmer import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from hmer_hf.tokenization_hmer import CROHME_SYMBOLS, HMERTokenizer, split_latex, to_compact

EXAMPLES = [
    "x ^ { 2 } + y ^ { 2 } = 1",
    "\\frac { 1 } { 2 } \\times \\sqrt [ n ] { a + b }",
    "\\sum \\limits _ { i = 1 } ^ { n } \\alpha _ { i } x",
    "\\lim \\limits _ { x \\rightarrow \\infty } \\sin ( x ) \\geq - 1",
    "\\{ a , b \\} \\in A \\cdots \\Delta ' !",
]


@pytest.fixture(scope="module")
def tokenizer() -> HMERTokenizer:
    """The default (CROHME) tokenizer."""
    return HMERTokenizer()


def test_default_vocabulary_layout(tokenizer):
    assert len(CROHME_SYMBOLS) == 110 and len(set(CROHME_SYMBOLS)) == 110
    assert len(tokenizer) == tokenizer.vocab_size == 114
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (
        PAD_ID, BOS_ID, EOS_ID, UNK_ID,
    )
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["<pad>", "<s>", "</s>", "<unk>", CROHME_SYMBOLS[0]]


def test_symbols_match_crohme_dictionary(crohme_dir):
    lines = (crohme_dir / "dictionary.txt").read_text(encoding="utf-8").splitlines()
    symbols = [line.split("\t")[0] for line in lines if line.strip()]
    assert [s for s in symbols if s != "<eol>"] == CROHME_SYMBOLS


@pytest.mark.parametrize("caption", EXAMPLES)
def test_inline_round_trip_without_special_tokens(tokenizer, caption):
    ids = tokenizer(caption)["input_ids"]
    assert len(ids) == len(caption.split())  # no <s>/</s> added, one id per symbol
    assert UNK_ID not in ids and BOS_ID not in ids and EOS_ID not in ids
    assert tokenizer.decode(ids) == caption


def test_crohme_captions_round_trip(tokenizer, crohme_dir):
    lines = (crohme_dir / "2014" / "caption.txt").read_text(encoding="utf-8").splitlines()
    captions = [line.split("\t", 1)[1].strip() for line in lines if "\t" in line]
    assert len(captions) > 900
    with CaptureLogger(tokenization_hmer.logger) as captured:
        encoded = tokenizer(captions)["input_ids"]
    assert captured.out == ""  # every canonical symbol is known
    for caption, ids in zip(captions, encoded):
        assert UNK_ID not in ids
        assert tokenizer.decode(ids) == " ".join(caption.split())
        # The compact form is a faithful spelling too: splitting it gives back the same symbols.
        assert split_latex(to_compact(caption)) == caption.split()


def test_unknown_symbols_map_to_unk_and_are_named_in_a_warning(tokenizer):
    with CaptureLogger(tokenization_hmer.logger) as captured:
        ids = tokenizer("x + \\foo = 解")["input_ids"]
    assert ids == [tokenizer.convert_tokens_to_ids("x"), tokenizer.convert_tokens_to_ids("+"), UNK_ID,
                   tokenizer.convert_tokens_to_ids("="), UNK_ID]  # fmt: skip
    assert "\\foo" in captured.out and "解" in captured.out
    assert tokenizer.decode(ids) == "x + <unk> = <unk>"


def test_known_input_does_not_warn(tokenizer):
    with CaptureLogger(tokenization_hmer.logger) as captured:
        tokenizer("x ^ { 2 }")
    assert captured.out == ""


def test_batch_encoding_pads_with_pad_id(tokenizer):
    batch = tokenizer(["x ^ { 2 }", "y", "\\frac { a } { b }"], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == (3, 7) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].sum(dim=1).tolist() == [5, 1, 7]
    assert batch["input_ids"][1, 1:].tolist() == [PAD_ID] * 6
    assert tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True) == [
        "x ^ { 2 }", "y", "\\frac { a } { b }",
    ]  # fmt: skip


def test_decode_skips_specials_and_label_padding(tokenizer):
    ids = tokenizer("x ^ { 2 }")["input_ids"]
    generated = [BOS_ID, *ids, EOS_ID, PAD_ID, -100, -100]
    assert tokenizer.decode(generated, skip_special_tokens=True) == "x ^ { 2 }"
    assert tokenizer.decode(generated) == "<s> x ^ { 2 } </s> <pad>"  # -100 is never a symbol
    assert tokenizer.decode(torch.tensor([ids, ids]), skip_special_tokens=True) == ["x ^ { 2 }"] * 2


@pytest.mark.parametrize(
    ("spaced", "compact"),
    [
        ("x ^ { 2 }", "x^{2}"),
        ("\\frac { 1 } { 2 }", "\\frac{1}{2}"),
        ("\\alpha x", "\\alpha x"),  # `\alphax` would be another command
        ("\\sin ( x )", "\\sin(x)"),
        ("\\sum \\limits _ { i }", "\\sum\\limits_{i}"),
        ("\\{ x \\} y", "\\{x\\}y"),
        ("1 2 . 5", "12.5"),
        ("\\pi 解", "\\pi 解"),  # a Unicode letter would extend the command name in XeTeX
    ],
)
def test_compact_form(spaced, compact):
    assert to_compact(spaced) == compact
    tokenizer = HMERTokenizer.from_captions([spaced])
    assert tokenizer.decode(tokenizer(spaced)["input_ids"], compact=True) == compact
    assert split_latex(compact) == spaced.split()


def test_compact_input_is_split_when_out_of_vocabulary(tokenizer):
    assert tokenizer("x^{2}")["input_ids"] == tokenizer("x ^ { 2 }")["input_ids"]
    assert tokenizer("\\frac{a}{b}+\\alpha x")["input_ids"] == tokenizer("\\frac { a } { b } + \\alpha x")["input_ids"]
    assert tokenizer.tokenize("\\sqrt[3]{x}") == ["\\sqrt", "[", "3", "]", "{", "x", "}"]
    # A misspelt control word stays one unknown symbol rather than being read as letters.
    with CaptureLogger(tokenization_hmer.logger) as captured:
        assert tokenizer("\\alphax")["input_ids"] == [UNK_ID]
    assert "alphax" in captured.out


def test_split_compact_can_be_switched_off():
    tokenizer = HMERTokenizer(split_compact=False)
    with CaptureLogger(tokenization_hmer.logger):
        assert tokenizer("x^{2} y")["input_ids"] == [UNK_ID, tokenizer.convert_tokens_to_ids("y")]


HME_CAPTIONS = [
    "解 : x ^ { 2 } = 4",
    "设 a = \\frac { 1 } { 2 }",
    "解 得 x = 2",
    "\\because a > b",
]


def test_from_captions_builds_a_vocabulary_with_chinese():
    tokenizer = HMERTokenizer.from_captions(HME_CAPTIONS)
    vocab = tokenizer.get_vocab()
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert {"解", "设", "得", "\\because", "\\frac"} <= set(vocab)
    assert len(tokenizer) == 4 + len({s for c in HME_CAPTIONS for s in c.split()})
    # Most frequent first (2, =, { and } occur 3 times, x twice), ties by code point: reproducible ids.
    assert tokenizer.convert_ids_to_tokens([4, 5, 6, 7]) == ["2", "=", "{", "}"]
    for caption in HME_CAPTIONS:
        ids = tokenizer(caption)["input_ids"]
        assert UNK_ID not in ids and tokenizer.decode(ids) == caption
    with CaptureLogger(tokenization_hmer.logger) as captured:
        assert tokenizer("解 \\alpha")["input_ids"][1] == UNK_ID  # not in this vocabulary
    assert "\\alpha" in captured.out


def test_from_captions_min_frequency_and_vocab_size():
    rare = HMERTokenizer.from_captions(HME_CAPTIONS, min_frequency=2)
    assert set(rare.get_vocab()) == {"<pad>", "<s>", "</s>", "<unk>", "x", "=", "2", "解", "{", "}", "a"}
    capped = HMERTokenizer.from_captions(HME_CAPTIONS, vocab_size=7)
    assert list(capped.get_vocab()) == ["<pad>", "<s>", "</s>", "<unk>", "2", "=", "{"]
    with pytest.raises(ValueError, match="vocab_size"):
        HMERTokenizer.from_captions(HME_CAPTIONS, vocab_size=2)


def test_train_new_from_iterator_matches_from_captions(tokenizer):
    batches = [HME_CAPTIONS[:2], HME_CAPTIONS[2:]]  # the datasets convention: an iterator of batches
    trained = tokenizer.train_new_from_iterator(iter(batches))
    assert isinstance(trained, HMERTokenizer)
    assert trained.get_vocab() == HMERTokenizer.from_captions(HME_CAPTIONS).get_vocab()
    assert len(tokenizer.train_new_from_iterator(HME_CAPTIONS, vocab_size=10)) == 10


@pytest.mark.parametrize("custom", [False, True])
def test_save_and_load_round_trip(tmp_path, custom):
    tokenizer = HMERTokenizer.from_captions(HME_CAPTIONS, split_compact=False) if custom else HMERTokenizer()
    tokenizer.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert saved == tokenizer.get_vocab() and list(saved.values()) == list(range(len(saved)))
    if custom:
        assert "解" in (tmp_path / "vocab.json").read_text(encoding="utf-8")  # readable, not \u-escaped

    loaded = HMERTokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert loaded.split_compact is tokenizer.split_compact
    assert loaded.all_special_ids == tokenizer.all_special_ids
    text = HME_CAPTIONS[1] if custom else EXAMPLES[1]
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text


def test_vocabulary_validation():
    with pytest.raises(ValueError, match="whitespace"):
        HMERTokenizer(vocab=["<pad>", "<s>", "</s>", "<unk>", "a b"])
    with pytest.raises(ValueError, match="same id"):
        HMERTokenizer(vocab={"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "x": 3})
