"""Run the ctr-dagster conformance kit against the `hyperpave` extractor."""

from ctr_dagster.testing import ExtractorConformance

from ctr_hyperpave.extractor import HyperpaveExtractor, HyperpaveTextExtractor


class TestHyperpaveExtractor(ExtractorConformance):
    plugin = HyperpaveExtractor
    config = {"steps": 30, "eval_every": 10}  # 40 items: a few full-batch steps are plenty


class TestHyperpaveTextExtractor(ExtractorConformance):
    """The text-only ablation, shipped as the `hyperpave_text` baseline."""

    plugin = HyperpaveTextExtractor
    config = {"steps": 30, "eval_every": 10}
