"""The one helper that runs every plugin of a kind for a stage: isolation, uniform rows, reports."""

import dataclasses
import math
from pathlib import Path

import pytest

from ctr_dagster.contracts import contract_violations, report_violations
from ctr_dagster.plugin_runs import PluginRun, plugin_report, run_plugins, split_report
from ctr_dagster.registry import BrokenPlugin

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16  # enough for a file that claims to be a PNG


def _broken(name: str = "ghost") -> BrokenPlugin:
    return BrokenPlugin("extractor", name, "ctr-ghost", "ctr_ghost:Ghost", "ImportError: no module ctr_ghost")


def test_a_raising_plugin_is_isolated_and_reported_with_its_error():
    warnings: list[str] = []

    def good(step):
        with step.phase("fit"):
            pass
        return "vectors of good"

    def boom(step):
        with step.phase("fit"):
            raise KeyError("missing column 'title'")

    def after(step):
        return 42

    runs = run_plugins(
        "extractor",
        {"good": good, "boom": boom, "after": after},
        broken=[_broken()],
        warn=warnings.append,
    )
    assert [r.name for r in runs] == ["good", "boom", "after", "ghost"]
    assert [r.status for r in runs] == ["ok", "failed", "ok", "broken"]
    # the others' results are kept, in order, whatever failed between them
    assert [r.value for r in runs.ok] == ["vectors of good", 42]
    failed = runs.runs[1]
    assert failed.value is None and failed.error_type == "KeyError"
    assert failed.error == "KeyError: \"missing column 'title'\""
    assert "Traceback" in failed.detail and "in boom" in failed.detail
    assert "fit" in failed.phases and failed.seconds >= failed.phases["fit"]  # timed even when it raised
    assert runs.runs[0].phases.keys() == {"fit"}
    # one warning per failure, with the traceback; broken plugins are warned about at selection
    assert len(warnings) == 1 and warnings[0].startswith("extractor boom failed: KeyError")
    assert "Traceback" in warnings[0]
    # uniform rows: name under the kind's column, status, seconds, error
    rows = runs.rows()
    assert [set(r) for r in rows] == [{"extractor", "status", "seconds", "error"}] * 4
    assert rows[3] == {"extractor": "ghost", "status": "broken", "seconds": 0.0, "error": _broken().error}
    assert [r["extractor"] for r in runs.problem_rows()] == ["boom", "ghost"]
    runs.require_any_ok("stage")  # two worked: the stage goes on


def test_with_none_working_the_stage_fails_listing_every_error():
    def boom(step):
        raise RuntimeError("GPU on fire")

    runs = run_plugins("encoder", [("a", boom)], broken=[_broken("b")])
    with pytest.raises(RuntimeError) as info:
        runs.require_any_ok("item_embeddings")
    message = str(info.value)
    assert message.startswith("item_embeddings: every encoder failed or is broken")
    assert "a (failed): RuntimeError: GPU on fire" in message
    assert "b (broken): ImportError: no module ctr_ghost" in message
    run_plugins("encoder", []).require_any_ok("nothing selected")  # no plugin at all is not an error


def test_keyboard_interrupt_is_not_swallowed():
    def stop(step):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_plugins("extractor", {"stop": stop})


class _Reporting:
    def __init__(self, fail: bool = False):
        self.summary = {"steps": 7, "loss": 0.25, "trained": True, "note": "ok", "threshold": math.inf}
        self.fail = fail
        self.seen: Path | None = None

    def report(self, directory: Path) -> dict:
        if self.fail:
            raise ValueError("cannot draw")
        self.seen = directory
        (directory / "graph.png").write_bytes(PNG)
        return {"graph": directory / "graph.png", "nodes": 12, "loss": 0.5, "avs": ["colour is red"]}


def test_plugin_report_merges_summary_and_report_and_splits_by_display(tmp_path):
    plugin = _Reporting()
    report = plugin_report(plugin, tmp_path / "r" / "x")
    assert plugin.seen == tmp_path / "r" / "x"  # created for the plugin
    assert report.numbers == {"steps": 7, "loss": 0.5, "nodes": 12}  # report wins over summary
    assert report.images == {"graph": tmp_path / "r" / "x" / "graph.png"}
    assert report.other == {"trained": True, "note": "ok", "threshold": None, "avs": ["colour is red"]}
    assert report.error is None
    assert report.as_json()["graph"] == str(tmp_path / "r" / "x" / "graph.png")
    # without a directory only the summary is read
    assert plugin_report(_Reporting(), None).images == {}


def test_a_failing_report_keeps_the_plugin_result(tmp_path):
    warnings: list[str] = []

    def step(step):
        step.collect_report(_Reporting(fail=True), tmp_path)
        return "predictions"

    (run,) = run_plugins("extractor", {"r": step}, warn=warnings.append)
    assert run.ok and run.value == "predictions"
    assert run.report.error == "ValueError: cannot draw" and run.report.numbers["steps"] == 7
    assert warnings and "its report failed (ValueError: cannot draw)" in warnings[0]


def test_split_report_keeps_only_real_pictures(tmp_path):
    (tmp_path / "a.png").write_bytes(PNG)
    report = split_report(
        {"a": tmp_path / "a.png", "gone": tmp_path / "gone.png", "csv": tmp_path / "x.csv", "obj": object}
    )
    assert list(report.images) == ["a"]
    assert report.other["gone"] == str(tmp_path / "gone.png") and isinstance(report.other["obj"], str)


def test_report_violations(tmp_path):
    inside = tmp_path / "in"
    inside.mkdir()
    (inside / "p.png").write_bytes(PNG)
    (tmp_path / "outside.png").write_bytes(PNG)
    assert (
        report_violations({"n": 1, "x": 0.5, "p": inside / "p.png", "l": [1, "a"], "b": None}, inside) == []
    )
    problems = report_violations(
        {
            "bad key!": 1,
            "nan": float("nan"),
            "out": tmp_path / "outside.png",
            "missing": inside / "none.png",
            "text": inside / "notes.txt",
            "obj": object(),
        },
        inside,
    )
    assert len(problems) == 6, problems
    for needle in ("short name", "finite", "outside", "does not exist", "not a picture", "JSON-able"):
        assert any(needle in p for p in problems), (needle, problems)
    assert report_violations(["not", "a", "dict"]) == ["a report must be a dict, got list"]


def test_contract_checks_the_optional_report_member():
    class Extractor:
        name = "x"
        Config = dataclasses.make_dataclass("C", [])

        def fit(self, items, attributes):
            return self

        def extract(self, items):
            return None

    class GoodReport(Extractor):
        def report(self, directory):
            return {}

    class NoArgument(Extractor):
        def report(self):
            return {}

    class NotCallable(Extractor):
        report = {"a": 1}

    assert contract_violations("extractor", GoodReport) == []
    assert contract_violations("extractor", NoArgument) == ["report must accept report(directory) -> dict"]
    assert contract_violations("extractor", NotCallable) == [
        "report must be a method report(directory) -> dict"
    ]


def test_a_run_given_an_error_is_failed():
    assert PluginRun("c", None, error="boom").status == "failed"
    assert not PluginRun("c", None, error="boom").ok and PluginRun("d", 1).ok


def test_plugin_report_keys_never_overwrite_the_stages_metadata():
    import dagster as dg

    from assets.metadata import with_plugin_reports
    from ctr_dagster.plugin_runs import PluginReport

    engine = {"probe/text/colour": dg.MetadataValue.float(0.9), "items": dg.MetadataValue.int(10)}
    reports = {
        "probe": PluginReport(numbers={"text/colour": 0.1, "vectors": 5}),  # an encoder named "probe"
        "minilm": PluginReport(numbers={"seconds": 1.5}),
    }
    warnings: list[str] = []

    merged = with_plugin_reports(engine, "encoder", reports, warnings.append)

    assert merged["probe/text/colour"] == engine["probe/text/colour"]  # the engine's value stands
    assert merged["probe/vectors"].value == 5 and merged["minilm/seconds"].value == 1.5
    assert "report/probe" in merged and "report/minilm" in merged
    assert "probe/text/colour" in merged["report_key_clashes"].value
    assert len(warnings) == 1 and "probe/text/colour" in warnings[0]
    assert "report_key_clashes" not in with_plugin_reports(engine, "encoder", {"minilm": reports["minilm"]})
