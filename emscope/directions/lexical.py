"""The lexical baseline: how far words alone separate two sets of texts (TF-IDF 1-2 grams, logistic regression).

An activation direction is only interesting beside this number: where a bag of words already separates
two classes, the direction may be reading wording rather than what the model represents.

    auc = lexical_auroc(train_pos, train_neg, test_pos, test_neg)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from emscope.errors import DataFormatError
from emscope.stats import auroc

NGRAM_RANGE = (1, 2)
MIN_DF = 2  # a term must occur in 2 training texts (falls back to 1 when that leaves no term)
LEXICAL_C = 1.0  # scikit-learn's inverse L2 strength


def fit_lexical(
    pos: Sequence[str], neg: Sequence[str], min_df: int = MIN_DF, c: float = LEXICAL_C
) -> Callable[[Sequence[str]], np.ndarray]:
    """Fit TF-IDF (1-2 grams) + logistic regression on `pos` (label 1) and `neg` (label 0).

    Returns a scorer: texts -> decision values (higher = more like `pos`).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if not pos or not neg:
        raise DataFormatError(f"a lexical baseline needs texts of both classes, got {len(pos)} pos and {len(neg)} neg")
    texts = [*pos, *neg]
    try:
        vectorizer = TfidfVectorizer(ngram_range=NGRAM_RANGE, min_df=min_df)
        x = vectorizer.fit_transform(texts)
    except ValueError:  # "After pruning, no terms remain": too few texts for min_df
        vectorizer = TfidfVectorizer(ngram_range=NGRAM_RANGE, min_df=1)
        x = vectorizer.fit_transform(texts)
    clf = LogisticRegression(C=c, max_iter=2000).fit(x, [1] * len(pos) + [0] * len(neg))

    def decision(batch: Sequence[str]) -> np.ndarray:
        return np.asarray(clf.decision_function(vectorizer.transform(list(batch))), dtype=float)

    return decision


def lexical_auroc(
    train_pos: Sequence[str],
    train_neg: Sequence[str],
    test_pos: Sequence[str],
    test_neg: Sequence[str],
    min_df: int = MIN_DF,
    c: float = LEXICAL_C,
) -> float:
    """Held-out AUROC of the TF-IDF logistic baseline fitted on the train texts."""
    scorer = fit_lexical(train_pos, train_neg, min_df, c)
    return auroc(scorer(test_pos), scorer(test_neg))
