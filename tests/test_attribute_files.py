"""`ctr attributes`: fit on one MAVE-style file, score on another's new products, on files in the
shape of real product titles (`ctr_dagster.testing.mave_files`)."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from ctr_dagster.attribute_files import AttributeFilesError, score_files
from ctr_dagster.cli import app
from ctr_dagster.testing.mave_files import write_mave_split


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return write_mave_split(tmp_path_factory.mktemp("mave"), n_train=240, n_test=90, seed=3)


@pytest.fixture(scope="module")
def scored(split):
    result = CliRunner().invoke(
        app,
        [
            "attributes",
            "--train",
            str(split.train),
            "--test",
            str(split.test),
            "--taxonomy",
            str(split.taxonomy),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _row(doc, extractor, slice_name):
    return next(r for r in doc["evaluation"] if r["extractor"] == extractor and r["slice"] == slice_name)


def test_every_shipped_extractor_is_scored_with_intervals(scored):
    names = {r["extractor"] for r in scored["evaluation"]}
    assert {"hyperpave", "hyperpave_text", "title_match"} <= names
    for name in names:
        for s in ("overall", "seen", "unseen"):
            row = _row(scored, name, s)
            assert row["f1_low"] <= row["f1"] <= row["f1_high"]
    assert scored["counts"]["test_negatives"] > 0 and scored["counts"]["train_negatives"] > 0
    assert scored["counts"]["test_values_unseen_in_train"] > 0


def test_baselines_behave_as_their_definitions_say(scored):
    assert _row(scored, "title_match", "unseen")["f1"] == 0.0  # a dictionary of train values
    assert _row(scored, "title_match", "seen")["precision"] > 0.9
    assert _row(scored, "hyperpave_text", "unseen")["recall"] > 0.5  # the taxonomy makes them candidates
    judged = {c["extractor"] for c in scored["vs_baseline"]}
    assert judged == {"hyperpave"}  # baselines are the reference, not judged


def test_hyperpave_abstains_on_attributes_a_product_does_not_state(scored):
    no_value = _row(scored, "hyperpave", "no_value")
    assert no_value["true"] > 0
    assert no_value["abstained"] >= 0.5
    assert _row(scored, "hyperpave", "overall")["unjudged"] == 0  # it only answers labelled attributes here


def test_without_a_taxonomy_unseen_values_cannot_be_found_and_it_says_so(split):
    scores = score_files(
        [split.train],
        [split.test],
        extractors=["hyperpave_text", "title_match"],
        log=lambda m: None,
        n_boot=50,
    )
    for row in scores.rows:
        if row["slice"] == "unseen":
            assert row["tp"] == 0
    assert any("no taxonomy was given" in n for n in scores.notes)


def test_a_product_in_both_files_is_refused(split, tmp_path):
    both = tmp_path / "test.jsonl"
    shutil.copy(split.test, both)
    with both.open("a") as out, split.train.open() as train:
        out.write(train.readline())
    with pytest.raises(AttributeFilesError, match="in both the train and the test file"):
        score_files([split.train], [both], extractors=["title_match"], log=lambda m: None)
    result = CliRunner().invoke(
        app, ["attributes", "--train", str(split.train), "--test", str(both), "-e", "title_match"]
    )
    assert result.exit_code == 2 and "in both" in result.output


def test_bad_lines_are_quarantined_and_named(split, tmp_path):
    broken = tmp_path / "test.jsonl"
    shutil.copy(split.test, broken)
    with broken.open("a") as out:
        out.write("{not json\n")
    lines = []
    scores = score_files([split.train], [broken], extractors=["title_match"], log=lines.append, n_boot=50)
    assert scores.counts["test_quarantined"] == 1
    assert any(str(broken) in line and "line" in line for line in lines)
