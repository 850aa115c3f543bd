"""Word-level tokenizer for LaTeX math: one token per symbol of space-separated canonical LaTeX (`x ^ { 2 }`).

This file is shipped as Hugging Face remote code (copied flat next to the weights), so it only imports transformers,
the standard library and its sibling `configuration_hmer.py`.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable

from transformers.tokenization_python import PythonBackend
from transformers.utils import logging

from .configuration_hmer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

logger = logging.get_logger(__name__)

VOCAB_FILES_NAMES = {"vocab_file": "vocab.json"}

# The four special tokens, in id order: the model relies on PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3.
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
assert [PAD_ID, BOS_ID, EOS_ID, UNK_ID] == [0, 1, 2, 3]

# The 110 canonical CROHME symbols, in the order of CROHME's dictionary.txt (without `<eol>`). Embedded rather than
# read at run time: remote code has no access to the dataset.
CROHME_SYMBOLS = [
    '\\geq', '\\sqrt', '\\leq', '/', '\\infty', '(', ',', '0', '\\cdot', '8', '\\sigma', '<', '\\pm', '\\log',
    '\\pi', 'H', 'L', 'P', '\\limits', 'T', 'X', 'd', 'h', '\\}', 'l', 'p', 't', '\\tan', 'x', '|', '\\gamma', '\\{',
    "'", '+', '\\theta', '\\forall', '3', '7', '\\int', '\\sin', '\\prime', 'C', 'G', '\\ldots', 'S', '[', '_', 'c',
    'z', '\\cdots', 'g', 'k', 'o', 's', 'w', '\\cos', '{', '\\Delta', '\\neq', '\\in', '\\alpha', '\\times', '\\lim',
    '.', '2', '6', '\\lambda', '4', 'B', 'F', '\\exists', 'N', 'R', 'V', '^', 'b', 'f', 'j', 'n', 'r', 'v', '>',
    '\\frac', '\\rightarrow', '\\div', '!', '\\phi', ')', '-', '1', '5', '9', '=', 'A', 'E', '\\beta', 'I', 'M', 'Y',
    ']', '\\mu', 'a', 'e', 'i', '\\sum', 'm', 'q', 'u', 'y', '}',
]  # fmt: skip

# A LaTeX token: a control word (`\alpha`), a control symbol (`\{`, `\\`), or any other single character.
_LATEX_TOKEN = re.compile(r"\\[A-Za-z]+|\\.|\S", re.S)
_ENDS_WITH_CONTROL_WORD = re.compile(r"\\[A-Za-z]+$")

__all__ = ["HMERTokenizer", "CROHME_SYMBOLS", "SPECIAL_TOKENS", "split_latex", "to_compact"]


def split_latex(text: str) -> list[str]:
    """Split compact LaTeX (`x^{2}`, `\\frac{a}{b}`) into symbol tokens: control words, control symbols, characters."""
    return _LATEX_TOKEN.findall(text)


def to_compact(spaced: str) -> str:
    """Join space-separated tokens into compact LaTeX, keeping a space only after a control word before a letter."""
    out = ""
    for token in spaced.split():
        # `\alpha x` must not become `\alphax` (another control word); `\sin(` or `\frac{` need no space.
        if out and _ENDS_WITH_CONTROL_WORD.search(out) and token[0].isalpha():
            out += " "
        out += token
    return out


class HMERTokenizer(PythonBackend):
    r"""
    Word-level LaTeX tokenizer for handwritten math expression recognition.

    The vocabulary is `<pad>`, `<s>`, `</s>`, `<unk>` (ids 0-3) followed by the symbols; by default the 110 canonical
    CROHME symbols ([`CROHME_SYMBOLS`]). Text is split on whitespace, so canonical space-separated labels
    (`\frac { 1 } { 2 }`) round-trip exactly. A whitespace-separated word that is not in the vocabulary is further
    split as compact LaTeX (`x^{2}` -> `x ^ { 2 }`, see [`split_latex`]) when `split_compact=True` (the default);
    symbols still unknown after that map to `<unk>` with a warning naming them.

    No special tokens are added when encoding: the model builds `<s> y` and `y </s>` itself.

    Args:
        vocab_file (`str`, *optional*):
            A `vocab.json` mapping token -> id. Without it (and without `vocab`) the CROHME vocabulary is used.
        vocab (`dict[str, int]` or `list[str]`, *optional*):
            The vocabulary itself (a token -> id mapping, or a list of tokens in id order).
        split_compact (`bool`, *optional*, defaults to `True`):
            Split out-of-vocabulary words as compact LaTeX before mapping them to `<unk>`.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str | None = None,
        vocab: dict[str, int] | list[str] | None = None,
        pad_token: str = "<pad>",
        bos_token: str = "<s>",
        eos_token: str = "</s>",
        unk_token: str = "<unk>",
        split_compact: bool = True,
        **kwargs,
    ):
        if vocab_file is not None and vocab is not None:
            raise ValueError("Pass either `vocab_file` or `vocab`, not both.")
        if vocab_file is not None:
            with open(vocab_file, encoding="utf-8") as handle:
                vocab = json.load(handle)
        elif vocab is None:
            vocab = [str(pad_token), str(bos_token), str(eos_token), str(unk_token)] + CROHME_SYMBOLS
        if not isinstance(vocab, dict):
            vocab = {token: index for index, token in enumerate(vocab)}
        self.vocab: dict[str, int] = {str(token): int(index) for token, index in vocab.items()}
        if len(set(self.vocab.values())) != len(self.vocab):
            raise ValueError("The vocabulary maps several tokens to the same id.")
        self.ids_to_tokens: dict[int, str] = {index: token for token, index in self.vocab.items()}
        bad = [token for token in self.vocab if not token or token.split() != [token]]
        if bad:
            raise ValueError(f"Vocabulary tokens must be non-empty and contain no whitespace: {bad[:10]}")
        self.split_compact = split_compact

        expected = {str(pad_token): PAD_ID, str(bos_token): BOS_ID, str(eos_token): EOS_ID, str(unk_token): UNK_ID}
        misplaced = {t: self.vocab.get(t) for t, index in expected.items() if self.vocab.get(t) != index}
        if misplaced:
            # The model's config assumes these ids; a vocabulary built elsewhere may differ.
            logger.warning(
                f"Special tokens are not at the ids HMERConfig expects ({expected}): {misplaced}. "
                "Set pad/bos/eos/decoder_start token ids in the model config accordingly."
            )

        super().__init__(
            pad_token=pad_token,
            bos_token=bos_token,
            eos_token=eos_token,
            unk_token=unk_token,
            split_compact=split_compact,
            special_tokens_pattern="none",
            **kwargs,
        )

    # ---- vocabulary ----

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (without tokens added later with `add_tokens`)."""
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        """The full vocabulary (base + added tokens) as token -> id."""
        vocab = dict(self.vocab)
        vocab.update(self.added_tokens_encoder)
        return vocab

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        """Write `vocab.json` (token -> id, in id order) to `save_directory`."""
        if not os.path.isdir(save_directory):
            raise ValueError(f"Vocabulary path ({save_directory}) should be a directory")
        vocab_file = os.path.join(
            save_directory, (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"]
        )
        ordered = dict(sorted(self.vocab.items(), key=lambda item: item[1]))
        with open(vocab_file, "w", encoding="utf-8") as handle:
            # ensure_ascii=False keeps Chinese symbols (HME100K) readable in the file.
            handle.write(json.dumps(ordered, indent=2, ensure_ascii=False) + "\n")
        return (vocab_file,)

    # ---- building vocabularies from data ----

    @staticmethod
    def _count_symbols(captions: Iterable[str]) -> Counter:
        """Count whitespace-separated symbols over captions."""
        counts: Counter = Counter()
        for caption in captions:
            counts.update(caption.split())
        return counts

    @staticmethod
    def _vocab_from_counts(
        counts: Counter, specials: list[str], min_frequency: int = 1, vocab_size: int | None = None
    ) -> list[str]:
        """Specials first, then symbols by decreasing frequency (ties by code point, so the order is reproducible)."""
        symbols = [s for s, n in counts.items() if n >= min_frequency and s not in specials]
        symbols.sort(key=lambda s: (-counts[s], s))
        if vocab_size is not None:
            if vocab_size < len(specials):
                raise ValueError(f"vocab_size={vocab_size} is smaller than the {len(specials)} special tokens")
            symbols = symbols[: vocab_size - len(specials)]
        return specials + symbols

    @classmethod
    def from_captions(
        cls,
        captions: Iterable[str],
        min_frequency: int = 1,
        vocab_size: int | None = None,
        **kwargs,
    ) -> "HMERTokenizer":
        """Build a tokenizer whose vocabulary is the symbols of space-separated `captions` (e.g. HME100K labels)."""
        specials = [
            str(kwargs.get("pad_token", "<pad>")),
            str(kwargs.get("bos_token", "<s>")),
            str(kwargs.get("eos_token", "</s>")),
            str(kwargs.get("unk_token", "<unk>")),
        ]
        vocab = cls._vocab_from_counts(cls._count_symbols(captions), specials, min_frequency, vocab_size)
        return cls(vocab=vocab, **kwargs)

    def train_new_from_iterator(
        self, text_iterator: Iterable[str], vocab_size: int | None = None, min_frequency: int = 1, **kwargs
    ) -> "HMERTokenizer":
        """A tokenizer with these settings and a vocabulary learned from `text_iterator` (space-separated LaTeX)."""
        init_kwargs = {
            "pad_token": str(self.pad_token),
            "bos_token": str(self.bos_token),
            "eos_token": str(self.eos_token),
            "unk_token": str(self.unk_token),
            "split_compact": self.split_compact,
            "model_max_length": self.model_max_length,
        }
        init_kwargs.update(kwargs)

        def flatten(iterator):
            # The datasets convention: an iterator may yield batches (lists) of texts.
            for item in iterator:
                if isinstance(item, str):
                    yield item
                else:
                    yield from item

        return type(self).from_captions(
            flatten(text_iterator), min_frequency=min_frequency, vocab_size=vocab_size, **init_kwargs
        )

    # ---- encoding ----

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        """Split on whitespace; out-of-vocabulary words are split as compact LaTeX when `split_compact` is on."""
        tokens = []
        for word in text.split():
            if self.split_compact and word not in self.vocab and word not in self._added_tokens_encoder:
                tokens.extend(split_latex(word))
            else:
                tokens.append(word)
        return tokens

    def _convert_token_to_id(self, token: str) -> int:
        """Map a token to its id, or to the `<unk>` id."""
        return self.vocab.get(token, self.vocab.get(str(self.unk_token)))

    def _convert_id_to_token(self, index: int) -> str:
        """Map an id to its token (`<unk>` for an id outside the vocabulary)."""
        return self.ids_to_tokens.get(index, str(self.unk_token))

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        """Map tokens to ids; unknown symbols become `<unk>` and are named in a warning (never dropped silently)."""
        ids = super().convert_tokens_to_ids(tokens)
        token_list = [tokens] if isinstance(tokens, str) else list(tokens)
        id_list = [ids] if isinstance(ids, int) else ids
        unk = str(self.unk_token)
        # Not `self.unk_token_id`: that property itself calls convert_tokens_to_ids.
        unk_id = self._convert_token_to_id_with_added_voc(unk)
        unknown = sorted({t for t, i in zip(token_list, id_list) if i == unk_id and t != unk})
        if unknown:
            logger.warning(
                f"HMERTokenizer: {len(unknown)} symbol(s) not in the vocabulary map to {self.unk_token}: "
                + " ".join(unknown)
            )
        return ids

    # ---- decoding ----

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Join tokens with single spaces (the canonical form)."""
        return " ".join(tokens)

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        compact: bool = False,
        **kwargs,
    ) -> str:
        """Decode ids to the canonical spaced form (`x ^ { 2 }`), or compact LaTeX (`x^{2}`) with `compact=True`."""
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        # Negative ids are label padding (-100), never symbols.
        token_ids = [int(i) for i in token_ids if int(i) >= 0]
        text = super()._decode(
            token_ids,
            skip_special_tokens=skip_special_tokens,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **kwargs,
        )
        return to_compact(text) if compact else text
