"""Synthetic generator throughput (impressions/s) per profile."""

import sys
import time

from common import write_result


def measure(profile_name: str) -> dict[str, float]:
    from ctr_dagster.datagen import build_world, profile

    started = time.perf_counter()
    world = build_world(profile(profile_name))
    world.items()
    world.users()
    catalogue_s = time.perf_counter() - started
    rows = 0
    started = time.perf_counter()
    for day in world.dates():
        rows += world.day(day).impressions.num_rows
    days_s = time.perf_counter() - started
    return {
        "impressions": rows,
        "catalogue_s": catalogue_s,
        "impressions_s": days_s,
        "impressions_per_s": rows / days_s,
        "items": world.items().num_rows,
        "users": world.users().num_rows,
    }


def main() -> None:
    profiles = sys.argv[1:] or ["tiny", "small", "large"]
    write_result("generator", {p: measure(p) for p in profiles})


if __name__ == "__main__":
    main()
