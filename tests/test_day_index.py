"""The import day index: a partition reads only the files holding its day; files are scanned once."""

import os

from ctr_dagster.importers import day_index, parse_mapping

DAY1 = 1709251200  # 2024-03-01T00:00:00Z


def _log(path, seconds):
    rows = ["id,t,u,i,p,c"] + [f"e{n},{s},u1,i1,1,0" for n, s in enumerate(seconds)]
    path.write_text("\n".join(rows) + "\n")


def test_files_for_day_scans_each_file_once(tmp_path, monkeypatch):
    _log(tmp_path / "a.csv", [DAY1 + 10, DAY1 + 20])
    _log(tmp_path / "b.csv", [DAY1 + 86_400 + 5])
    _log(tmp_path / "c.csv", [DAY1 + 30, DAY1 + 2 * 86_400])
    mapping = parse_mapping(
        {
            "start_date": "2024-03-01",
            "tables": {
                "impressions": {
                    "files": "*.csv",
                    "ts": {"unit": "s"},
                    "defaults": {"treatment": 0, "conversion": 0},
                    "columns": {
                        "impression_id": "id",
                        "request_id": "id",
                        "ts": "t",
                        "user_id": "u",
                        "item_id": "i",
                        "position": "p",
                        "click": "c",
                    },
                }
            },
        },
        base=tmp_path,
    )
    scanned = []
    real_scan = day_index.scan_file
    monkeypatch.setattr(day_index, "scan_file", lambda m, f: scanned.append(f.name) or real_scan(m, f))
    index = tmp_path / "state" / "index.json"

    assert [f.name for f in day_index.files_for_day(mapping, "2024-03-01", index)] == ["a.csv", "c.csv"]
    assert [f.name for f in day_index.files_for_day(mapping, "2024-03-02", index)] == ["b.csv"]
    assert [f.name for f in day_index.files_for_day(mapping, "2024-03-03", index)] == ["c.csv"]
    assert sorted(scanned) == ["a.csv", "b.csv", "c.csv"]  # one scan per file, not per partition

    _log(tmp_path / "b.csv", [DAY1 + 3 * 86_400])  # the file changes: rescanned, new days picked up
    os.utime(tmp_path / "b.csv", ns=(1, 1))
    assert [f.name for f in day_index.files_for_day(mapping, "2024-03-04", index)] == ["b.csv"]
    assert day_index.files_for_day(mapping, "2024-03-02", index) == []
    assert sorted(scanned) == ["a.csv", "b.csv", "b.csv", "c.csv"]
