"""Small helpers that turn engine results into Dagster metadata (the only Dagster-aware formatting)."""

from collections.abc import Mapping, Sequence

import dagster as dg

from ctr_dagster.column_docs import COLUMN_DOCS


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "_(none)_"
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        # an absent value is an empty cell, never the text "None"
        cells = [_cell(row.get(c)).replace("|", "\\|").replace("\n", " ") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def inline_table(
    rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None
) -> dg.MetadataValue:
    """`rows` as Dagster table metadata: the UI draws it as a table on the asset's first view.

    Why not markdown: the UI renders a markdown entry inline only while it is under 1,000 characters
    and hides longer ones behind "[Show Markdown]"; a table entry is always drawn. Cells are text, as
    in `markdown_table` (an absent value is an empty cell, never "None").
    """
    columns = list(columns or (rows[0].keys() if rows else []))
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: _cell(r.get(c)) for c in columns}) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns]),
    )


def first_view_table(
    rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None
) -> dg.MetadataValue:
    """`rows` drawn on the asset's first view in the narrowest form the UI allows: a markdown table
    (proportional font) while it is under the UI's inline limit, else `inline_table`."""
    from ctr_dagster.reports import INLINE_MARKDOWN_LIMIT

    text = markdown_table(rows, columns)
    return dg.MetadataValue.md(text) if len(text) < INLINE_MARKDOWN_LIMIT else inline_table(rows, columns)


def table_summary(table, path: str | None = None) -> dict[str, dg.MetadataValue]:
    """Row count, schema and (where known) the Parquet file: on every asset."""
    meta: dict[str, dg.MetadataValue] = {
        "dagster/row_count": dg.MetadataValue.int(table.num_rows),
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn(f.name, str(f.type), description=COLUMN_DOCS.get(f.name)) for f in table.schema
            ]
        ),
    }
    if path:
        meta["path"] = dg.MetadataValue.path(path)
    return meta


def numbers(values: Mapping[str, float | int]) -> dict[str, dg.MetadataValue]:
    return {
        k: dg.MetadataValue.int(v) if isinstance(v, int) else dg.MetadataValue.float(float(v))
        for k, v in values.items()
    }


def plugin_reports(kind: str, reports: Mapping[str, object]) -> dict[str, dg.MetadataValue]:
    """Every plugin's own report (`ctr_dagster.plugin_runs.PluginReport`), whatever the plugin:
    its numbers as numeric metadata `<plugin>/<key>`, and one markdown entry `report/<plugin>` with
    every entry and its pictures inline."""
    from ctr_dagster.reports import png_markdown

    meta: dict[str, dg.MetadataValue] = {}
    for name, report in reports.items():
        meta |= numbers({f"{name}/{k}": v for k, v in report.numbers.items()})
        entries = [{"entry": k, "value": v} for k, v in {**report.numbers, **report.other}.items()]
        parts = [
            f"What the {kind} `{name}` reports about its run:",
            markdown_table(entries, ["entry", "value"]),
        ]
        if report.error:
            parts.append(f"Its report failed: `{report.error}`")
        parts += [f"**{k}** (`{p}`)\n\n{png_markdown(p, f'{name}: {k}')}" for k, p in report.images.items()]
        meta[f"report/{name}"] = dg.MetadataValue.md("\n\n".join(parts))
    return meta


def with_plugin_reports(
    engine: Mapping[str, object], kind: str, reports: Mapping[str, object], warn=None
) -> dict[str, object]:
    """The stage's own metadata plus every plugin's report (`plugin_reports`), the engine's entries
    winning: a plugin report key equal to an engine key (an encoder named `probe` reporting
    `text/colour` would shadow the engine's `probe/text/colour`) is left out, named in
    `report_key_clashes` and passed to `warn`, never silently overwritten either way."""
    plugin = plugin_reports(kind, reports)
    clashes = sorted(set(plugin) & set(engine))
    merged: dict[str, object] = {**{k: v for k, v in plugin.items() if k not in engine}, **engine}
    if clashes:
        merged["report_key_clashes"] = dg.MetadataValue.md(
            f"{kind} report entries left out because the stage uses the same key: "
            + ", ".join(f"`{k}`" for k in clashes)
        )
        if warn is not None:
            warn(f"{kind} report keys clash with the stage's metadata and were left out: {clashes}")
    return merged


def plugin_check(check_name: str, runs) -> dg.AssetCheckResult:
    """The stage's warning check over a `PluginRuns`: passes when no plugin failed or is broken."""
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not runs.problems,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "problems": dg.MetadataValue.md(
                markdown_table(runs.problem_rows(), [runs.kind, "status", "seconds", "error"])
            )
        },
    )
