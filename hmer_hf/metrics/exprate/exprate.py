"""ExpRate: expression recognition rate for handwritten mathematical expressions (an `evaluate` metric).

Load it from the repository folder, no network needed: `evaluate.load("path/to/hmer-hf/metrics/exprate")`.

This file is loaded by `evaluate` as a standalone script, so it imports neither hmer_hf nor anything outside the
standard library, numpy, datasets and evaluate. Its tokenisation is the same as `hmer_hf.tokenization_hmer.split_latex`
(tests/test_evaluation.py keeps the two equal).
"""

import re

import datasets
import evaluate

_DESCRIPTION = """
ExpRate is the fraction of expressions whose predicted LaTeX token sequence equals the reference exactly. `ExpRate<=k`
(k = 1, 2, 3 by default) also counts predictions within k token edits (insertions, deletions, substitutions) of the
reference, as in the CROHME literature.

Both sides are canonicalised the same way before comparison: a string is split on whitespace and every chunk is split
into LaTeX symbols (control words such as `\\frac`, control symbols such as `\\{`, single characters), so spaced
(`x ^ { 2 }`) and compact (`x^{2}`) LaTeX compare equal. Pre-tokenised inputs (lists of tokens) are used as given.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str` or of `list[str]`): predicted LaTeX, one per expression.
    references (`list` of `str` or of `list[str]`): reference LaTeX, in the same order.
    max_errors (`int`, defaults to 3): report `exprate_le1` ... `exprate_le{max_errors}`.
    per_sample (`bool`, defaults to `False`): also return `edit_distances` and `reference_lengths` (in tokens), one
        per expression.
Returns:
    exprate (`float`): fraction of exact matches, in [0, 1].
    exprate_le1, exprate_le2, exprate_le3 (`float`): fraction within 1, 2, 3 token edits.
    num_samples (`int`): number of expressions.
Examples:
    >>> exprate = evaluate.load("metrics/exprate")
    >>> exprate.compute(predictions=["x^{2}", "a + b"], references=["x ^ { 2 }", "a - b"])
    {'exprate': 0.5, 'exprate_le1': 1.0, 'exprate_le2': 1.0, 'exprate_le3': 1.0, 'num_samples': 2}
"""

_CITATION = """
@inproceedings{mouchere2014icfhr,
  title={ICFHR 2014 Competition on Recognition of On-line Handwritten Mathematical Expressions (CROHME 2014)},
  author={Mouch{\\`e}re, Harold and Viard-Gaudin, Christian and Zanibbi, Richard and Garain, Utpal},
  booktitle={ICFHR},
  year={2014}
}
"""

# A LaTeX symbol: a control word (`\alpha`), a control symbol (`\{`), or any other single character.
# Identical to hmer_hf.tokenization_hmer._LATEX_TOKEN (kept in step by a test).
_LATEX_TOKEN = re.compile(r"\\[A-Za-z]+|\\.|\S", re.S)


def tokenize(expression):
    """Canonical token list of a LaTeX string (spaced or compact) or of an already tokenised sequence."""
    if isinstance(expression, str):
        return [tok for chunk in expression.split() for tok in _LATEX_TOKEN.findall(chunk)]
    return [str(tok) for tok in expression]


def edit_distance(a, b):
    """Levenshtein distance between two token sequences (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
# Named so that evaluate derives the module name "exprate" (it snake-cases the class name; ExpRate -> exp_rate).
class Exprate(evaluate.Metric):
    """Expression recognition rate (exact match on canonical LaTeX tokens) and ExpRate within k token edits."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # Either strings (spaced or compact LaTeX) or token lists; evaluate picks the matching schema.
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("string")),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
            ],
            reference_urls=["https://www.isical.ac.in/~crohme/"],
        )

    def _compute(self, predictions, references, max_errors=3, per_sample=False):
        refs = [tokenize(r) for r in references]
        distances = [edit_distance(tokenize(p), r) for p, r in zip(predictions, refs)]
        n = len(distances)
        result = {"exprate": sum(d == 0 for d in distances) / n if n else 0.0}
        for k in range(1, max_errors + 1):
            result[f"exprate_le{k}"] = sum(d <= k for d in distances) / n if n else 0.0
        result["num_samples"] = n
        if per_sample:
            result["edit_distances"] = distances
            result["reference_lengths"] = [len(r) for r in refs]
        return result
