"""Syntax-constrained decoding: the grammar admits every canonical label, bans what it should, and holds in
generate()."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from hmer_hf import HMERConfig, HMERForConditionalGeneration, HMERTokenizer
from hmer_hf.configuration_hmer import DEFAULT_SYNTAX_TOKEN_IDS, SYNTAX_SYMBOLS
from hmer_hf.modeling_hmer import LatexSyntaxLogitsProcessor

from .conftest import TINY_CONFIG

TOK = HMERTokenizer()
BOS, EOS = TOK.bos_token_id, TOK.eos_token_id


def processor() -> LatexSyntaxLogitsProcessor:
    return LatexSyntaxLogitsProcessor(HMERConfig.syntax_ids_from_vocab(TOK.get_vocab()), BOS, EOS)


def ids(latex: str) -> list[int]:
    return TOK.convert_tokens_to_ids(latex.split())


def allows(proc: LatexSyntaxLogitsProcessor, prefix: list[int], token: int, r2l: bool) -> bool:
    allowed, banned = proc.allowed_and_banned(prefix, r2l)
    return token not in banned and (allowed is None or token in allowed)


def first_violation(proc, tokens: list[int], r2l: bool, ended: bool = True) -> int | None:
    """Index of the first token (len(tokens) = the end token) the grammar bans, or None."""
    seq = tokens + ([BOS if r2l else EOS] if ended else [])
    for i, tok in enumerate(seq):
        if not allows(proc, seq[:i], tok, r2l):
            return i
    return None


def test_default_ids_are_the_crohme_vocabulary():
    assert DEFAULT_SYNTAX_TOKEN_IDS == {s: TOK.get_vocab()[s] for s in SYNTAX_SYMBOLS}
    assert HMERConfig().syntax_token_ids == DEFAULT_SYNTAX_TOKEN_IDS
    assert HMERConfig(vocab_size=40).syntax_token_ids == {}  # another vocabulary must bring its own ids


def test_every_canonical_label_is_admitted_in_both_directions(crohme_dir):
    proc = processor()
    n = 0
    for path in (crohme_dir / "train_caption.txt", crohme_dir / "2014" / "caption.txt"):
        for line in path.read_text(encoding="utf-8").splitlines():
            name, latex = line.split("\t", 1)
            tokens = ids(latex)
            assert first_violation(proc, tokens, r2l=False) is None, (name, latex)
            assert first_violation(proc, tokens[::-1], r2l=True) is None, (name, latex)
            n += 1
    assert n == 8835 + 986


@pytest.mark.parametrize(
    "prefix, token, r2l",
    [
        ("x ^", "2", False),  # a script needs its group
        ("\\frac", "x", False),
        ("\\frac { 1 }", "+", False),  # a fraction needs its denominator
        ("\\sqrt", "x", False),
        ("x", "{", False),  # no bare groups
        ("x + 1", "}", False),  # nothing to close
        ("x ^ {", "}", False),  # no empty group
        ("x ^ { 2", "</s>", False),  # an open group cannot end
        ("", "}", False),
        # right to left: the sequence reversed, "}" opens and "{" closes
        ("} 2 {", "x", True),  # a closed group must be preceded by its owner
        ("} 2 { } 1 {", "^", True),  # a closed numerator is preceded by \frac only
        ("} 2 {", "\\frac", True),  # a lone group is not a fraction
        ("x", "^", True),  # a script needs a group after it
        ("x", "{", True),
        ("} x", "<s>", True),
        ("} 2 {", "<s>", True),  # an expression cannot start with "{"
    ],
)
def test_bans(prefix, token, r2l):
    proc = processor()
    assert not allows(proc, ids(prefix), TOK.convert_tokens_to_ids(token), r2l)


@pytest.mark.parametrize(
    "prefix, token, r2l",
    [
        ("x ^", "{", False),
        ("\\frac { 1 }", "{", False),
        ("\\sqrt", "[", False),
        ("\\sqrt [ 3 ]", "{", False),
        ("x ^ { 2", "}", False),
        ("x ^ { 2 }", "</s>", False),
        ("} 2 { } 1 {", "\\frac", True),
        ("} 2 {", "^", True),
        ("} 2 {", "}", True),  # the group was a denominator
        ("} x { ] 3 [", "\\sqrt", True),
        ("} x { ^ 2", "<s>", True),
    ],
)
def test_allows(prefix, token, r2l):
    proc = processor()
    assert allows(proc, ids(prefix), TOK.convert_tokens_to_ids(token), r2l)


def test_logits_are_masked_per_row_and_direction():
    proc = processor()
    input_ids = torch.tensor(
        [
            [BOS] + ids("a + b + c ^"),  # only "{"
            [EOS] + ids("} 2 { } 1 {"),  # only \frac
            [BOS] + ids("x + 1 = 2") + [EOS],  # ended: untouched
        ]
    )
    scores = torch.zeros(3, len(TOK))
    out = proc(input_ids, scores)
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == ids("{")
    assert torch.isfinite(out[1]).nonzero().flatten().tolist() == ids("\\frac")
    assert torch.isfinite(out[2]).all()


@pytest.fixture(scope="module")
def random_model():
    """An untrained CoMER (CROHME vocabulary) favouring structure tokens: without constraints it breaks the grammar."""
    torch.manual_seed(0)
    model = HMERForConditionalGeneration(HMERConfig(**TINY_CONFIG)).eval()
    with torch.no_grad():
        model.lm_head.bias.zero_()
        model.lm_head.bias[ids("} ^ \\frac x </s>")] = torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0])
    return model


class EndAfter(LogitsProcessor):
    """From step `step` on, push each row towards its end: its end token, then its closing brace, then `x`."""

    def __init__(self, step: int):
        self.step = step

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] <= self.step:
            return scores
        scores = scores.clone()
        for row, start in enumerate(input_ids[:, 0].tolist()):
            r2l = start == EOS
            end, closer = (BOS, ids("{")[0]) if r2l else (EOS, ids("}")[0])
            scores[row, end] += 20.0
            scores[row, closer] += 15.0
            scores[row, ids("x")[0]] += 12.0
        return scores


@pytest.mark.parametrize("num_beams", [1, 4])
def test_generate_stays_in_the_grammar(random_model, num_beams):
    """Greedy (L2R) and bidirectional beam search (both directions, rescored) return only grammatical sequences."""
    proc = processor()
    torch.manual_seed(1)
    pixels = torch.rand(3, 1, 48, 96)
    kwargs = dict(num_beams=num_beams, num_return_sequences=num_beams, max_new_tokens=60)

    def outputs(**extra):
        seqs = random_model.generate(pixels, logits_processor=LogitsProcessorList([EndAfter(6)]), **kwargs, **extra)
        bodies = [[t for t in seq[1:] if t != TOK.pad_token_id] for seq in seqs.tolist()]
        assert all(body[-1] == EOS for body in bodies)  # every sequence ended
        return [body[:-1] for body in bodies]

    constrained = outputs(syntax_constraints=True)
    assert [first_violation(proc, body, r2l=False) for body in constrained] == [None] * len(constrained)
    assert any(ids("{")[0] in body for body in constrained)  # structure was produced, not avoided
    # The check can fail: the same model breaks the grammar without the constraints.
    unconstrained = outputs(syntax_constraints=False)
    assert any(first_violation(proc, body, r2l=False) is not None for body in unconstrained)
