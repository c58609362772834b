"""The attribute stage end to end on the tiny synthetic world: `build_item_attributes` (engine) and
the `item_attributes` asset (metadata, generic plugin reports, the warning check)."""

import dataclasses
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ctr_dagster import extraction, schemas
from ctr_dagster.attributes import ExtractorSpec, build_item_attributes
from ctr_dagster.registry import BrokenPlugin


@pytest.fixture(scope="module")
def world_tables():
    """Catalogue, oracle, published taxonomy and training table of one tiny world (no warehouse)."""
    from ctr_dagster.datagen import build_world, profile
    from ctr_dagster.datagen.vocab import ATTRIBUTES, all_values
    from ctr_dagster.testing import synthetic_training_table

    world = build_world(profile("tiny"))
    pairs = [(a, v) for a in ATTRIBUTES for v in all_values(a)]
    taxonomy = pa.table({"attribute": [a for a, _ in pairs], "value": [v for _, v in pairs]})
    return {
        "items": world.items(),
        "attributes": world.item_attributes(),
        "oracle": world.oracle_item_attributes(),
        "taxonomy": taxonomy,
        "training": synthetic_training_table("tiny"),
    }


@dataclasses.dataclass
class _Config:
    score: float = 0.9


class TitleWords:
    """Predicts every candidate value whose words all occur in the item's title; reports itself."""

    name = "title_words"
    Config = _Config
    requires = frozenset({"candidates", "interactions"})
    instances: dict = {}  # the last instance per name: what the stage handed it

    def __init__(self, config=None):
        self.config = config or _Config()
        self.inputs: dict = {}
        self.summary: dict = {}
        TitleWords.instances[self.name] = self

    def fit(self, items, attributes, ctx):
        self.inputs = dict(ctx.inputs)
        self.candidates = list(
            zip(
                ctx.inputs["candidates"]["attribute"].to_pylist(),
                ctx.inputs["candidates"]["value"].to_pylist(),
                strict=True,
            )
        )
        self.summary = {"candidates": len(self.candidates), "has_interactions": "interactions" in ctx.inputs}
        return self

    def extract(self, items):
        rows = []
        for item, title in zip(items["item_id"].to_pylist(), items["title"].to_pylist(), strict=True):
            words = set(re.findall(r"\w+", title.casefold()))
            rows += [
                (item, a, v) for a, v in self.candidates if set(re.findall(r"\w+", v.casefold())) <= words
            ]
        return pa.table(
            {
                "item_id": pa.array([r[0] for r in rows], pa.string()),
                "attribute": pa.array([r[1] for r in rows], pa.string()),
                "value": pa.array([r[2] for r in rows], pa.string()),
                "score": pa.array([self.config.score] * len(rows), pa.float32()),
            }
        )

    def report(self, directory: Path) -> dict:
        path = directory / "words.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16)
        return {"picture": path, "items_seen": 1}


class Exploding(TitleWords):
    name = "exploding"

    def fit(self, items, attributes, ctx):
        raise RuntimeError("the extractor exploded")


def test_build_item_attributes_end_to_end(world_tables, tmp_path):
    t = world_tables
    warnings: list[str] = []
    result = build_item_attributes(
        t["items"],
        t["attributes"],
        [ExtractorSpec(TitleWords), ExtractorSpec(Exploding)],
        oracle=t["oracle"],
        taxonomy=t["taxonomy"],
        training=t["training"],
        downstream_max_train_rows=5000,
        report_root=tmp_path / "reports",
        broken=[BrokenPlugin("extractor", "ghost", "ctr-ghost", "g:G", "ImportError: no ctr_ghost")],
        log=lambda _m: None,
        warn=warnings.append,
    )
    # the enriched table: every catalogue row, plus extracted values only where the catalogue has none
    table = result.table
    assert table.schema.equals(schemas.ITEM_ATTRIBUTES_ENRICHED)
    by = table["extractor"].to_pylist()
    assert by.count(extraction.CATALOGUE) == t["attributes"].num_rows
    assert by.count("title_words") > 0 and set(by) == {extraction.CATALOGUE, "title_words"}
    slots = list(zip(table["item_id"].to_pylist(), table["attribute"].to_pylist(), strict=True))
    assert len(slots) == len(set(slots))

    # what the extractor was offered: catalogue + taxonomy values (not the oracle), train interactions
    seen = TitleWords.instances["title_words"].inputs
    assert seen["candidates"].equals(extraction.taxonomy(t["attributes"], t["taxonomy"]))
    train_rows = pc.sum(pc.equal(t["training"]["split"], "train")).as_py()
    assert seen["interactions"].num_rows == train_rows

    # isolation: the exploding extractor and the broken plugin are reported, the other one counts
    assert [(r.name, r.status) for r in result.runs] == [
        ("title_words", "ok"),
        ("exploding", "failed"),
        ("ghost", "broken"),
    ]
    rows = {r["extractor"]: r for r in result.extractor_rows()}
    assert rows["exploding"]["error"] == "RuntimeError: the extractor exploded"
    assert rows["title_words"]["enriched_rows"] == by.count("title_words")
    assert rows["title_words"]["rows"] >= rows["title_words"]["enriched_rows"]
    assert rows["ghost"]["error"] == "ImportError: no ctr_ghost"
    assert any("exploding failed" in w and "Traceback" in w for w in warnings)

    # scored against the oracle: titles state many missing values, so the word match is mostly right
    assert result.evaluation_source == "oracle" and result.truth_rows > 0
    evaluation = {(e["extractor"], e["slice"]): e for e in result.evaluation}
    assert set(evaluation) == {("title_words", s) for s in extraction.SLICES}
    assert evaluation[("title_words", "overall")]["precision"] > 0.5
    assert evaluation[("title_words", "overall")]["tp"] > 0
    assert result.evaluation_table().num_rows == 3

    # downstream AUC with and without the enrichment, on the same rows
    d = result.downstream
    assert 0.5 < d["auc_catalogue"] < 1 and 0.5 < d["auc_enriched"] < 1
    assert d["auc_gain"] == pytest.approx(d["auc_enriched"] - d["auc_catalogue"])
    numbers = result.numbers()
    assert numbers["f1/title_words/overall"] == evaluation[("title_words", "overall")]["f1"]
    assert numbers["downstream/auc_gain"] == d["auc_gain"]

    # the extractor's own report: summary + report(directory), under report_root/<name>/
    (report,) = result.runs.reports().values()
    assert report.numbers == {"candidates": seen["candidates"].num_rows, "items_seen": 1}
    assert report.other == {"has_interactions": True}
    assert report.images == {"picture": tmp_path / "reports" / "title_words" / "words.png"}


def test_without_oracle_or_training_it_uses_a_holdout_and_skips_downstream(world_tables):
    t = world_tables
    warnings: list[str] = []
    result = build_item_attributes(
        t["items"], t["attributes"], [ExtractorSpec(TitleWords)], log=lambda _m: None, warn=warnings.append
    )
    assert result.evaluation_source == "holdout" and result.downstream == {}
    assert "interactions" not in TitleWords.instances["title_words"].inputs
    assert any("no training dataset" in w for w in warnings)
    assert result.runs.reports()["title_words"].images == {}  # no report folder given: summary only


def test_with_every_extractor_failing_the_stage_fails_listing_every_error(world_tables):
    t = world_tables
    broken = BrokenPlugin("extractor", "ghost", "ctr-ghost", "g:G", "ImportError: no ctr_ghost")
    with pytest.raises(RuntimeError) as info:
        build_item_attributes(
            t["items"], t["attributes"], [ExtractorSpec(Exploding)], broken=[broken], log=lambda _m: None
        )
    assert "exploding (failed): RuntimeError: the extractor exploded" in str(info.value)
    assert "ghost (broken): ImportError: no ctr_ghost" in str(info.value)


@pytest.mark.integration
def test_item_attributes_asset_shows_the_hypergraph_through_the_generic_report(
    world_tables, tmp_path, monkeypatch
):
    """HyperPAVE's graph counts and picture reach the asset's metadata only through its report; a
    failing extractor beside it is reported (table, check) without failing the asset."""
    pytest.importorskip("ctr_hyperpave")
    title_match = pytest.importorskip("ctr_title_match.extractor")
    import dagster as dg

    from assets.attributes import item_attributes
    from assets.resources import WarehouseResource

    def refuse(self, items, attributes):
        raise ValueError("title_match refuses today")

    monkeypatch.setattr(title_match.TitleMatchExtractor, "fit", refuse)
    t = world_tables
    resource = WarehouseResource(home=str(tmp_path))
    wh = resource.get()
    wh.write("raw_items", t["items"])
    wh.write("raw_item_attributes", t["attributes"])
    wh.write("oracle_item_attributes", t["oracle"])
    wh.write("raw_attribute_taxonomy", t["taxonomy"])
    wh.write("training_dataset", t["training"])
    config = {
        "extractors": ["hyperpave", "title_match"],
        "downstream": False,
        "extractor_config": {"hyperpave": {"steps": 20, "eval_every": 10}},
    }
    result = dg.materialize(
        [item_attributes],
        resources={"warehouse": resource},
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"item_attributes": {"config": config}}},
    )
    meta = result.asset_materializations_for_node("item_attributes")[0].metadata
    n_avs = extraction.taxonomy(t["attributes"], t["taxonomy"]).num_rows
    assert meta["hyperpave/hypergraph/nodes_product"].value == t["items"].num_rows
    assert meta["hyperpave/hypergraph/nodes_av"].value == n_avs
    assert meta["hyperpave/hypergraph/hyperedges_product_aspect"].value == t["items"].num_rows
    assert meta["hyperpave/hypergraph/hyperedges_also_view"].value > 0  # from the train interactions
    assert "hyperpave/valid_f1" in meta  # the fit summary travels the same way
    picture = meta["report/hyperpave"].value
    assert "![hyperpave: hypergraph/neighbourhood](data:image/png;base64," in picture
    assert "| hypergraph/nodes_av | " + str(n_avs) + " |" in picture
    png = tmp_path / "reports" / "item_attributes" / "hyperpave" / "hypergraph_neighbourhood.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "title_match refuses today" in meta["extractors"].value
    assert wh.read("item_attributes")["extractor"].to_pylist().count("hyperpave") > 0
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "title_match" in check.metadata["problems"].value
