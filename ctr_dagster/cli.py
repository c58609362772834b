"""The `ctr` command line (console script `ctr = ctr_dagster.cli:app`).

One function per command, each importing what it needs inside its body, so `import ctr_dagster.cli`
(and `ctr --help`) stays fast: no Dagster, torch or plugin import at module level. To add a command,
write a function decorated with `@app.command("name")` below.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(
    name="ctr",
    help="ctr-dagster: plugin-based CTR modelling lineage on Dagster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """Plain aligned text table (no rich markup: stable in logs and tests)."""
    cells = [[str(c) for c in columns]] + [
        ["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@app.command("plugins")
def plugins(
    as_json: bool = typer.Option(False, "--json", help="Print the plugins as a JSON list of rows."),
    kind: list[str] = typer.Option(
        None, "--kind", "-k", help="Only this kind (model, encoder, extractor); repeatable."
    ),
) -> None:
    """List discovered plugins of every kind, the broken ones with their error (exit 0 even then)."""
    from ctr_dagster.registry import KINDS, discover

    kinds = kind or list(KINDS)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        typer.echo(f"unknown kind(s) {unknown}; choose from {list(KINDS)}", err=True)
        raise typer.Exit(2)
    registry = discover(kinds)
    rows = registry.as_rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    good = [r for r in rows if r["status"] == "ok"]
    broken = [r for r in rows if r["status"] == "broken"]
    if good:
        typer.echo(_table(good, ["kind", "name", "dist", "version", "entry_point", "asset_key"]))
    else:
        typer.echo(f"no plugins found in the entry-point groups of: {', '.join(kinds)}")
    if broken:
        typer.echo(f"\n{len(broken)} broken plugin(s) (skipped by the engine):")
        for r in broken:
            typer.echo(
                f"  {r['kind']} {r['name']!r} from {r['dist'] or '?'} ({r['entry_point']}): {r['error']}"
            )
    typer.echo(f"\n{len(good)} plugin(s) ok, {len(broken)} broken.")


@app.command("new-plugin")
def new_plugin(
    name: str = typer.Argument(
        ...,
        help="Plugin name: a lower-case letter, then lower-case letters, digits or underscores (e.g. my_model).",
    ),
    dest: Path = typer.Option(Path("plugins"), "--dest", "-d", help="Folder that receives ctr-NAME/."),
    kind: str = typer.Option("model", "--kind", help="Plugin kind (templates: model)."),
) -> None:
    """Scaffold a plugin distribution DEST/ctr-NAME/ with a working model and its conformance tests."""
    from ctr_dagster.scaffold import ScaffoldError
    from ctr_dagster.scaffold import new_plugin as scaffold

    try:
        target = scaffold(name, dest, kind)
    except ScaffoldError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"created {target}")
    for path in sorted(p for p in target.rglob("*") if p.is_file()):
        typer.echo(f"  {path.relative_to(target).as_posix()}")
    typer.echo(
        "next:\n"
        f"  pip install -e {target}          # make the engine discover '{name}'\n"
        f"  pytest {target / 'tests'}   # run the conformance kit\n"
        "  ctr plugins                        # check it is listed"
    )


def _load_code_location(project: Path):
    """Import the `assets/` code location from the project folder (it is not an installed package)."""
    import sys

    project = project.resolve()
    if not (project / "assets" / "definitions.py").exists():
        typer.echo(
            f"error: {project} has no assets/definitions.py; run from the project root or pass --project",
            err=True,
        )
        raise typer.Exit(2)
    if str(project) not in sys.path:
        sys.path.insert(0, str(project))
    import assets.run

    return assets.run


@app.command("demo")
def demo(
    profile: str = typer.Option("small", "--profile", "-p", help="Synthetic profile: tiny, small or large."),
    seed: int = typer.Option(7, "--seed", help="Seed of the synthetic world."),
    signal: list[str] = typer.Option(
        None, "--signal", "-s", help="Planted-signal strength NAME=VALUE (0 turns it off); repeatable."
    ),
    project: Path = typer.Option(Path("."), "--project", help="Project root (holds assets/)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Materialize the whole graph on the synthetic world in-process (the same assets as the UI)."""
    import os
    import time

    os.environ["CTR_SOURCE"] = "synthetic"
    os.environ["CTR_PROFILE"] = profile
    os.environ["CTR_SEED"] = str(seed)
    os.environ["CTR_SIGNALS"] = ",".join(signal or [])
    started = time.perf_counter()
    run = _load_code_location(project)
    timings = run.materialize_all(log=lambda line: typer.echo(line))
    summary = run.summary()
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["profile"] = profile
    summary["signals"] = os.environ["CTR_SIGNALS"] or "all 1.0"
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"\nmaterialized {len(timings) - 1} runs in {summary['seconds']} s (profile {profile})")
    for key, value in summary.items():
        typer.echo(f"  {key:<20} {value}")


def main() -> None:  # pragma: no cover - `python -m ctr_dagster.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
