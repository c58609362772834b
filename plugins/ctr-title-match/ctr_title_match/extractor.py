"""`title_match`: the dictionary baseline for attribute-value extraction.

`fit` collects, per attribute, the values the structured catalogue already uses (seen at least
`min_count` times); `extract` reports every such value stated in an item's title as a whole-word
phrase (case-insensitive, so "Acme" matches "ACME" and multi-word values match as phrases), with
score 1.0 and the catalogue's spelling. It cannot find a value the catalogue never used: that is the
point of comparison for zero-shot extractors (HyperPAVE). With `category_scoped=True` a value is
only looked for in categories where the catalogue has used that attribute.

When two values of one attribute are both in a title, both are reported (the extractor does not
guess); when one value string belongs to two attributes, it is reported for both. Pure Python +
pyarrow, no model file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pyarrow as pa

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class TitleMatchConfig:
    min_count: int = 1  # a value must occur this often in the catalogue to enter the dictionary
    category_scoped: bool = True  # only look for an attribute in categories that use it


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(t.casefold() for t in _WORD.findall(text or ""))


class TitleMatchExtractor:
    """Dictionary of catalogue values, matched as whole words/phrases in titles (score 1.0)."""

    name = "title_match"
    Config = TitleMatchConfig
    baseline = True  # the dictionary reference every other extractor is judged against

    def __init__(self, config: TitleMatchConfig | None = None):
        self.config = config or TitleMatchConfig()
        self._phrases: dict[tuple[str, ...], list[tuple[str, str]]] = {}
        self._max_len = 0
        self._category_attributes: dict[str, set[str]] = {}

    def fit(self, items: pa.Table, attributes: pa.Table) -> TitleMatchExtractor:
        counts: dict[tuple[str, str], int] = {}
        spelling: dict[tuple[str, tuple[str, ...]], str] = {}
        category = dict(
            zip(items.column("item_id").to_pylist(), items.column("category").to_pylist(), strict=True)
        )
        # categories of the fitted items start empty; a category never seen in fit is unrestricted
        self._category_attributes = {c: set() for c in category.values()}
        for item, attribute, value in zip(
            attributes.column("item_id").to_pylist(),
            attributes.column("attribute").to_pylist(),
            attributes.column("value").to_pylist(),
            strict=True,
        ):
            tokens = _tokens(value)
            if not tokens:
                continue
            counts[(attribute, value)] = counts.get((attribute, value), 0) + 1
            spelling.setdefault((attribute, tokens), value)  # first spelling seen wins
            if item in category:
                self._category_attributes.setdefault(category[item], set()).add(attribute)
        self._phrases = {}
        for (attribute, value), n in sorted(counts.items()):
            tokens = _tokens(value)
            if n < self.config.min_count or spelling[(attribute, tokens)] != value:
                continue
            self._phrases.setdefault(tokens, []).append((attribute, value))
        self._max_len = max((len(t) for t in self._phrases), default=0)
        return self

    def extract(self, items: pa.Table) -> pa.Table:
        import pyarrow as pa

        out: dict[str, list] = {"item_id": [], "attribute": [], "value": [], "score": []}
        for item, category, title in zip(
            items.column("item_id").to_pylist(),
            items.column("category").to_pylist(),
            items.column("title").to_pylist(),
            strict=True,
        ):
            allowed = self._category_attributes.get(category) if self.config.category_scoped else None
            tokens = _tokens(title)
            found: set[tuple[str, str]] = set()
            for start in range(len(tokens)):
                for length in range(1, min(self._max_len, len(tokens) - start) + 1):
                    for attribute, value in self._phrases.get(tokens[start : start + length], ()):
                        if allowed is None or attribute in allowed:
                            found.add((attribute, value))
            for attribute, value in sorted(found):
                out["item_id"].append(item)
                out["attribute"].append(attribute)
                out["value"].append(value)
                out["score"].append(1.0)
        return pa.table(
            {
                "item_id": pa.array(out["item_id"], pa.string()),
                "attribute": pa.array(out["attribute"], pa.string()),
                "value": pa.array(out["value"], pa.string()),
                "score": pa.array(out["score"], pa.float32()),
            }
        )
