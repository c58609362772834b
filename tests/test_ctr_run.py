"""`ctr run --mapping`: three public-log formats, written by the tests, from files to a leaderboard.

Each log is imported through a mapping YAML only (no prep script), end to end in a subprocess as a
user would run it: every shipped model must be ranked, imported data has no oracle (and the
leaderboard says why), the days are the days in the data, and every row read is accounted for.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODELS = {"lightgbm", "lightgbm_emb", "din", "din_student", "din_student_distilled", "baseline_lr"}


def _standin():
    spec = importlib.util.spec_from_file_location("make_standin", ROOT / "examples/ratings/make_standin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {
        **os.environ,
        "CTR_HOME": str(tmp_path / "ctr"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        **(env or {}),
    }
    if "CTR_SOURCE" not in (env or {}):
        environ.pop("CTR_SOURCE", None)  # the caller's shell must not change what is tested
    return subprocess.run(
        [sys.executable, "-m", "ctr_dagster.cli", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=900,
    )


def run_json(tmp_path: Path, mapping: Path) -> dict:
    out = run_cli(tmp_path, "run", "--mapping", str(mapping), "--json")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return json.loads(out.stdout[out.stdout.index("{\n") :])


def assert_full_leaderboard(summary: dict, days: set[str]) -> None:
    evaluation = summary["evaluation"]
    ranked = {r["name"] for r in evaluation["models"]}
    assert ranked >= SHIPPED_MODELS, evaluation["unranked"]
    assert evaluation["oracle"] is None and "no oracle" in evaluation["oracle_note"]
    assert evaluation["profile"] == "import"
    # these logs have no randomized treatment: the uplift models are skipped and say why, not failed
    uplift = evaluation["uplift"]
    assert uplift["unranked"] and {u["status"] for u in uplift["unranked"]} == {"skipped"}, uplift["unranked"]
    assert summary["days"] == len(days)
    assert (
        summary["rows_read"]
        == summary["clean_impressions"] + summary["quarantined"] + summary["out_of_range"]
    )
    assert "MISMATCH" not in summary["rows_accounted"]
    split = summary["training_rows"]
    assert min(split.values()) > 0


# -- the three formats --------------------------------------------------------------------------------
def write_ratings(folder: Path) -> tuple[Path, set[str]]:
    """MovieLens-style ratings in RecBole's atomic files, with the shipped example mapping."""
    _standin().write_standin(folder, users=150, items=200, ratings=3_000, days=10)
    mapping = folder / "mapping.yaml"
    mapping.write_text((ROOT / "examples/ratings/mapping.yaml").read_text())
    stamps = [int(line.split("\t")[3]) for line in (folder / "ml-100k.inter").read_text().splitlines()[1:]]
    return mapping, {dt.datetime.fromtimestamp(t, dt.UTC).date().isoformat() for t in stamps}


def write_ad_log(folder: Path, rows: int = 900) -> tuple[Path, set[str]]:
    """A Taobao display-ad style sample: `clk` label, datetime strings, missing values and the
    user's earlier clicks as a `^`-separated list in each row."""
    rng = np.random.default_rng(3)
    start = dt.datetime(2017, 5, 6, tzinfo=dt.UTC)
    ads = np.arange(500, 560)
    taste = rng.normal(0, 1.2, len(ads))
    lines = ["user,time_stamp,adgroup_id,cate_id,brand,price,pid,clk,hist_adgroups"]
    history: dict[int, list[int]] = {}
    days = set()
    for i in range(rows):
        when = start + dt.timedelta(seconds=int(i * 8 * 86_400 / rows + rng.integers(0, 60)))
        days.add(when.date().isoformat())
        user = int(rng.integers(1, 80))
        ad = int(rng.integers(0, len(ads)))
        clicked = int(rng.random() < 1 / (1 + np.exp(-(taste[ad] - 1.0))))
        brand = "" if rng.random() < 0.2 else f"b{ad % 7}"
        price = "" if rng.random() < 0.1 else f"{(ad % 13) * 9.5:.2f}"
        hist = "^".join(str(a) for a in history.get(user, [])[-8:])
        lines.append(
            f"{'' if i == 5 else user},{when:%Y-%m-%d %H:%M:%S},{ads[ad]},c{ad % 5},{brand},{price},"
            f"430548_1007,{clicked},{hist}"
        )
        if clicked:
            history.setdefault(user, []).append(int(ads[ad]))
    (folder / "raw_sample.csv").write_text("\n".join(lines) + "\n")
    mapping = folder / "mapping.yaml"
    mapping.write_text(
        """
tables:
  impressions:
    files: raw_sample.csv
    columns:
      user_id: user
      item_id: adgroup_id
      ts: time_stamp
      click: clk
      device: pid
      history_item_ids: {expr: "string_split(CAST(hist_adgroups AS VARCHAR), '^')"}
    parse:
      ts: {format: "%Y-%m-%d %H:%M:%S"}
    defaults: {position: 1, treatment: 0, conversion: 0}
  items:
    from: impressions
    columns:
      item_id: adgroup_id
      category: cate_id
      title: {expr: "coalesce(CAST(brand AS VARCHAR), 'no brand')"}
      price: {expr: "coalesce(price, 0)"}
  users:
    from: impressions
    columns: {user_id: user}
"""
    )
    return mapping, days


def write_news_log(folder: Path, rows: int = 1_200) -> tuple[Path, set[str]]:
    """A news impression log (ms timestamps, slot positions, an impression id, clicks) and its
    news table (id, category, title), as MIND-style sets ship them."""
    rng = np.random.default_rng(5)
    start_ms = int(dt.datetime(2019, 11, 11, tzinfo=dt.UTC).timestamp() * 1000)
    appeal = rng.normal(0, 1, 90)
    lines = ["ImpressionID,UserID,Time,NewsID,Slot,Clicked"]
    days = set()
    for i in range(rows):
        ms = start_ms + int(i * 4 * 86_400_000 / rows) + int(rng.integers(0, 1000))
        days.add(dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date().isoformat())
        slot = int(rng.integers(1, 11))
        news = int(rng.integers(0, 90))
        clicked = int(rng.random() < 1 / (1 + np.exp(-(appeal[news] - 0.3 * slot))))
        lines.append(f"imp{i},U{int(rng.integers(0, 120))},{ms},N{news},{slot},{clicked}")
    (folder / "behaviors.csv").write_text("\n".join(lines) + "\n")
    topics = ["sports", "finance", "lifestyle", "news", "weather"]
    news = ["NewsID\tCategory\tTitle"] + [
        f"N{n}\t{topics[n % 5]}\t{topics[n % 5].title()} story number {n}" for n in range(90)
    ]
    (folder / "news.tsv").write_text("\n".join(news) + "\n")
    mapping = folder / "mapping.yaml"
    mapping.write_text(
        """
tables:
  impressions:
    files: behaviors.csv
    columns: {impression_id: ImpressionID, user_id: UserID, ts: Time, item_id: NewsID, position: Slot, click: Clicked}
    parse: {ts: {unit: ms}}
    defaults: {treatment: 0, conversion: 0}
  items:
    files: news.tsv
    csv: {delimiter: "\\t"}
    columns: {item_id: NewsID, category: Category, title: Title}
    defaults: {price: 0, first_seen: 2019-01-01}
  users:
    from: impressions
    columns: {user_id: UserID}
"""
    )
    return mapping, days


# The ratings format is run by test_ctr_run_skips_bad_files_and_accounts_for_every_row (its good file
# plus bad ones, with the same full-leaderboard assertions), so it is not run a second time here.
@pytest.mark.parametrize("writer", [write_ad_log, write_news_log])
def test_ctr_run_takes_each_log_format_to_a_full_leaderboard(tmp_path, writer):
    data = tmp_path / "data"
    data.mkdir()
    mapping, days = writer(data)
    summary = run_json(tmp_path, mapping)
    assert_full_leaderboard(summary, days)
    if writer is write_ad_log:
        assert summary["quarantined"] >= 1  # the row without a user


def test_ctr_run_text_output_names_the_mapping_and_explains_the_missing_ceiling(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    mapping, _ = write_news_log(data, rows=600)
    # the text report is what is tested here (every model on this format: the test above)
    out = run_cli(tmp_path, "run", "--mapping", str(mapping), env={"CTR_MODELS": "baseline_lr,lightgbm"})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    header = next(line for line in out.stdout.splitlines() if line.startswith("leaderboard ("))
    assert f"data mapping {mapping.resolve()}" in header and "profile" not in header
    assert "no oracle" in out.stdout and "oracle (true p_click)" not in out.stdout
    assert "seconds_per_day" in out.stdout


def test_demo_refuses_the_import_source_and_points_to_ctr_run(tmp_path):
    out = run_cli(tmp_path, "demo", env={"CTR_SOURCE": "import", "CTR_MAPPING": str(tmp_path / "m.yaml")})
    assert out.returncode == 2
    assert "ctr run --mapping" in out.stderr


def test_ctr_run_reports_a_missing_mapping_file(tmp_path):
    out = run_cli(tmp_path, "run", "--mapping", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_ctr_run_skips_bad_files_and_accounts_for_every_row(tmp_path):
    """Bad files beside a good one, a NUL cell, an undecodable cell and a row dated 2099: the good
    rows import, each bad file is reported, and rows read = clean + quarantined + out of range."""
    data = tmp_path / "data"
    data.mkdir()
    mapping, days = write_ratings(data)
    text = mapping.read_text().replace("files: ml-100k.inter", 'files: "*.inter"')
    mapping.write_text(text)
    good = (data / "ml-100k.inter").read_bytes().splitlines(keepends=True)
    header, first = good[0], good[1].split(b"\t")
    extra = [
        b"\t".join([b"7\x00", first[1], b"5", first[3]]),  # NUL inside a cell
        b"\t".join([b"8", b"\xff\xfe", b"4", first[3]]),  # not UTF-8
        b"\t".join([b"9", first[1], b"4", b"4102444800\n"]),  # 2100-01-01: after today
    ]
    (data / "ml-100k.inter").write_bytes(b"".join([*good, *extra]))
    (data / "empty.inter").write_bytes(b"")
    (data / "header_only.inter").write_bytes(header)
    (data / "binary.inter").write_bytes(bytes(range(256)) * 8)
    summary = run_json(tmp_path, mapping)
    skipped = "\n".join(summary["skipped_files"])
    for name in ("empty.inter", "header_only.inter", "binary.inter"):
        assert name in skipped
    assert summary["out_of_range"] == 1
    assert summary["rows_read"] == len(good) - 1 + len(extra)
    assert summary["quarantined"] >= 2
    assert_full_leaderboard(summary, days)


def test_the_failure_summary_gives_the_steps_own_error():
    """Not Dagster's wrapper ("Error occurred while executing op ..."), but the cause."""
    import dagster as dg

    from assets.run import _failures

    @dg.asset
    def broken_step() -> None:
        raise LookupError("oracle_impressions has no score for 3 of 3 test rows")

    result = dg.materialize([broken_step], raise_on_error=False)
    assert _failures(result) == [
        "broken_step: LookupError: oracle_impressions has no score for 3 of 3 test rows"
    ]
