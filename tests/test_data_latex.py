"""LaTeX normaliser: raw InkML truths -> canonical CROHME token strings."""

from __future__ import annotations

import pytest

from hmer_hf.data.latex import CANONICAL_SYMBOLS, LatexParseError, normalize_latex, tokenize_latex

CASES = [
    # math delimiters, whitespace, digits and words split into single symbols
    ("$x$", "x"),
    ("$93 \\times 67$", "9 3 \\times 6 7"),
    ("0.9", "0 . 9"),
    ("$sp_{t}$", "s p _ { t }"),
    # scripts always braced, nested scripts too; braced bases lose their braces
    ("x^2", "x ^ { 2 }"),
    ("a ^ { b ^ { c ^ d } }", "a ^ { b ^ { c ^ { d } } }"),
    ("x_{i+1}", "x _ { i + 1 }"),
    ("{ \\sin } ^ { \\gamma } 7", "\\sin ^ { \\gamma } 7"),
    ("$e = m {c^{2}}$", "e = m c ^ { 2 }"),
    ("\\int ^ { n } _ { z }", "\\int ^ { n } _ { z }"),  # train captions keep the source's script order
    ("f^{'}(x)", "f ^ { ' } ( x )"),
    # fractions and roots
    ("\\frac12", "\\frac { 1 } { 2 }"),
    ("\\frac 1 {a_1 + x}", "\\frac { 1 } { a _ { 1 } + x }"),
    ("x^\\frac{p}{q}", "x ^ { \\frac { p } { q } }"),
    ("\\sqrt[n]x", "\\sqrt [ n ] { x }"),
    ("\\sqrt{{x^{2}}}", "\\sqrt { x ^ { 2 } }"),
    ("\\sqrt[3]{2}", "\\sqrt [ 3 ] { 2 }"),
    # text wrappers unwrapped, their words split into letters
    ("\\mbox { A }", "A"),
    ("\\mbox { erf } ( z )", "e r f ( z )"),
    ("\\mathrm{d}x", "d x"),
    ("{ j } _ { \\mbox { y } }", "j _ { y }"),
    # sizing and spacing markup dropped
    ("\\left ( x \\right )", "( x )"),
    ("\\Bigg( a \\Bigg)", "( a )"),
    ("\\left. \\frac{a}{b} \\right|", "\\frac { a } { b } |"),
    ("a\\,b\\;c\\!d\\quad e~f", "a b c d e f"),
    ("\\displaystyle x", "x"),
    # other spellings of dictionary symbols
    ("x \\lt y \\gt z", "x < y > z"),
    ("M\\ltN", "M < N"),  # run-together command seen in the training truths
    ("\\lim_{x \\to 0}", "\\lim _ { x \\rightarrow 0 }"),
    ("\\lbrack a \\rbrack", "[ a ]"),
    ("\\le \\ge \\ne", "\\leq \\geq \\neq"),
    ("\\lbrace x \\rbrace", "\\{ x \\}"),
    ("\\{ g ( y ) \\}^2", "\\{ g ( y ) \\} ^ { 2 }"),
    ("\\dfrac{a}{b}", "\\frac { a } { b }"),
    ("| x \\| y |", "| x | | y |"),
    # spelled-out log and lim, as the canonical labels write them
    ("2 l o g ( x )", "2 \\log ( x )"),
    ("lim_{n}", "\\lim _ { n }"),
    ("a_{tan}", "a _ { t a n }"),
    # \limits is a dictionary symbol in the train captions
    ("\\int\\limits_{a}^{b} f dx", "\\int \\limits _ { a } ^ { b } f d x"),
    ("", ""),
]


@pytest.mark.parametrize("raw, canonical", CASES)
def test_normalize_latex(raw, canonical):
    assert normalize_latex(raw) == canonical


def test_2014_conventions():
    raw = "\\sum\\limits^{\\infty}_{n=1} x^{2}_{n}"
    assert normalize_latex(raw) == "\\sum \\limits ^ { \\infty } _ { n = 1 } x ^ { 2 } _ { n }"
    assert normalize_latex(raw, sub_before_sup=True, keep_limits=False) == (
        "\\sum _ { n = 1 } ^ { \\infty } x _ { n } ^ { 2 }"
    )


def test_idempotent_on_canonical_form():
    for _, canonical in CASES:
        assert normalize_latex(canonical) == canonical


def test_outputs_use_dictionary_symbols():
    for raw, _ in CASES:
        assert set(normalize_latex(raw).split()) <= set(CANONICAL_SYMBOLS)


@pytest.mark.parametrize("raw", ["x^", "\\frac{1}", "{a", "a}", "\\sqrt[3", "x^}"])
def test_broken_structure_raises(raw):
    with pytest.raises(LatexParseError):
        normalize_latex(raw)


def test_tokenize_latex():
    assert tokenize_latex("$\\frac{ab}{2}\\,$") == ["$", "\\frac", "{", "a", "b", "}", "{", "2", "}", "\\,", "$"]
    assert tokenize_latex("\\ltN") == ["\\lt", "N"]
    assert tokenize_latex("\\alpha\\{") == ["\\alpha", "\\{"]


@pytest.mark.shared_data
def test_canonical_symbols_match_dictionary(crohme_dir):
    with (crohme_dir / "dictionary.txt").open(encoding="utf-8") as f:
        symbols = {line.split("\t")[0] for line in f if line.strip()} - {"<eol>"}
    assert len(CANONICAL_SYMBOLS) == len(set(CANONICAL_SYMBOLS)) == 110
    assert set(CANONICAL_SYMBOLS) == symbols


@pytest.mark.shared_data
def test_exact_match_on_train_truths(crohme_dir):
    from hmer_hf.data.inkml import iter_inkml_dir
    from hmer_hf.data.report import SkipReport

    with (crohme_dir / "train_caption.txt").open(encoding="utf-8") as f:
        captions = dict(line.rstrip("\n").split("\t", 1) for line in f)
    report = SkipReport()
    results = [normalize_latex(ink.truth) == captions[ink.name]
               for ink in iter_inkml_dir(crohme_dir / "train_inkml", report=report)]
    assert len(results) == 8834
    assert sum(results) / len(results) >= 0.99
