"""Sensors: pick up new files dropped in the import inbox and ingest the days they cover."""

import json

import dagster as dg

from assets.resources import settings

INGEST_ASSETS = ["raw_impressions", "oracle_impressions", "clean_impressions", "quarantine_impressions"]
ingest_job = dg.define_asset_job("ingest_day", selection=dg.AssetSelection.assets(*INGEST_ASSETS))


@dg.sensor(job=ingest_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def inbox_sensor(context: dg.SensorEvaluationContext):
    """New or changed impression files (the mapping's `impressions.files` globs) -> one run per day they cover.

    Only meaningful with CTR_SOURCE=import; the cursor remembers (file, mtime) pairs already seen,
    so a file is ingested once and again only when it changes.
    """
    if settings().kind != "import":
        return dg.SkipReason("CTR_SOURCE is not 'import': nothing to watch")
    from ctr_dagster.importers.day_index import days_by_file

    seen: dict[str, float] = json.loads(context.cursor) if context.cursor else {}
    covered = days_by_file(settings().mapping(), settings().import_index_path())
    new = [p for p in covered if seen.get(str(p)) != p.stat().st_mtime]
    if not new:
        return dg.SkipReason(f"no new or changed files among {len(covered)} impression file(s)")
    days: set[str] = set()
    for path in new:
        days |= covered[path]
        seen[str(path)] = path.stat().st_mtime
    context.update_cursor(json.dumps(seen))
    stamp = max(seen[str(p)] for p in new)
    return [dg.RunRequest(run_key=f"{day}:{stamp}", partition_key=day) for day in sorted(days)]
