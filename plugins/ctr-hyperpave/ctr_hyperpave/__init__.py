"""ctr-hyperpave: the `hyperpave` attribute-value extractor plugin for ctr-dagster (torch imported lazily)."""

from ctr_hyperpave.extractor import HyperpaveConfig, HyperpaveExtractor

__all__ = ["HyperpaveConfig", "HyperpaveExtractor"]
