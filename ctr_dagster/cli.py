"""The `ctr` command line (console script `ctr = ctr_dagster.cli:app`).

One function per command, each importing what it needs inside its body, so `import ctr_dagster.cli`
(and `ctr --help`) stays fast: no Dagster, torch or plugin import at module level. To add a command,
write a function decorated with `@app.command("name")` below.

Settings come from one place: `Settings.from_env()` (``CTR_*``, ``DAGSTER_HOME``), with this
command line's flags applied on top (`_settings`). The CLI never writes the environment; it hands
the settings to the code location (`assets.definitions.build_definitions(settings)`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from ctr_dagster.settings import Settings

app = typer.Typer(
    name="ctr",
    help="ctr-dagster: plugin-based CTR modelling lineage on Dagster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main_options(
    ctx: typer.Context,
    home: Path = typer.Option(
        None, "--home", help="Project home (generated state); default $CTR_HOME, else ./.ctr_home."
    ),
) -> None:
    """Options every command shares."""
    ctx.obj = {"home": home}


MODELS_HELP = (
    "Comma-separated model plugins to train (default $CTR_MODELS, else every installed one); "
    "a distilled student needs its teacher selected too."
)


def _settings(ctx: typer.Context, **flags: object) -> Settings:
    """`Settings.from_env()` with the global `--home` and the command's flags on top (None = not given)."""
    from ctr_dagster.settings import Settings

    try:
        return Settings.from_env(home=(ctx.obj or {}).get("home"), **flags)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


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


def _code_location(project: Path):
    """`assets.run` of the project folder: the `assets/` package is not installed, so it is loaded
    from its file (`importlib`), without putting the folder on `sys.path`."""
    from ctr_dagster.code_location import load_code_location

    try:
        return load_code_location(project, "run")
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}; run from the project root or pass --project", err=True)
        raise typer.Exit(2) from exc


@app.command("demo")
def demo(
    ctx: typer.Context,
    profile: str = typer.Option(
        None,
        "--profile",
        "-p",
        help="Synthetic profile: tiny, small or large (default $CTR_PROFILE, else small).",
    ),
    seed: int = typer.Option(
        None, "--seed", help="Seed of the synthetic world (default $CTR_SEED, else the world's)."
    ),
    signal: list[str] = typer.Option(
        None, "--signal", "-s", help="Planted-signal strength NAME=VALUE (0 turns it off); repeatable."
    ),
    project: Path = typer.Option(Path("."), "--project", help="Project root (holds assets/)."),
    models: str = typer.Option(None, "--models", help=MODELS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Materialize the whole graph on the synthetic world in-process (the same assets as the UI)."""
    import os

    if os.environ.get("CTR_SOURCE", "").strip() == "import":
        typer.echo(
            "error: `ctr demo` runs the synthetic world only, but CTR_SOURCE=import is set. "
            "For your own logs run `ctr run --mapping <mapping.yaml>` (or unset CTR_SOURCE).",
            err=True,
        )
        raise typer.Exit(2)
    settings = _settings(
        ctx,
        source="synthetic",
        profile=profile,
        seed=seed,
        signals=",".join(signal) if signal else None,
        models=models,
    )
    summary = _materialize(settings, project, as_json)
    summary["profile"] = settings.profile
    summary["signals"] = settings.signals or "all 1.0"
    _print_summary(settings, summary, as_json, f"profile {settings.profile}")


@app.command("run")
def run_mapping(
    ctx: typer.Context,
    mapping: Path = typer.Option(
        ...,
        "--mapping",
        "-m",
        help="Import mapping YAML (see examples/mapping.example.yaml; `ctr mapping-schema` prints its schema).",
    ),
    project: Path = typer.Option(Path("."), "--project", help="Project root (holds assets/)."),
    models: str = typer.Option(None, "--models", help=MODELS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Import your logs and materialize everything in-process, ending with the leaderboard.

    Imports the files the mapping names, materializes every day that holds data (the days come from
    the data), then the training dataset, every model, the evaluation and the champion, recorded
    in DAGSTER_HOME like `ctr demo`.
    """
    from ctr_dagster.importers import MappingError, load_mapping

    if not mapping.is_file():
        typer.echo(f"error: mapping file {mapping} does not exist", err=True)
        raise typer.Exit(2)
    try:
        load_mapping(mapping)
    except MappingError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    settings = _settings(ctx, source="import", mapping=mapping, models=models)
    summary = _materialize(settings, project, as_json)
    summary["mapping"] = str(settings.mapping)
    _print_summary(settings, summary, as_json, f"mapping {settings.mapping}")


def _materialize(settings: Settings, project: Path, as_json: bool) -> dict:
    """Run every stage for `settings` (progress lines on stderr with --json), return the summary."""
    import time

    from ctr_dagster.errors import MalformedInputError
    from ctr_dagster.importers import MappingError

    started = time.perf_counter()
    run = _code_location(project)
    try:
        timings = run.materialize_all(settings, log=lambda line: typer.echo(line, err=as_json))
    except (MappingError, MalformedInputError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    summary = run.summary(settings)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["runs"] = len(timings) - 1
    days = [t for label, t in timings.items() if label.startswith("day ")]
    if days:
        summary["seconds_per_day"] = round(sum(days) / len(days), 2)
    return summary


def _print_summary(settings: Settings, summary: dict, as_json: bool, what: str) -> None:
    from ctr_dagster.evaluation import report

    doc = report(settings.ctr_home)
    if as_json:
        summary["evaluation"] = doc
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    typer.echo(f"\nmaterialized {summary['runs']} runs in {summary['seconds']} s ({what})")
    for key, value in summary.items():
        typer.echo(f"  {key:<20} {value}")
    typer.echo("\n" + (leaderboard_text(doc) if doc else "no evaluation was produced (see the log above)"))


def _fmt(value: object) -> object:
    from ctr_dagster.evaluation import display

    return display(value)


def _data_label(doc: dict) -> str:
    """Which data the leaderboard judged: the synthetic profile, or the mapping file of imported logs."""
    data = doc.get("data") or ""
    if doc.get("profile") == "import" or data.startswith("import"):
        return "data " + data.removeprefix("import ").replace("mapping=", "mapping ")
    return f"profile {doc.get('profile')}"


def leaderboard_text(doc: dict) -> str:
    """The leaderboard as the terminal shows it: ranked models, the oracle, the unranked, the champion."""
    from ctr_dagster.evaluation import (
        COMPARISON_COLUMNS,
        COST_COLUMNS,
        LEADERBOARD_COLUMNS,
        comparisons,
        cost_rows,
        leaderboard_rows,
    )

    rows = [{k: _fmt(v) for k, v in r.items()} for r in leaderboard_rows(doc)]
    lines = [
        f"leaderboard ({doc['split']} split, {doc['dataset']['test_rows']} rows, "
        f"{_data_label(doc)}, evaluated {doc['evaluated_at']})",
        _table(rows, LEADERBOARD_COLUMNS),
    ]
    if doc.get("oracle_note"):
        lines.append(f"  {doc['oracle_note']}")
    for r in doc.get("unranked", []):
        lines.append(f"  {r['status']}: {r['name']}: {r.get('error')}")
    for r in doc.get("changed_since_evaluation") or []:
        lines.append(
            f"  STALE: {r['model']} was {'retrained' if r['status'] == 'ok' else r['status']} at {r['trained_at']}, "
            "after this evaluation: its row describes the previous training; materialize `evaluation` again"
        )
    compared = comparisons(doc)
    if compared:
        lines.append("with vs without (each variant beside the model it modifies):")
        lines.append(_table([{k: _fmt(v) for k, v in r.items()} for r in compared], COMPARISON_COLUMNS))
    costs = [{k: _fmt(v) for k, v in r.items()} for r in cost_rows(doc)]
    if costs:
        lines.append("cost (parameters; training rows/s; 1,000 candidates for one user, 1 thread):")
        lines.append(_table(costs, COST_COLUMNS))
    if doc.get("mechanisms"):
        from ctr_dagster.mechanisms import table_rows

        mech = table_rows(doc["mechanisms"])
        lines.append(
            "planted mechanisms: share of each component a model captures (worth = oracle AUC without it; "
            "in parentheses the component's loading in the model's logit, 1 = as the truth)"
        )
        lines.append(_table(mech, list(mech[0])))
    lines.append(f"GAUC weighting: {doc['gauc_weighting']}; auc_95ci: DeLong; vs_champion: paired DeLong")
    if doc.get("candidate"):
        lines.append(
            f"candidate: {doc['candidate']['name']} (selected by {doc['candidate'].get('selected_by')})"
        )
    champ = doc.get("champion")
    lines.append(
        f"champion: {champ['name']} (AUC at promotion {_fmt(champ['metrics'].get('auc'))}, "
        f"by {champ['promoted_by']} at {champ['promoted_at']})"
        if champ
        else "champion: none"
    )
    gate = doc.get("gate")
    if gate:
        verdict = {"promote": "promoted", "keep": "kept", "block": "blocked"}[gate["action"]]
        lines.append(f"champion gate: {verdict}" + "".join(f"\n  - {r}" for r in gate["reasons"]))
    if doc.get("uplift"):
        lines.append(uplift_text(doc["uplift"]))
    return "\n".join(lines)


def uplift_text(doc: dict) -> str:
    """The uplift leaderboard (`uplift_evaluation`): normalised AUUC / Qini per model x arm, per stage."""
    from ctr_dagster.uplift.lineage import summary_rows

    has_oracle = any(r.get("model") == "oracle" for r in doc["rows"])
    lines = [
        f"\nuplift (test split, {doc['n_rows']} rows; normalised AUUC / Qini above random targeting, "
        f"{round(100 * doc['confidence'])} % bootstrap intervals"
        + ("; oracle = the true effects)" if has_oracle else ")")
    ]
    for stage in doc["stages"]:
        rows = summary_rows(doc, stage)
        if rows:  # a log without a randomized treatment has no row to show
            lines.append(f"stage {stage}:")
            lines.append(_table(rows, ["model", "arm", "AUUC", "Qini", "verdict"]))
    lines += [f"  {note}" for note in doc["notes"]]
    lines += [f"  {r['status']}: {r['model']}: {r['error']}" for r in doc.get("unranked", [])]
    return "\n".join(lines)


@app.command("leaderboard")
def leaderboard(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the latest evaluation as JSON."),
) -> None:
    """Print the latest evaluation: models ranked by test AUC, the oracle, failed/broken models, champion."""
    from ctr_dagster.evaluation import report

    doc = report(_settings(ctx).ctr_home)
    if doc is None:
        typer.echo("no evaluation yet: run `ctr demo` or materialize the `evaluation` asset", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(doc, indent=2) if as_json else leaderboard_text(doc))


@app.command("compare")
def compare(
    ctx: typer.Context,
    model_a: str = typer.Argument(..., help="A model with predictions (a leaderboard name)."),
    model_b: str = typer.Argument(..., help="The model to compare it with, on the same rows."),
    split: str = typer.Option("test", "--split", help="valid or test."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """Is A better than B, or is the difference noise? DeLong's paired test on the same rows."""
    from ctr_dagster.evaluation import compare_models

    try:
        result = compare_models(_settings(ctx).ctr_home, model_a, model_b, split)
    except (LookupError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    low, high = result["ci"]
    meaning = {
        "better": f"{model_a} is better (the 95 % interval excludes 0)",
        "worse": f"{model_a} is worse (the 95 % interval excludes 0)",
        "noise": "noise: the 95 % interval contains 0, so this split cannot tell them apart",
    }[result["verdict"]]
    typer.echo(
        f"{split} split, {result['rows']} rows, {result['test']}\n"
        f"  AUC {model_a} {result['auc_a']:.4f}, {model_b} {result['auc_b']:.4f}\n"
        f"  difference {result['delta']:+.4f} [{low:+.4f}, {high:+.4f}], p = {result['p_value']:.2g}\n"
        f"  {meaning}"
    )


@app.command("mapping-schema")
def mapping_schema(
    output: Path = typer.Option(
        None, "--output", "-o", help="Write the schema to this file instead of printing it."
    ),
) -> None:
    """Print the import mapping's JSON Schema, so editors can complete and check mapping files.

    e.g. `ctr mapping-schema -o mapping.schema.json`, then first line of the mapping YAML:
    `# yaml-language-server: $schema=mapping.schema.json`.
    """
    from ctr_dagster.importers.mapping import json_schema

    text = json.dumps(json_schema(), indent=2)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


champion_app = typer.Typer(
    help="The champion model: show it, its history, roll it back.", no_args_is_help=True
)
app.add_typer(champion_app, name="champion")


def _champion_store(ctx: typer.Context):
    from ctr_dagster.champion import ChampionStore

    return ChampionStore(_settings(ctx).ctr_home.champion)


@champion_app.command("show")
def champion_show(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """The current champion (the model serving would use)."""
    current = _champion_store(ctx).current()
    if as_json:
        typer.echo(json.dumps(current, indent=2))
    elif current is None:
        typer.echo("no champion yet")
    else:
        typer.echo(
            f"{current['name']}  AUC {_fmt(current['metrics'].get('auc'))}  artifact {current['artifact']}\n"
            f"promoted {current['promoted_at']} by {current['promoted_by']}"
            + (f"; replaced {current['previous']['name']}" if current.get("previous") else "")
        )


@champion_app.command("history")
def champion_history(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every promotion and rollback, oldest first."""
    from ctr_dagster.champion import history_rows

    events = _champion_store(ctx).history()
    if as_json:
        typer.echo(json.dumps(events, indent=2))
        return
    rows = [{**r, "auc": _fmt(r["auc"])} for r in history_rows(events)]
    typer.echo(_table(rows, ["event", "model", "auc", "at", "by", "replaced"]) if rows else "no history yet")


@champion_app.command("rollback")
def champion_rollback(ctx: typer.Context) -> None:
    """Restore the champion that the current one replaced (recorded in the history)."""
    store = _champion_store(ctx)
    before = store.current()
    try:
        restored = store.rollback()
    except LookupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"rolled back: champion is {restored['name']} ({restored['artifact']}) again, replacing {before['name']}"
    )
    _report_champion_to_dagster(_settings(ctx), restored, replaced=before["name"])


def _report_champion_to_dagster(settings: Settings, entry: dict, replaced: str) -> None:
    """Record the rollback as a runless materialization of `champion`, so the UI shows it (when
    `DAGSTER_HOME` names an instance; otherwise the champion history is the only record)."""
    if settings.dagster_home is None:
        return
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key="champion",
            description=f"rollback: {entry['name']} replaces {replaced}",
            metadata={
                "champion": entry["name"],
                "artifact": dg.MetadataValue.path(entry["artifact"] or ""),
                "action": "rollback",
            },
        )
    )
    typer.echo(f"recorded in the Dagster instance at {instance.root_directory}")


def main() -> None:  # pragma: no cover - `python -m ctr_dagster.cli`
    app()


@app.command("attributes")
def attributes(
    train: list[Path] = typer.Option(
        ..., "--train", help="MAVE-style JSONL the extractors are fitted on (repeatable)."
    ),
    test: list[Path] = typer.Option(
        ..., "--test", help="MAVE-style JSONL of new products they are scored on (repeatable)."
    ),
    taxonomy: Path = typer.Option(
        None,
        "--taxonomy",
        help="Published (attribute, value) list (CSV attribute,value / JSONL / MAVE): the candidate "
        "values beyond the train file's, distractors included. Without it, values the train file "
        "never uses cannot be predicted.",
    ),
    extractor: list[str] = typer.Option(
        [], "--extractor", "-e", help="Extractor plugin to run (repeatable); default: every installed one."
    ),
    text: str = typer.Option("title", "--text", help="Product text: title or title+description."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Fit every extractor on one product file's values, score extraction on another file's products.

    P/R/F1 overall, on values the train file uses (seen) and on values it does not (unseen), with
    95 % intervals over products; abstention on the test file's negatives (MAVE's empty-evidence
    attributes); each extractor against the stronger baseline (title matching, text-only ablation).
    Only the test file's labelled (product, attribute) pairs are judged.
    """
    from ctr_dagster.attribute_files import AttributeFilesError, score_files
    from ctr_dagster.errors import MalformedInputError
    from ctr_dagster.extraction_scoring import DISPLAY_COLUMNS, display_comparisons, display_rows

    def log(line: str) -> None:
        typer.echo(line, err=True)

    try:
        scores = score_files(
            train, test, taxonomy=taxonomy, extractors=extractor, text=text, seed=seed, log=log
        )
    except (AttributeFilesError, MalformedInputError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(scores.as_json(), indent=2, default=str))
        return
    typer.echo("  ".join(f"{k}={v}" for k, v in scores.counts.items()))
    typer.echo(_table(display_rows(scores.rows), list(DISPLAY_COLUMNS)))
    compared = display_comparisons(scores.comparisons)
    if compared:
        typer.echo("\nagainst the stronger baseline (paired over the same product resamples):")
        typer.echo(_table(compared, list(compared[0])))
    for note in scores.notes:
        typer.echo(f"note: {note}")


@app.command("uplift")
def uplift(
    ctx: typer.Context,
    csv: Path = typer.Option(
        ..., "--csv", help="The experiment: a CSV file with a header, one row per unit."
    ),
    treatment: str = typer.Option(..., "--treatment", help="The column holding each row's arm."),
    outcome: list[str] = typer.Option(
        ..., "--outcome", help="Binary outcome column: once (stage 1) or twice (stage 1, then stage 2)."
    ),
    control: str = typer.Option(
        None,
        "--control",
        help="The treatment value of the control group; default: '0', else 'control', else the most "
        "frequent value.",
    ),
    ignore: list[str] = typer.Option(
        [],
        "--ignore",
        help="Column not to use as a feature (repeatable): anything measured after the treatment "
        "(Criteo's exposure, Hillstrom's spend) leaks the outcome.",
    ),
    models: str = typer.Option(
        None, "--models", help="Comma-separated uplift plugins to fit; default: every installed one."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, the fits and the bootstrap."),
    quarantine: Path = typer.Option(
        None,
        "--quarantine",
        help="Where the quarantined rows go (CSV); default: <home>/uplift/<file stem>-quarantine.csv.",
    ),
    plots: Path = typer.Option(None, "--plots", help="Folder for the uplift and Qini curve PNGs."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Fit every uplift plugin on a random split of a randomized experiment; print AUUC / Qini per arm.

    Works on any CSV with a treatment column and binary outcomes (Criteo-uplift, Hillstrom, MT-LIFT,
    ...). Rows with a missing treatment, a non-binary outcome or an unparsable number are quarantined
    (file, row and column named), never dropped silently. Exit 2: unusable input or options; exit 1:
    no model could be scored.
    """
    from ctr_dagster.errors import MalformedInputError
    from ctr_dagster.uplift.experiment import NoUpliftModelError, result_text, run_experiment

    if len(outcome) > 2:
        typer.echo(f"error: give --outcome once or twice (stage 1, stage 2), got {outcome}", err=True)
        raise typer.Exit(2)
    if quarantine is None:
        quarantine = _settings(ctx).home / "uplift" / f"{csv.stem}-quarantine.csv"
    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    try:
        result = run_experiment(
            csv,
            treatment=treatment,
            outcomes=outcome,
            control=control,
            ignore=ignore,
            seed=seed,
            models=names,
            quarantine_file=quarantine,
            plots_dir=plots,
            log=lambda line: typer.echo(line, err=True),
        )
    except (MalformedInputError, NoUpliftModelError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(result.as_json(), indent=2) if as_json else result_text(result))
    if not result.scored:
        raise typer.Exit(1)


@app.command("export")
def export_bundle(
    ctx: typer.Context,
    model: str = typer.Option(
        ..., "--model", "-m", help="A trained model's name (its latest good artifact), `champion`, or `all`."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Bundle folder (with `all`: one sub-folder per model)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle folder."),
    as_json: bool = typer.Option(False, "--json", help="Print what was exported (or why not) as JSON."),
) -> None:
    """Write a portable serving bundle: the network (torch.export program) or LightGBM text model,
    vocabularies and preprocessing as data, the runtime as score.py, a manifest with sha256 hashes.

    The bundle is kept only if it scores the example rows as the model does, to 1e-5. A model
    that cannot be exported is named with the reason (exit 1; with `all`, exit 1 only if none exported).
    """
    from ctr_dagster.serving.bundle import NotExportable
    from ctr_dagster.serving.export import ExportResult, export_all, export_model

    home = _settings(ctx).ctr_home
    warehouse = home.open_warehouse()
    if model == "all":
        results = export_all(home, warehouse, out, force=force)
    else:
        try:
            results = [export_model(home, warehouse, model, out, force=force)]
        except (NotExportable, FileExistsError) as exc:
            results = [ExportResult(model, error=str(exc))]
    rows = [r.as_row() for r in results]
    if as_json:
        typer.echo(json.dumps(rows if model == "all" else rows[0], indent=2, default=str))
    for r in results:
        if as_json:
            break
        if r.ok:
            typer.echo(
                f"exported {r.name} ({r.kind}{', ' + r.strategy if r.strategy else ''}) to {r.directory}: "
                f"{r.checked_rows} probe rows score as the model (largest gap {r.max_gap:.1e})"
            )
        else:
            typer.echo(f"not exported: {r.name}: {r.error}", err=model != "all")
    exported = sum(r.ok for r in results)
    if model == "all" and not as_json:
        typer.echo(f"{exported} of {len(results)} model(s) exported")
    if exported == 0 or (model != "all" and not results[0].ok):
        raise typer.Exit(1)


@app.command("score")
def score_bundle(
    bundle: Path = typer.Option(..., "--bundle", "-b", help="A bundle folder written by `ctr export`."),
    request: Path = typer.Option(
        ...,
        "--request",
        "-r",
        help="JSON request: one user and a list of candidates (or a list of requests).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON."),
    threads: int = typer.Option(None, "--threads", help="Intra-op threads (default: the library's)."),
    engine: str = typer.Option(
        "auto",
        "--engine",
        help="What runs a torch model's network: auto (ONNX Runtime where the bundle has ONNX, else "
        "torch), onnx or torch.",
    ),
) -> None:
    """Score one user's candidates with a bundle (the bundle's own runtime, as `python DIR/score.py`)."""
    from ctr_dagster.serving.runtime import BundleError, run

    try:
        typer.echo(run(bundle, request, as_json, threads, engine))
    except BundleError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


if __name__ == "__main__":  # pragma: no cover
    main()
