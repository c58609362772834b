"""What the browser test checks on each page after "Materialize all" (issue: the UI tells the truth).

One function per point a new user would check, each reading the page itself (not the JSON behind it)
and leaving a numbered screenshot in the artifacts folder:

* `check_clean_partition` - a clean partition shows its own counts, consistent with its checks;
* `check_leaderboard` - the first tables and the ROC thumbnail are drawn without a click, and fit;
* `check_gate` - the gate's first view says who, what and why (a first promotion says so);
* `check_registry` - the registry names real asset keys and leaves empty errors empty;
* `check_launchpad_and_staleness` - launchpad fields carry descriptions; a retrained model marks
  `evaluation` and `champion` unsynced, and the evaluation's popover names the model that changed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from tests.browser_support import (
    ASSETS_QUERY,
    FAILED_RUN_STATUSES,
    TERMINAL_RUN_STATUSES,
    DagsterDev,
    failure_report,
    snapshot,
)

UI_TIMEOUT_MS = 60_000
STALE_QUERY = """
query Stale($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode { staleStatus staleCauses { key { path } dependency { path } reason category } }
  }
}
"""
RUN_CONFIG_QUERY = (
    "query RunConfig($runId: ID!) { runOrError(runId: $runId) { ... on Run { runConfigYaml } } }"
)
RETRAIN_TIMEOUT_S = 5 * 60
Log = Callable[[str], None]


def _shot(page, artifacts: Path, name: str, log: Log) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"))
    log(f"screenshot {name}.png")


def _metadata_row(page, key: str):
    """The Overview's metadata row whose key cell is `key`."""
    from playwright.sync_api import expect

    cell = page.get_by_role("cell", name=key, exact=True).first
    expect(cell).to_be_visible(timeout=UI_TIMEOUT_MS)
    return page.get_by_role("row").filter(has=cell).first


def _metadata_value(page, key: str) -> str:
    return _metadata_row(page, key).get_by_role("cell").last.inner_text().strip()


def check_clean_partition(page, ui: DagsterDev, artifacts: Path, log: Log) -> None:
    """Point 1: the clean partition's own counts (in = clean + quarantined), its two checks passed,
    and no raw-side report on it."""
    from playwright.sync_api import expect

    page.goto(f"{ui.url}/assets/clean_impressions")
    counts = {
        k: int(_metadata_value(page, k).replace(",", ""))
        for k in ("rows_in", "rows_clean", "rows_quarantined")
    }
    assert counts["rows_in"] == counts["rows_clean"] + counts["rows_quarantined"], counts
    metadata = page.get_by_role("row").filter(has=page.get_by_role("cell", name="rows_in", exact=True)).first
    metadata.scroll_into_view_if_needed()
    assert page.get_by_role("cell", name="table", exact=True).count() == 0, (
        "a raw-side report on clean_impressions"
    )
    _shot(page, artifacts, "07-clean-partition-counts", log)
    page.goto(f"{ui.url}/assets/clean_impressions?view=checks")
    for check in ("rows_reconcile", "quality_suite"):
        # the list entry reads "<name> <name> <status>" (its title, then the check's name and status)
        entry = (
            page.locator("div").filter(has_text=re.compile(rf"^\s*{check}\s*{check}\s*[A-Z][a-z]+\s*$")).last
        )
        expect(entry).to_contain_text("Succeeded", timeout=UI_TIMEOUT_MS)
    _shot(page, artifacts, "08-clean-partition-checks", log)
    log(f"clean_impressions: {counts}, rows_reconcile and quality_suite succeeded")


def check_leaderboard(page, ui: DagsterDev, artifacts: Path, log: Log, expected: tuple[str, ...]) -> None:
    """Point 2: the leaderboard's first tables are drawn on the first view (no "[Show Markdown]") and
    end inside the page's main column; the ROC thumbnail is an image already loaded."""
    from playwright.sync_api import expect

    page.goto(f"{ui.url}/assets/evaluation")
    column_right = None
    for key in ("leaderboard", "leaderboard_quality"):
        row = _metadata_row(page, key)
        assert row.get_by_text("[Show Markdown]").count() == 0, f"{key} is behind a click"
        table = row.locator("table").first
        expect(table).to_be_visible(timeout=UI_TIMEOUT_MS)
        for text in expected:
            expect(table.get_by_text(text).first).to_be_visible()
        # the main column ends where the metadata filter's "Plots" toggle ends
        column_right = column_right or _right(page.get_by_role("button", name="Plots").first)
        assert _right(table) <= column_right + 2, (
            f"{key} runs past the main column ({_right(table)} > {column_right})"
        )
    image = _metadata_row(page, "roc_at_a_glance").locator("img").first
    expect(image).to_be_visible()
    assert image.evaluate("img => img.complete && img.naturalWidth > 0"), "the ROC thumbnail did not load"
    _metadata_row(page, "leaderboard").scroll_into_view_if_needed()
    _shot(page, artifacts, "05-evaluation-first-view", log)
    _metadata_row(page, "roc_at_a_glance").scroll_into_view_if_needed()
    _shot(page, artifacts, "06-evaluation-roc-thumbnail", log)
    log(f"leaderboard tables drawn inline, within {column_right:.0f} px; ROC thumbnail loaded")


def _right(locator) -> float:
    box = locator.bounding_box()
    assert box is not None, f"{locator} has no box"
    return box["x"] + box["width"]


def check_gate(page, ui: DagsterDev, artifacts: Path, log: Log) -> None:
    """Point 3: the gate check's first view: a first promotion says so, names the candidate, lists
    every criterion with passed / failed / n/a, and the reasons as text (no click)."""
    from playwright.sync_api import expect

    page.goto(f"{ui.url}/assets/evaluation?view=checks")
    main = page.locator("main") if page.locator("main").count() else page.locator("body")
    expect(main.get_by_text("first promotion:").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    for key in ("candidate", "champion", "criteria", "reasons", "judged_evaluation"):
        expect(page.get_by_text(key, exact=True).first).to_be_visible()
    criteria = (
        page.get_by_role("row").filter(has=page.get_by_text("criteria", exact=True)).first.locator("table")
    )
    expect(criteria.get_by_text("AUC floor").first).to_be_visible()
    expect(criteria.get_by_text("passed").first).to_be_visible()
    assert page.get_by_text("[Show Markdown]").count() == 0, "part of the gate's verdict is behind a click"
    _shot(page, artifacts, "09-gate-first-view", log)
    log("gate: first promotion named, criteria table and reasons drawn without a click")


def check_registry(page, ui: DagsterDev, artifacts: Path, log: Log) -> None:
    """Point 6: every asset_key the registry shows is a real asset; no cell reads "None"."""
    from playwright.sync_api import expect

    real = {"/".join(n["assetKey"]["path"]) for n in ui.graphql(ASSETS_QUERY)["assetNodes"]}
    page.goto(f"{ui.url}/assets/plugin_registry")
    table = _metadata_row(page, "plugins").locator("table").first
    expect(table).to_be_visible(timeout=UI_TIMEOUT_MS)
    header = [c.strip() for c in table.locator("thead th").all_inner_texts()]
    rows = [[c.strip() for c in r.locator("td").all_inner_texts()] for r in table.locator("tbody tr").all()]
    assert rows and "asset_key" in header and "error" in header, header
    keys = {r[header.index("asset_key")] for r in rows}
    assert keys <= real, f"registry names keys that are not assets: {sorted(keys - real)}"
    assert not any("None" in cell for r in rows for cell in r), "a registry cell reads None"
    assert all(r[header.index("error")] == "" for r in rows if r[header.index("status")] == "ok")
    _shot(page, artifacts, "10-plugin-registry", log)
    log(f"registry: {len(rows)} plugins, asset keys {sorted(keys)} all real")


def check_launchpad_and_staleness(
    page,
    ui: DagsterDev,
    artifacts: Path,
    log: Log,
    model: str,
    field: str,
    description: str,
    edit: tuple[str, str],
) -> None:
    """Points 4 and 5: the model's launchpad explains `field` (its author's description); editing
    `edit` = (field, new value) and materializing retrains the model, after which `evaluation` and
    `champion` show as unsynced and the evaluation's popover names the model."""
    from playwright.sync_api import expect

    # in sync after "Materialize all": nothing stale yet (the API's answer; the page's tag is drawn lazily)
    for key in ("evaluation", "champion"):
        status, causes = _stale(ui, key)
        assert status == "FRESH", f"{key} is {status} before any retrain: {causes}"
    page.goto(f"{ui.url}/assets/models/{model}")
    materialize = page.get_by_role("button", name="Materialize").first  # "<icon> Materialize"
    expect(materialize).to_be_enabled(timeout=UI_TIMEOUT_MS)
    page.locator("button:right-of(:text('Materialize'))").first.click()  # the button's dropdown
    page.get_by_text("Open launchpad").first.click()
    # The launchpad is the page's only CodeMirror editor: its lines are found page-wide, not inside
    # a role=dialog element (in one CI run a second overlay hid the dialog role while the editor showed).
    line = page.locator(".CodeMirror-line").filter(has_text=f"{field}:").first
    try:
        expect(line).to_be_visible(timeout=UI_TIMEOUT_MS)
    except AssertionError:
        _shot(page, artifacts, "11-launchpad-missing-line", log)
        dialogs = page.get_by_role("dialog")
        log(f"dialogs open: {[dialogs.nth(i).inner_text()[:80] for i in range(dialogs.count())]}")
        log(f"editor lines: {page.locator('.CodeMirror-line').all_inner_texts()}")
        raise
    line.click()  # the cursor on the field: the help panel shows the field's type and description
    expect(page.get_by_text(description).first).to_be_visible(timeout=UI_TIMEOUT_MS)
    _shot(page, artifacts, "11-launchpad-descriptions", log)
    name, value = edit
    target = page.locator(".CodeMirror-line").filter(has_text=f"{name}:").first
    target.click()
    page.keyboard.press("End")
    page.keyboard.press("Shift+Home")
    page.keyboard.type(f"{name}: {value}")
    expect(page.locator(".CodeMirror-line").filter(has_text=f"{name}: {value}").first).to_be_visible()
    before = {r["runId"] for r in snapshot(ui)[1]}
    page.get_by_role("button", name="Materialize").last.click()  # the launchpad's, drawn after the page's
    log(f"launched {model} from the launchpad with {name}: {value}")
    run = _wait_for_new_run(ui, before, log)
    config = ui.graphql(RUN_CONFIG_QUERY, {"runId": run["runId"]})["runOrError"]["runConfigYaml"]
    assert f"{name}: {value}" in config, f"the run did not get the edited config:\n{config}"
    log(f"{model} retrained (run {run['runId'][:8]})")

    page.goto(f"{ui.url}/assets/evaluation")
    tag = page.get_by_text("Unsynced").first
    expect(tag).to_be_visible(timeout=UI_TIMEOUT_MS)
    tag.hover()
    popover = page.get_by_text("has a new data version").first
    expect(popover).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.get_by_text(f"models / {model}").first).to_be_visible()
    _shot(page, artifacts, "12-evaluation-unsynced", log)
    page.goto(f"{ui.url}/assets/champion")
    expect(page.get_by_text("Unsynced").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    for key in ("evaluation", "champion"):  # the page agrees with the API, which names the model
        status, causes = _stale(ui, key)
        assert status == "STALE" and any(c.startswith(f"models/{model} (") for c in causes), (
            key,
            status,
            causes,
        )
    _shot(page, artifacts, "13-champion-unsynced", log)
    log(f"evaluation and champion unsynced after the {model} retrain; the popover names models/{model}")


def _stale(ui: DagsterDev, key: str) -> tuple[str, list[str]]:
    """(Dagster's stale status of asset `key`, its causes: the upstream asset each names, else the
    asset itself, with the reason, so a failing assertion says why)."""
    node = ui.graphql(STALE_QUERY, {"path": key.split("/")})["assetNodeOrError"]
    causes = [
        "/".join((c.get("dependency") or c["key"])["path"]) + f" ({c['category']}: {c['reason']})"
        for c in node["staleCauses"]
    ]
    return node["staleStatus"], causes


def _wait_for_new_run(ui: DagsterDev, before: set[str], log: Log) -> dict:
    deadline = time.monotonic() + RETRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        new = [r for r in snapshot(ui)[1] if r["runId"] not in before]
        if new and all(r["status"] in TERMINAL_RUN_STATUSES for r in new):
            failed = [r for r in new if r["status"] in FAILED_RUN_STATUSES]
            assert not failed, failure_report(ui, failed[0])
            return new[0]
        time.sleep(2.0)
    raise AssertionError(f"the launchpad run did not finish in {RETRAIN_TIMEOUT_S} s")
