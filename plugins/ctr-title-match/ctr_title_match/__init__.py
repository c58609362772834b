"""ctr-title-match: the `title_match` dictionary extractor plugin for ctr-dagster (the baseline)."""

from ctr_title_match.extractor import TitleMatchConfig, TitleMatchExtractor

__all__ = ["TitleMatchConfig", "TitleMatchExtractor"]
