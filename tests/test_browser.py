"""The UI end to end: `dagster dev`, "Materialize all" clicked in headless Chromium, every run succeeds,
then each page a new user checks (`tests/browser_pages.py`): the leaderboard and ROC thumbnail drawn
without a click, the gate's verdict, a clean partition's own counts, the plugin registry, launchpad
field descriptions, and `evaluation` / `champion` unsynced after a model is retrained from its launchpad.

Screenshots of each stage and the `dagster dev` log go to `$CTR_TEST_ARTIFACTS` (default
`test-artifacts/browser/`, git-ignored). Without Chromium or Playwright the test is skipped, or fails
when `CI` is set. `pytest -s -m browser` shows its progress.
"""

import contextlib
import os
import time
import urllib.error
from collections import Counter
from pathlib import Path

import pytest

from tests import browser_pages as pages
from tests.browser_support import (
    CHROMIUM_FLAGS,
    FAILED_BACKFILL_STATUSES,
    FAILED_RUN_STATUSES,
    TERMINAL_BACKFILL_STATUSES,
    TERMINAL_RUN_STATUSES,
    DagsterDev,
    chromium_path,
    failure_report,
    snapshot,
    unmaterialized_assets,
)

ROOT = Path(__file__).resolve().parents[1]

# Texts the leaderboard's first tables must show.
LEADERBOARD_EXPECTED_TEXTS = ("baseline_lr", "lightgbm", "oracle")
# The model retrained from its launchpad (fast), the field whose description the launchpad must show,
# and the edit that changes its artifact (so `evaluation` and `champion` become unsynced).
RETRAINED_MODEL = "baseline_lr"
DESCRIBED_FIELD = "smoothing"
RETRAIN_EDIT = ("epochs", "7")

RUNS_TIMEOUT_S = 30 * 60  # backfills advance on daemon ticks; a safety net, not a speed goal (2 busy cores)
POLL_S = 2.0
UI_TIMEOUT_MS = 60_000  # the code location loads in the background after the server answers

pytestmark = [pytest.mark.browser, pytest.mark.timeout(RUNS_TIMEOUT_S + 5 * 60)]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser test must run)")
    pytest.skip(reason)


def _artifacts_dir() -> Path:
    path = Path(os.environ.get("CTR_TEST_ARTIFACTS") or ROOT / "test-artifacts" / "browser")
    path.mkdir(parents=True, exist_ok=True)
    for old in [*path.glob("[0-9][0-9]-*.png"), path / "99-failure.html"]:  # only what this test writes
        old.unlink(missing_ok=True)
    return path


class Progress:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, msg: str) -> None:
        print(f"[browser {time.monotonic() - self.started:6.1f} s] {msg}", flush=True)


def _settle(page, timeout_ms: int = 10_000) -> None:
    """Let the page finish its queries (the graph draws its edges last); the UI polls, so cap the wait."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_load_state("networkidle", timeout=timeout_ms)


def _shot(page, artifacts: Path, name: str, log: Progress, full_page: bool = False) -> None:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    log(f"screenshot {path.name}")


def _community_dialog(page):
    return page.get_by_role("dialog").filter(has_text="Join the Dagster community")


def _skip_community_dialog(page, log: Progress, wait_ms: int = 5000) -> None:
    """A fresh DAGSTER_HOME shows the first-run "Join the Dagster community" dialog ~1 s after the
    first page renders: Skip it. A handler also Skips it should it show up later, before any action."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    def skip(dialog) -> None:
        dialog.get_by_role("button", name="Skip", exact=True).click()
        log('dismissed the "Join the Dagster community" dialog (Skip)')

    dialog = _community_dialog(page)
    try:
        dialog.wait_for(timeout=wait_ms)
    except PlaywrightTimeout:
        log("no first-run dialog")
    else:
        skip(dialog)
        dialog.wait_for(state="hidden")
    page.add_locator_handler(dialog, skip)


def _materialize_all(page, ui: DagsterDev, artifacts: Path, log: Progress) -> None:
    from playwright.sync_api import expect

    page.goto(f"{ui.url}/asset-groups")
    button = page.get_by_role("button", name="Materialize all")  # "materialization Materialize all…"
    expect(button).to_be_enabled(timeout=UI_TIMEOUT_MS)
    _skip_community_dialog(page, log)
    _settle(page)
    _shot(page, artifacts, "01-asset-graph", log)
    button.click()
    # Partitioned assets in the selection: a launch dialog asks which partitions.
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    dialog.wait_for(timeout=UI_TIMEOUT_MS)
    dialog.get_by_role("button", name="All", exact=True).click()
    launch = dialog.get_by_role("button", name="Launch backfill")
    expect(launch).to_be_enabled(timeout=UI_TIMEOUT_MS)
    expect(dialog).not_to_contain_text("0 partitions")
    _shot(page, artifacts, "02-launch-dialog", log)
    log("launch dialog: " + " | ".join(dialog.inner_text().split("\n")[:4]))
    launch.click()
    expect(dialog).to_be_hidden(timeout=UI_TIMEOUT_MS)
    page.wait_for_timeout(1000)  # let the "backfill created" toast render
    _shot(page, artifacts, "03-after-launch", log)


def _wait_for_runs(ui: DagsterDev, log: Progress) -> tuple[list[dict], list[dict]]:
    """Poll until every backfill and run is finished; fail at the first failed one, with its errors."""
    deadline = time.monotonic() + RUNS_TIMEOUT_S
    last, last_print, errors = "", 0.0, 0
    while True:
        try:
            backfills, runs = snapshot(ui)
            errors = 0
        except (OSError, urllib.error.URLError) as exc:  # a webserver busy with 6 runs on 2 cores
            errors += 1
            if ui.proc is None or ui.proc.poll() is not None or errors > 5:
                raise AssertionError(
                    f"GraphQL unreachable ({exc}); dagster dev log:\n{ui.log_tail()}"
                ) from exc
            log(f"GraphQL: {exc} (retrying)")
            time.sleep(POLL_S)
            continue
        failed = [r for r in runs if r["status"] in FAILED_RUN_STATUSES]
        if failed:
            reports = "\n".join(failure_report(ui, r) for r in failed[:3])
            raise AssertionError(f"{len(failed)} of {len(runs)} runs did not succeed:\n{reports}")
        bad = [b for b in backfills if b["status"] in FAILED_BACKFILL_STATUSES]
        assert not bad, "backfill failed: " + "; ".join(
            f"{b['id']} {b['status']} {(b.get('error') or {}).get('message', '')}" for b in bad
        )
        statuses = Counter(r["status"] for r in runs)
        summary = ", ".join(f"backfill {b['id']} {b['status']}" for b in backfills) or "no backfill"
        summary += "; runs: " + (", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "none")
        now = time.monotonic()
        if summary != last or now - last_print > 30:
            log(summary)
            last, last_print = summary, now
        done = (backfills or runs) and (
            all(b["status"] in TERMINAL_BACKFILL_STATUSES for b in backfills)
            and all(r["status"] in TERMINAL_RUN_STATUSES for r in runs)
        )
        if done:
            return backfills, runs
        if now > deadline:
            raise AssertionError(f"runs not finished after {RUNS_TIMEOUT_S} s: {summary}")
        time.sleep(POLL_S)


def _described_field() -> tuple[str, str]:
    """(field, the description its author wrote) of the retrained model's Config, as the launchpad shows it."""
    from ctr_dagster.config_docs import field_descriptions
    from ctr_dagster.registry import default_registry

    plugin = next(p for p in default_registry().good("model") if p.name == RETRAINED_MODEL)
    return DESCRIBED_FIELD, field_descriptions(plugin.cls.Config)[DESCRIBED_FIELD]


def test_materialize_all_in_the_ui(tmp_path):
    exe = chromium_path()
    if exe is None:
        _unavailable("chromium is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")

    artifacts = _artifacts_dir()
    log = Progress()
    log(f"artifacts (screenshots, dagster.log): {artifacts}")
    with DagsterDev(ROOT, artifacts / "dagster.log") as ui:
        log(f"dagster dev on {ui.url} serving after {ui.wait_until_serving():.1f} s")
        with sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                tmp_path / "chromium-profile",  # a fresh --user-data-dir
                executable_path=exe,
                args=CHROMIUM_FLAGS,
                headless=True,
                viewport={"width": 1600, "height": 1000},
            )
            page = browser.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            try:
                _materialize_all(page, ui, artifacts, log)
                backfills, runs = _wait_for_runs(ui, log)
                log(f"all {len(runs)} runs succeeded")
                page.goto(f"{ui.url}/runs/b/{backfills[0]['id']}" if backfills else f"{ui.url}/runs")
                _settle(page)
                _shot(page, artifacts, "04-runs-finished", log)
                missing = unmaterialized_assets(ui)
                assert not missing, f"runs succeeded but these were not materialized: {missing}"
                # what a new user checks on each page (issue "the UI tells the truth at a glance")
                pages.check_leaderboard(page, ui, artifacts, log, LEADERBOARD_EXPECTED_TEXTS)
                pages.check_gate(page, ui, artifacts, log)
                pages.check_clean_partition(page, ui, artifacts, log)
                pages.check_registry(page, ui, artifacts, log)
                pages.check_launchpad_and_staleness(
                    page, ui, artifacts, log, RETRAINED_MODEL, *_described_field(), edit=RETRAIN_EDIT
                )
            except BaseException:
                try:
                    _shot(page, artifacts, "99-failure", log, full_page=True)
                    (artifacts / "99-failure.html").write_text(page.content())
                except Exception as exc:
                    log(f"no failure screenshot: {exc}")
                raise
            finally:
                browser.close()
    log(f"done; artifacts in {artifacts}")
