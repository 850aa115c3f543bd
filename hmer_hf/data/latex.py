"""Normalising raw LaTeX (as written in InkML `truth` annotations) to the canonical CROHME label form.

The canonical form is the one of the CROHME caption files (`train_caption.txt`, `2014/caption.txt`): one
space-separated token per symbol from the 110-symbol dictionary, every script and argument in braces
(`x ^ { 2 }`, `\\frac { 1 } { 2 }`, `\\sqrt [ n ] { x }`), and no presentational markup (`$`, `\\left`, `\\mbox`,
spacing, grouping braces that carry no structure).

The normaliser is a small structural parser: `tokenize_latex` splits the raw string, `_Parser` reads it by recursive
descent, resolving the arguments of `\\frac`, `\\sqrt`, `^`, `_` and text commands, and emits the canonical form.
scripts/measure_normalizer.py measures it against the CROHME captions (docs/data_quality.md has the figures).
"""

from __future__ import annotations

import re

__all__ = ["CANONICAL_SYMBOLS", "tokenize_latex", "normalize_latex", "LatexParseError"]

# The 110 symbols of CROHME's dictionary.txt (without <eol>). hmer_hf/tokenization_hmer.py keeps its own copy so
# that the data layer does not import the transformers tokenizer stack; tests check this one against dictionary.txt.
CANONICAL_SYMBOLS: tuple[str, ...] = (
    # digits, all lowercase letters, and the 18 capitals that CROHME expressions use
    *"0123456789",
    *"abcdefghijklmnopqrstuvwxyz",
    *"ABCEFGHILMNPRSTVXY",
    # punctuation, operators, relations and structure
    "!", "'", "(", ")", "+", ",", "-", ".", "/", "<", "=", ">", "[", "]", "|", "{", "}", "^", "_",
    "\\{", "\\}",
    "\\cdot", "\\div", "\\pm", "\\times", "\\neq", "\\leq", "\\geq", "\\in", "\\rightarrow", "\\exists",
    "\\forall", "\\prime", "\\ldots", "\\cdots", "\\infty", "\\limits",
    "\\frac", "\\sqrt", "\\sum", "\\int", "\\lim", "\\log", "\\sin", "\\cos", "\\tan",
    # greek
    "\\alpha", "\\beta", "\\gamma", "\\theta", "\\lambda", "\\mu", "\\pi", "\\sigma", "\\phi", "\\Delta",
)


class LatexParseError(ValueError):
    """Raw LaTeX whose structure cannot be read (unbalanced braces, a command without its argument)."""


_TOKEN = re.compile(r"\\[a-zA-Z]+|\\.|\S", re.S)

# Other spellings of canonical symbols; the value (one or more space-separated tokens) replaces the raw token.
_ALIASES: dict[str, str] = {
    "\\lt": "<", "\\gt": ">", "\\le": "\\leq", "\\ge": "\\geq", "\\leqslant": "\\leq", "\\geqslant": "\\geq",
    "\\ne": "\\neq", "\\to": "\\rightarrow", "\\longrightarrow": "\\rightarrow",
    "\\lbrack": "[", "\\rbrack": "]", "\\lbrace": "\\{", "\\rbrace": "\\}", "\\vert": "|", "\\mid": "|",
    "\\|": "| |", "\\Vert": "| |", "\\parallel": "| |",  # no double bar in the dictionary: two bars
    "\\dots": "\\ldots", "\\dotsc": "\\ldots", "\\cdotp": "\\cdot",
    "\\lparen": "(", "\\rparen": ")", "\\lvert": "|", "\\rvert": "|",
    "\\dfrac": "\\frac", "\\tfrac": "\\frac", "\\varphi": "\\phi", "\\vartheta": "\\theta",
}
# Markup with no symbol of its own: spacing, sizing, style. Removed wherever it occurs.
_DROPPED = {
    "$", "~", "\\,", "\\;", "\\:", "\\!", "\\ ", "\\quad", "\\qquad", "\\displaystyle", "\\textstyle",
    "\\scriptstyle",
}
# Delimiter size prefixes: dropped, and a following "." (the invisible delimiter) goes with them.
_SIZERS = {
    "\\left", "\\right", "\\big", "\\Big", "\\bigg", "\\Bigg", "\\bigl", "\\bigr", "\\Bigl", "\\Bigr",
    "\\biggl", "\\biggr", "\\Biggl", "\\Biggr", "\\middle",
}
# Text-style wrappers: their argument is kept, the wrapper is not (multi-letter words become letters anyway).
_UNWRAP = {
    "\\mbox", "\\mathrm", "\\text", "\\textrm", "\\textit", "\\mathit", "\\mathbf", "\\mathnormal", "\\operatorname",
}

_SYMBOL_SET = frozenset(CANONICAL_SYMBOLS)
_COMMANDS = sorted((s for s in _SYMBOL_SET | set(_ALIASES) if s.startswith("\\") and s[1:].isalpha()),
                   key=len, reverse=True)
_KNOWN = _SYMBOL_SET | set(_ALIASES) | _DROPPED | _SIZERS | _UNWRAP


def _split_command(cmd: str) -> list[str]:
    """Split a run-together command such as `\\ltN` into a known command and letters; unknown ones stay whole."""
    if cmd in _KNOWN or not cmd[1:].isalpha():
        return [cmd]
    for known in _COMMANDS:
        if cmd.startswith(known):
            return [known, *cmd[len(known):]]
    return [cmd]


def tokenize_latex(raw: str) -> list[str]:
    """Split raw LaTeX into tokens: commands (`\\frac`, `\\{`), and single characters; whitespace is dropped."""
    tokens: list[str] = []
    for tok in _TOKEN.findall(raw):
        tokens.extend(_split_command(tok) if tok.startswith("\\") else [tok])
    return tokens


# Function names that writers (and some truths) spell as plain letters. The canonical labels always use the command
# for these two (26 of 26 train truths); "tan", "min", "max", "ln" spelled out stay letters there (`a _ { t a n }`).
_SPELLED_FUNCTIONS = {("l", "o", "g"): "\\log", ("l", "i", "m"): "\\lim"}


def _join_spelled_functions(tokens: list[str]) -> list[str]:
    """Replace letter runs `l o g` / `l i m` by `\\log` / `\\lim`."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        word = tuple(tokens[i:i + 3])
        if word in _SPELLED_FUNCTIONS:
            out.append(_SPELLED_FUNCTIONS[word])
            i += 3
        else:
            out.append(tokens[i])
            i += 1
    return out


class _Parser:
    """Recursive-descent reader of a token list into the canonical token sequence.

    A braced group contributes only its contents; where it is an argument (of a script, `\\frac`, `\\sqrt`) the
    canonical braces are added around it, so `x^2`, `x^{2}` and `x^{{2}}` all become `x ^ { 2 }`.
    """

    def __init__(self, tokens: list[str], *, sub_before_sup: bool = False, keep_limits: bool = True):
        dropped = _DROPPED if keep_limits else _DROPPED | {"\\limits"}
        expanded = (u for t in tokens for u in (_ALIASES[t].split() if t in _ALIASES else [t]))
        self.toks = [t for t in expanded if t not in dropped]
        self.pos = 0
        self.sub_before_sup = sub_before_sup

    def peek(self) -> str | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise LatexParseError("unexpected end of input")
        self.pos += 1
        return tok

    def sequence(self, closer: str | None = None) -> list[str]:
        """Elements up to `closer` (consumed) or the end of input."""
        parts: list[tuple[str | None, list[str]]] = []  # (script kind "^"/"_" or None, canonical tokens)
        while True:
            tok = self.peek()
            if tok is None:
                if closer is not None:
                    raise LatexParseError(f"missing {closer!r}")
                break
            if tok == closer:
                self.pos += 1
                break
            if tok == "}":
                raise LatexParseError("unbalanced '}'")
            if tok in ("^", "_"):
                self.pos += 1
                parts.append((tok, [tok, "{", *self.argument(), "}"]))
            else:
                parts.append((None, self.atom()))
        if self.sub_before_sup:
            # x^a_b and x_b^a are the same expression; the 2014 test captions always write the subscript first
            for i in range(len(parts) - 1):
                if parts[i][0] == "^" and parts[i + 1][0] == "_":
                    parts[i], parts[i + 1] = parts[i + 1], parts[i]
        return [t for _, toks in parts for t in toks]

    def argument(self) -> list[str]:
        """The canonical contents of one argument: a braced group or a single element."""
        if self.peek() in (None, "}", "^", "_"):
            raise LatexParseError(f"missing argument before {self.peek() or 'end of input'}")
        return self.atom()

    def atom(self) -> list[str]:
        """One symbol with its arguments, or a group's contents, in canonical tokens."""
        tok = self.take()
        if tok == "{":
            return self.sequence("}")
        if tok in _SIZERS:
            if self.peek() == ".":
                self.pos += 1
            return []
        if tok in _UNWRAP:
            return self.argument()
        if tok == "\\frac":
            num = self.argument()
            den = self.argument()
            return ["\\frac", "{", *num, "}", "{", *den, "}"]
        if tok == "\\sqrt":
            index: list[str] = []
            if self.peek() == "[":
                self.pos += 1
                index = ["[", *self.sequence("]"), "]"]
            return ["\\sqrt", *index, "{", *self.argument(), "}"]
        return [tok]


def normalize_latex(raw: str, *, sub_before_sup: bool = False, keep_limits: bool = True) -> str:
    """Turn raw LaTeX into the canonical CROHME token string (space-separated, as in train_caption.txt).

    The defaults reproduce train_caption.txt, which keeps `\\limits` and the script order of the source. The 2014
    test captions (`2014/caption.txt`) write `_` before `^` and have no `\\limits`: pass `sub_before_sup=True,
    keep_limits=False` for that convention. Raises LatexParseError for structurally broken input.
    """
    tokens = _join_spelled_functions(tokenize_latex(raw))
    return " ".join(_Parser(tokens, sub_before_sup=sub_before_sup, keep_limits=keep_limits).sequence())
