"""Sensors: pick up new files dropped in the import inbox and ingest the days they cover."""

import json

import dagster as dg

from assets.schedules import DAY_ASSETS
from ctr_dagster.settings import Settings

ingest_job = dg.define_asset_job("ingest_day", selection=dg.AssetSelection.assets(*DAY_ASSETS))


def inbox_sensor(settings: Settings) -> dg.SensorDefinition:
    """The inbox sensor of the import source `settings` names (a sensor that skips for synthetic data)."""

    @dg.sensor(
        name="inbox_sensor",
        job=ingest_job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
    )
    def _inbox(context: dg.SensorEvaluationContext):
        """New or changed impression files (the mapping's `impressions.files` globs) -> one run per day they cover.

        Only meaningful with the import source; the cursor remembers (file, mtime) pairs already seen,
        so a file is ingested once and again only when it changes.
        """
        if settings.source != "import":
            return dg.SkipReason("the source is not 'import' (CTR_SOURCE): nothing to watch")
        return _new_days(context, settings)

    return _inbox


def _new_days(context: dg.SensorEvaluationContext, settings: Settings):
    from ctr_dagster.importers.day_index import days_by_file
    from ctr_dagster.sources import Source

    seen: dict[str, float] = json.loads(context.cursor) if context.cursor else {}
    covered = days_by_file(Source(settings).mapping(), settings.ctr_home.import_index)
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
