"""The scikit-learn pipelines postdesk trains: its own, and the plain baseline it must beat.

Both take the same input, one row per ticket with columns (subject, body), so they are
trained, evaluated, stored and compared the same way.

postdesk's pipeline reads the subject and the body apart: each gets word 1-2-gram and
character 2-5-gram TF-IDF features (sublinear term frequency, text prepared by
`prepare_text`, which unifies Persian spelling), and the subject's blocks carry their own
weight. A linear SVM (C, class weighting and the subject's weight chosen by
cross-validated macro-F1) separates the labels, and temperature scaling fitted on
held-out decision values turns its scores into probabilities. Temperature scaling keeps
the SVM's decision (it never changes which label wins, so the tuned macro-F1 is what the
model delivers) while making the winning label's probability mean something.

The baseline is the plain reference from the triage issue: TF-IDF word 1-2-grams and char
2-5-grams over subject and body joined, and LogisticRegression with balanced class
weights, library defaults otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

from sklearn.calibration import CalibratedClassifierCV  # type: ignore[import-untyped]
from sklearn.compose import ColumnTransformer  # type: ignore[import-untyped]
from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
from sklearn.pipeline import FeatureUnion, Pipeline  # type: ignore[import-untyped]
from sklearn.preprocessing import FunctionTransformer  # type: ignore[import-untyped]
from sklearn.svm import LinearSVC  # type: ignore[import-untyped]

from postdesk.classify.text import join_subject_body, prepare_text

POSTDESK: Final = "postdesk"
BASELINE: Final = "baseline"

SUBJECT = 0
BODY = 1
SUBJECT_BLOCKS = ("subject_words", "subject_chars")
BODY_BLOCKS = ("body_words", "body_chars")
# Below this many tickets a character n-gram seen once is kept (there may be nothing else).
MIN_ROWS_FOR_MIN_DF = 200


@dataclass(frozen=True)
class Recipe:
    """Everything needed to train a model again on other data (without tuning)."""

    kind: str = POSTDESK
    C: float = 1.0
    class_weight: str | None = "balanced"
    subject_weight: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        if self.kind == BASELINE:
            return {"kind": BASELINE}  # the baseline has no settings of its own
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        kind = BASELINE if data.get("kind") == BASELINE else POSTDESK
        return cls(
            kind=kind,
            C=float(data.get("C", 1.0)),
            class_weight=data.get("class_weight"),
            subject_weight=float(data.get("subject_weight", 0.5)),
        )

    def describe(self) -> str:
        if self.kind == BASELINE:
            return "baseline (TF-IDF words+chars, LogisticRegression balanced)"
        return (
            f"LinearSVC C={self.C:g} class_weight={self.class_weight} "
            f"subject_weight={self.subject_weight:g}"
        )


def _words() -> TfidfVectorizer:
    return TfidfVectorizer(
        preprocessor=prepare_text,
        token_pattern=r"(?u)\b\w+\b",
        ngram_range=(1, 2),
        sublinear_tf=True,
    )


def _chars(min_df: int) -> TfidfVectorizer:
    return TfidfVectorizer(
        preprocessor=prepare_text,
        analyzer="char_wb",
        ngram_range=(2, 5),
        min_df=min_df,
        sublinear_tf=True,
    )


def ticket_features(*, rows: int, subject: bool, body: bool = True) -> ColumnTransformer:
    """The feature blocks for tickets; a column with no text anywhere gets none."""
    min_df = 2 if rows >= MIN_ROWS_FOR_MIN_DF else 1
    blocks: list[tuple[str, Any, int]] = []
    if subject:
        blocks += [
            (SUBJECT_BLOCKS[0], _words(), SUBJECT),
            (SUBJECT_BLOCKS[1], _chars(min_df), SUBJECT),
        ]
    if body:
        blocks += [(BODY_BLOCKS[0], _words(), BODY), (BODY_BLOCKS[1], _chars(min_df), BODY)]
    return ColumnTransformer(blocks, sparse_threshold=1.0)


def subject_weights(weight: float) -> dict[str, float]:
    return {name: weight for name in SUBJECT_BLOCKS}


def svm(recipe: Recipe) -> LinearSVC:
    # tol 1e-3: the same decisions as the default 1e-4 on every corpus tried, in less time.
    # A fixed random_state: liblinear shuffles with the global RNG otherwise, so the same
    # data trained twice could give two models (and `make demo` two outcomes).
    return LinearSVC(C=recipe.C, class_weight=recipe.class_weight, tol=1e-3, random_state=0)


def calibrated_svm(recipe: Recipe, folds: int) -> CalibratedClassifierCV:
    """The SVM refitted on all data, its scores temperature-scaled on `folds` held-out parts."""
    return CalibratedClassifierCV(svm(recipe), method="temperature", cv=folds, ensemble=False)


def baseline_pipeline() -> Pipeline:
    """The plain reference model (see the module docstring)."""
    return Pipeline(
        [
            ("text", FunctionTransformer(join_subject_body)),
            (
                "features",
                FeatureUnion(
                    [
                        ("words", TfidfVectorizer(ngram_range=(1, 2))),
                        ("chars", TfidfVectorizer(analyzer="char", ngram_range=(2, 5))),
                    ]
                ),
            ),
            ("classifier", LogisticRegression(class_weight="balanced")),
        ]
    )
