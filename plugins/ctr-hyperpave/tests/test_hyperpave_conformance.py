"""Run the ctr-dagster conformance kit against the `hyperpave` extractor."""

from ctr_dagster.testing import ExtractorConformance

from ctr_hyperpave.extractor import HyperpaveExtractor


class TestHyperpaveExtractor(ExtractorConformance):
    plugin = HyperpaveExtractor
    config = {"steps": 30, "eval_every": 10}  # 40 items: a few full-batch steps are plenty
