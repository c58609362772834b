"""Node features from text, with nothing to download: signed hashing of character n-grams.

The paper encodes product text, category descriptions and "attr is value" with BERT. Here every
node's text goes through one scikit-learn `HashingVectorizer` (char n-grams within word bounds,
signed hashing into `dim` columns, L2-normalized): the hashing trick is a fixed random projection,
so a product title and an AV text that share n-grams ("... teal scarf" / "colour is teal") have a
positive inner product whether or not the value was ever seen in training. That shared space is
what lets an AV node without any edge be scored (inductive, zero-shot).
"""

from __future__ import annotations

import numpy as np


def hashed_text(texts: list[str], dim: int, ngram_range: tuple[int, int] = (2, 4)) -> np.ndarray:
    """float32 [len(texts), dim] rows of unit norm (all-zero for empty text)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vectorizer = HashingVectorizer(
        analyzer="char_wb",
        ngram_range=ngram_range,
        n_features=dim,
        alternate_sign=True,
        norm="l2",
        lowercase=True,
        dtype=np.float32,
    )
    return vectorizer.transform(texts).toarray().astype(np.float32)
