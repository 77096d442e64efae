"""Fast single-ticket probabilities from a stored postdesk pipeline.

scikit-learn validates its input on every call, which costs a few milliseconds per
ticket, more than the arithmetic itself. In the mail pipeline one ticket at a time is
classified, so `LinearScorer` takes the fitted pieces out of the pipeline (vocabularies,
IDF weights, block weights, SVM coefficients, temperature) and computes exactly what the
pipeline computes: TF-IDF per block (sublinear tf, idf, L2 norm, block weight), the SVM's
decision values, then softmax(beta * decision) as scikit-learn's temperature scaling.

It is built only from pipelines of the shape postdesk trains and is checked against the
pipeline on probe texts when loaded; when anything differs, the caller keeps using the
pipeline itself (slower, never wrong).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.calibration import CalibratedClassifierCV  # type: ignore[import-untyped]
from sklearn.compose import ColumnTransformer  # type: ignore[import-untyped]
from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]
from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]
from sklearn.svm import LinearSVC  # type: ignore[import-untyped]

from postdesk.classify.text import ticket_matrix

# Per ticket: a block's analysis (tokens, term counts) by its cache key, and under
# (cache key, "joint") the tokens' rows in the vocabulary the models share.
AnalysisCache = dict[Hashable, tuple[list[str], NDArray[Any]]]

PROBES = [
    ("Invoice charged twice", "Hello, my card was charged twice for order 1234. Please refund."),
    ("سفارش دیر رسید", "سلام، سفارش من خیلی دیر رسید و غذا سرد بود. لطفا فوری پیگیری کنید."),
    ("", "login error after the update: the server says password expired"),
    ("Re: [#12] help", ""),
]


@dataclass
class _Block:
    column: int
    analyzer: Callable[[str], list[str]]
    cache_key: Hashable
    vocabulary: dict[str, int]
    idf: NDArray[np.float64] | None
    sublinear: bool
    weight: float
    offset: int
    # Set by share_vocabularies(): one look-up per token for every model reading alike.
    joint: dict[str, int] | None = None
    remap: NDArray[np.intp] | None = None


def _cache_key(column: int, vectorizer: TfidfVectorizer) -> Hashable:
    pre = vectorizer.preprocessor
    name = f"{getattr(pre, '__module__', '')}.{getattr(pre, '__qualname__', repr(pre))}"
    stop = vectorizer.stop_words
    return (
        column,
        vectorizer.analyzer,
        tuple(vectorizer.ngram_range),
        vectorizer.token_pattern,
        name,
        vectorizer.lowercase,
        vectorizer.strip_accents,
        tuple(stop) if isinstance(stop, list | tuple | frozenset | set) else stop,
    )


def char_wb_ngrams(text: str, min_n: int, max_n: int) -> list[str]:
    """The n-grams scikit-learn's "char_wb" analyzer gives for `text` (preprocessed), in
    its order, about twice as fast: each word padded with one space either side, its
    n-grams for n from `min_n` to `max_n`, and a word no longer than n only once, whole.

    (scikit-learn first turns runs of whitespace into one space and then splits on
    whitespace, which is what `split()` alone does.)
    """
    grams: list[str] = []
    extend = grams.extend
    sizes = range(min_n, max_n + 1)
    for word in text.split():
        padded = f" {word} "
        length = len(padded)
        if length > max_n:  # most words: every size in full, in one comprehension
            extend([padded[i : i + n] for n in sizes for i in range(length - n + 1)])
            continue
        for n in sizes:
            if n >= length:
                grams.append(padded)
                break
            extend([padded[i : i + n] for i in range(length - n + 1)])
    return grams


def _char_wb_analyze(
    preprocess: Callable[[str], str], min_n: int, max_n: int, text: str
) -> list[str]:
    return char_wb_ngrams(preprocess(text), min_n, max_n)


def _lookup(vocabulary: dict[str, int], tokens: list[str]) -> NDArray[np.intp]:
    return np.fromiter(map(vocabulary.get, tokens, repeat(-1)), np.intp, len(tokens))


def share_vocabularies(scorers: list[LinearScorer]) -> None:
    """Let the blocks of several scorers that analyse text alike (same column, analyzer,
    n-grams, preprocessing) share one vocabulary look-up per token.

    Each token is looked up once in the union of their vocabularies; a small array per
    block turns that row into the block's own feature index (-1 where the block does not
    know the token). The probabilities are exactly the same; with a category and a
    priority model the look-ups, most of a ticket's time, are halved.
    """
    groups: dict[Hashable, list[_Block]] = {}
    for scorer in scorers:
        for block in scorer.blocks:
            groups.setdefault(block.cache_key, []).append(block)
    for blocks in groups.values():
        if len(blocks) < 2:
            continue
        joint: dict[str, int] = {}
        for block in blocks:
            for token in block.vocabulary:
                joint.setdefault(token, len(joint))
        for block in blocks:
            remap = np.full(len(joint), -1, dtype=np.intp)
            rows = np.fromiter(map(joint.__getitem__, block.vocabulary), np.intp)
            remap[rows] = np.fromiter(block.vocabulary.values(), np.intp, len(rows))
            block.joint, block.remap = joint, remap


class LinearScorer:
    """Class probabilities for one ticket, as the pipeline would give, without overhead."""

    def __init__(
        self,
        blocks: list[_Block],
        coef: NDArray[np.float64],
        intercept: NDArray[np.float64],
        beta: float,
        classes: NDArray[Any],
    ) -> None:
        self.blocks = blocks
        # One row per feature, so a ticket's few features are a contiguous gather.
        self.coef_rows = np.ascontiguousarray(coef.T)
        self.intercept = intercept
        self.beta = beta
        self.classes = classes

    @classmethod
    def from_pipeline(cls, pipeline: Pipeline) -> LinearScorer | None:
        """A scorer for `pipeline`, or None when it is not of the shape postdesk trains."""
        try:
            return cls._build(pipeline)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            return None

    @classmethod
    def _build(cls, pipeline: Pipeline) -> LinearScorer | None:
        if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
            return None
        features, classifier = pipeline.steps[0][1], pipeline.steps[1][1]
        if not isinstance(features, ColumnTransformer) or not isinstance(
            classifier, CalibratedClassifierCV
        ):
            return None
        if classifier.method != "temperature" or len(classifier.calibrated_classifiers_) != 1:
            return None
        calibrated = classifier.calibrated_classifiers_[0]
        svm = calibrated.estimator
        if not isinstance(svm, LinearSVC) or len(calibrated.calibrators) != 1:
            return None
        weights = features.transformer_weights or {}
        blocks: list[_Block] = []
        for name, vectorizer, column in features.transformers_:
            if name == "remainder" or vectorizer == "drop":
                continue
            if not isinstance(vectorizer, TfidfVectorizer) or not isinstance(column, int):
                return None
            if vectorizer.norm != "l2" or vectorizer.binary:
                return None
            span = features.output_indices_[name]
            analyzer = vectorizer.build_analyzer()
            if vectorizer.analyzer == "char_wb" and vectorizer.input == "content":
                low, high = vectorizer.ngram_range
                analyzer = functools.partial(
                    _char_wb_analyze, vectorizer.build_preprocessor(), int(low), int(high)
                )
            blocks.append(
                _Block(
                    column=column,
                    analyzer=analyzer,
                    cache_key=_cache_key(column, vectorizer),
                    vocabulary=dict(vectorizer.vocabulary_),
                    idf=np.asarray(vectorizer.idf_, dtype=np.float64)
                    if vectorizer.use_idf
                    else None,
                    sublinear=bool(vectorizer.sublinear_tf),
                    weight=float(weights.get(name, 1.0)),
                    offset=int(span.start),
                )
            )
        coef = np.asarray(svm.coef_, dtype=np.float64)
        intercept = np.asarray(svm.intercept_, dtype=np.float64)
        beta = float(calibrated.calibrators[0].beta_)
        return cls(blocks, coef, intercept, beta, np.asarray(classifier.classes_))

    def decision(
        self, subject: str, body: str, cache: AnalysisCache | None = None
    ) -> NDArray[np.float64]:
        """The SVM's decision values for one ticket."""
        texts = (subject, body)
        columns: list[NDArray[np.intp]] = []
        values: list[NDArray[np.float64]] = []
        for block in self.blocks:
            analysed = cache.get(block.cache_key) if cache is not None else None
            if analysed is None:
                # Counted once per ticket, shared by every model that reads it this way.
                counts = Counter(block.analyzer(texts[block.column]))
                tokens = list(counts)
                analysed = (tokens, np.fromiter(counts.values(), np.float64, len(tokens)))
                if cache is not None:
                    cache[block.cache_key] = analysed
            tokens, tf_all = analysed
            # map() keeps the vocabulary look-ups in C: most of the time per ticket.
            if block.joint is not None and block.remap is not None:
                joint_key = (block.cache_key, "joint")
                rows = cache.get(joint_key) if cache is not None else None
                if rows is None:
                    rows = (tokens, _lookup(block.joint, tokens))
                    if cache is not None:
                        cache[joint_key] = rows
                joint_rows = rows[1]
                found = np.where(joint_rows >= 0, block.remap[joint_rows], -1)
            else:
                found = _lookup(block.vocabulary, tokens)
            known = found >= 0
            if not known.any():
                continue
            idx = found[known]
            tf = tf_all[known]
            if block.sublinear:
                tf = np.log(tf) + 1.0
            if block.idf is not None:
                tf = tf * block.idf[idx]
            norm = math.sqrt(float(tf @ tf))
            if norm == 0.0:
                continue
            columns.append(idx + block.offset)
            values.append(tf * (block.weight / norm))
        if not columns:
            return self.intercept.copy()
        cols = np.concatenate(columns)
        vals = np.concatenate(values)
        return np.asarray(vals @ self.coef_rows[cols] + self.intercept, dtype=np.float64)

    def proba(
        self, subject: str, body: str, cache: AnalysisCache | None = None
    ) -> NDArray[np.float64]:
        """Probability of each class (in `classes` order) for one ticket."""
        scores = self.decision(subject, body, cache)
        logits = np.array([-scores[0], scores[0]]) if scores.shape[0] == 1 else scores
        z = self.beta * logits
        z = z - z.max()
        e = np.exp(z)
        return np.asarray(e / e.sum(), dtype=np.float64)

    def agrees_with(self, pipeline: Pipeline) -> bool:
        """Whether this scorer gives the pipeline's probabilities on the probe texts."""
        expected = pipeline.predict_proba(
            ticket_matrix([s for s, _ in PROBES], [b for _, b in PROBES])
        )
        got = np.vstack([self.proba(s, b) for s, b in PROBES])
        return bool(np.allclose(got, expected, rtol=1e-6, atol=1e-9))
