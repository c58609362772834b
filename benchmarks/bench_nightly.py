"""Nightly retrain against a full build, both through the executor the UI uses (issue 22).

    .venv/bin/python benchmarks/bench_nightly.py --profile tiny     # minutes
    .venv/bin/python benchmarks/bench_nightly.py                    # small (the issue's goal)

Every run goes through the `dagster` CLI (`dagster asset materialize`, `dagster job execute`), which
executes it like a run launched from the UI: Dagster's default multiprocess executor (one process per
step, ``max_concurrent`` = cores), in a Dagster instance of its own (a temporary DAGSTER_HOME).

1. setup: a project home built up to the profile's second-to-last day (catalogue, each day, then the
   dataset, embeddings, attributes, every model, evaluation and champion), as yesterday's state;
2. nightly: job `nightly_retrain` for the last (new) day on that state, as the schedule launches it
   (warm start on by default: each model continues from its own previous artifact);
3. full: a fresh home built the same way as 1. for every day: the full build the nightly replaces;
4. (``--cold``) the nightly again on a copy of the setup state with ``CTR_WARM_START=0``.

Both 2. and 3. end with models trained on the same dataset (the same days), so each warm-started
model's validation AUC is compared with its full retrain's: DeLong 95 % intervals, the paired
difference, and whether the warm AUC lies inside the full retrain's interval.

Writes benchmarks/results/nightly.json (``nightly_<profile>.json`` for other profiles than small
unless ``--name``): wall and CPU seconds (CPU of every process the CLI started, from
``getrusage(RUSAGE_CHILDREN)``), ``nightly_over_full_wall``, per-step seconds (STEP_START to
STEP_SUCCESS/FAILURE in the event log, summed over runs), each model's training kind (warm start,
full retrain, skipped) and threads, and the AUC comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_result

ROOT = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))
CODE = ["-f", "assets/definitions.py", "-d", str(ROOT)]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Home:
    """One project home (CTR_HOME) and the Dagster instances its phases record their runs in."""

    def __init__(self, root: Path, settings, warm_start: bool = True):
        self.root, self.settings = root, settings
        self.warm_start = warm_start
        self.commands: list[str] = []

    def env(self, dagster_home: Path) -> dict[str, str]:
        dagster_home.mkdir(parents=True, exist_ok=True)
        (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = {**os.environ, **self.settings.as_env(), "DAGSTER_HOME": str(dagster_home)}
        env["CTR_WARM_START"] = "1" if self.warm_start else "0"
        env.pop("CTR_STEP_THREADS", None)
        return env

    def cli(self, args: list[str], dagster_home: Path) -> tuple[float, float, bool]:
        """(wall s, CPU s, success) of one `dagster` command."""
        command = [DAGSTER, *args, *CODE]
        self.commands.append(" ".join(args))
        cpu, started = _cpu(), time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT, env=self.env(dagster_home), capture_output=True, text=True)
        wall, cpu = time.perf_counter() - started, _cpu() - cpu
        ok = proc.returncode == 0
        print(
            f"  {wall:7.1f} s wall {cpu:7.1f} s CPU  {'ok' if ok else 'FAILED'}  dagster {' '.join(args)}",
            flush=True,
        )
        if not ok:
            print(proc.stderr[-3000:], flush=True)
        return wall, cpu, ok

    def build(self, days: list[str], groups: dict[str, list[str]], dagster_home: Path) -> dict[str, object]:
        """Catalogue, each day, then the unpartitioned chain and the evaluation (as `ctr demo` orders
        them, each a run of the multiprocess executor)."""
        phases = [(groups["catalogue"], None)] + [(groups["day"], d) for d in days]
        phases += [(groups["train"], None), (groups["evaluation"], None)]
        wall = cpu = 0.0
        for keys, day in phases:
            args = ["asset", "materialize", "--select", ",".join(keys)]
            if day:
                args += ["--partition", day]
            w, c, _ = self.cli(args, dagster_home)
            wall, cpu = wall + w, cpu + c
        return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "runs": len(phases)}

    def nightly(self, day: str, run_config: dict, dagster_home: Path) -> dict[str, object]:
        """Job `nightly_retrain` for `day` with the run config its schedule gives that partition
        (`dagster job execute` alone would not apply the job's partitioned config)."""
        config = dagster_home.parent / f"{dagster_home.name}-run_config.json"
        config.write_text(json.dumps(run_config))
        tags = json.dumps({"dagster/partition": day})
        args = ["job", "execute", "-j", "nightly_retrain", "--tags", tags, "-c", str(config)]
        w, c, _ = self.cli(args, dagster_home)
        return {"wall_s": round(w, 2), "cpu_s": round(c, 2), "runs": 1}


def run_steps(dagster_home: Path) -> dict[str, object]:
    """Seconds per step (STEP_START -> STEP_SUCCESS/FAILURE), summed over the instance's runs; the
    failed steps (a blocked `champion_gate` is listed apart: the gate doing its job, not a failure)."""
    import dagster as dg

    out: dict[str, float] = {}
    failed: list[str] = []
    checks: list[str] = []
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for run in instance.get_runs():
            started: dict[str, float] = {}
            for entry in instance.all_logs(run.run_id):
                event = entry.dagster_event
                if event is None:
                    continue
                kind = event.event_type_value
                if kind == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
                    checks.append(event.event_specific_data.check_name)
                if event.step_key is None:
                    continue
                if kind == "STEP_START":
                    started[event.step_key] = entry.timestamp
                elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in started:
                    seconds = entry.timestamp - started.pop(event.step_key)
                    out[event.step_key] = out.get(event.step_key, 0.0) + seconds
                    if kind == "STEP_FAILURE" and event.step_key != "evaluation_champion_gate":
                        failed.append(event.step_key)
    return {
        "steps_s": {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])},
        "failed_steps": failed,
        "checks_not_passed": checks,
    }


def trainings(home) -> dict[str, dict[str, object]]:
    """Each model's last training: warm start / full retrain / skipped, threads, fit seconds."""
    out = {}
    for path in sorted(home.models.glob("*/status.json")):
        status = json.loads(path.read_text())
        record = {}
        if status.get("record") and Path(status["record"]).is_file():
            record = json.loads(Path(status["record"]).read_text())
        out[path.parent.name] = {
            "status": status.get("status"),
            "training": status.get("training"),
            "full_retrain_day": status.get("full_retrain_day"),
            "threads": record.get("threads"),
            "fit_seconds": record.get("fit_seconds"),
            "error": status.get("error"),
        }
    return out


def _scores(wh, table: str, split: str):
    import pyarrow.compute as pc

    p = wh.read(table)
    return p.filter(pc.equal(p.column("split"), split)).select(["impression_id", "score"])


def auc_comparison(warm_home, full_home) -> dict[str, dict[str, object]]:
    """Per model: validation AUC of the nightly (warm) and the full-retrain model on the same rows,
    DeLong intervals, the paired difference, and whether warm lies inside the full interval."""
    import pyarrow.compute as pc

    from ctr_dagster.registry import default_registry
    from ctr_dagster.significance import auc_interval, paired_comparison
    from ctr_dagster.warehouse import Warehouse

    uplift = {p.name for p in default_registry().good("model") if getattr(p.cls, "task", "ctr") == "uplift"}
    warm_wh, full_wh = Warehouse(warm_home.warehouse), Warehouse(full_home.warehouse)
    dataset = full_wh.read("training_dataset", columns=["impression_id", "split", "label"])
    out = {}
    for table in sorted(p.name for p in full_wh.root.glob("predictions_*")):
        if not warm_wh.exists(table):
            continue
        name = table.removeprefix("predictions_")
        if name in uplift:  # an uplift score is not a click probability: AUC vs clicks says nothing
            out[name] = {"not_compared": "uplift model: its score is an uplift, compare AUUC instead"}
            continue
        for split in ("valid", "test"):
            rows = dataset.filter(pc.equal(dataset.column("split"), split)).select(["impression_id", "label"])

            joined = rows.join(_scores(full_wh, table, split), "impression_id").join(
                _scores(warm_wh, table, split).rename_columns(["impression_id", "warm"]), "impression_id"
            )
            labels = joined.column("label").to_numpy()
            full_i = auc_interval(labels, joined.column("score").to_numpy())
            warm_i = auc_interval(labels, joined.column("warm").to_numpy())
            paired = paired_comparison(
                labels, joined.column("warm").to_numpy(), joined.column("score").to_numpy()
            )
            if full_i is None or warm_i is None:
                continue
            entry = out.setdefault(name, {})
            entry[split] = {
                "rows": joined.num_rows,
                "nightly_auc": round(warm_i.auc, 4),
                "nightly_ci": [round(warm_i.low, 4), round(warm_i.high, 4)],
                "full_auc": round(full_i.auc, 4),
                "full_ci": [round(full_i.low, 4), round(full_i.high, 4)],
                "delta": round(paired.delta, 4) if paired else None,
                "delta_ci": [round(paired.low, 4), round(paired.high, 4)] if paired else None,
                "nightly_within_full_ci": full_i.low <= warm_i.auc <= full_i.high,
                # above the interval is better than a full retrain, not a failure of the warm start
                "nightly_not_below_full_ci": warm_i.auc >= full_i.low,
            }
    return out


def due_config(run_config: dict) -> dict:
    """The nightly's run config with every warm-starting op's full retrain due (cadence 1 day)."""
    due = json.loads(json.dumps(run_config))
    for op in due.get("ops", {}).values():
        if "full_retrain_every_days" in op.get("config", {}):
            op["config"]["full_retrain_every_days"] = 1
    return due


def audits(home) -> dict[str, object]:
    """Every model's warm-start audit (`ctr_dagster.warm_start_audit`) and the check's verdict."""
    from ctr_dagster import warm_start_audit

    statuses = {p.parent.name: json.loads(p.read_text()) for p in sorted(home.models.glob("*/status.json"))}
    rows = warm_start_audit.check_rows(statuses)
    passed, description = warm_start_audit.check_summary(rows, 1)
    found = {name: s.get(warm_start_audit.STATUS_KEY) for name, s in statuses.items()}
    return {"check_passed": passed, "check": description, "rows": rows, "audits": found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="small")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--cold", action="store_true", help="also time the nightly without warm start")
    parser.add_argument(
        "--audit",
        action="store_true",
        help="also run the new day's nightly with the full retrain due (cadence 1) on a copy of the setup "
        "state: every model retrains from scratch and audits the warm start it replaces",
    )
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it (default: a temp dir)")
    parser.add_argument("--name", default=None, help="result name (default: nightly, or nightly_<profile>)")
    args = parser.parse_args()

    from ctr_dagster.code_location import load_code_location
    from ctr_dagster.settings import Settings

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_nightly-"))
    root.mkdir(parents=True, exist_ok=True)
    settings = {
        name: Settings(profile=args.profile, seed=args.seed, home=root / name)
        if args.seed is not None
        else Settings(profile=args.profile, home=root / name)
        for name in ("nightly", "full", "cold", "audit")
    }
    definitions = load_code_location(ROOT, "definitions")
    raw = load_code_location(ROOT, "raw")
    schedules = load_code_location(ROOT, "schedules")
    resources = load_code_location(ROOT, "resources")
    defs = definitions.build_definitions(settings["full"])
    nightly_keys = defs.resolve_job_def("nightly_retrain").asset_layer.selected_asset_keys
    catalogue = [*raw.CATALOGUE_TABLES, "plugin_registry"]
    fixed = set(catalogue) | set(schedules.DAY_ASSETS) | set(schedules.EVALUATION_ASSETS)
    groups = {
        "catalogue": catalogue,
        "day": list(schedules.DAY_ASSETS),
        "train": sorted(k.to_user_string() for k in nightly_keys if k.to_user_string() not in fixed),
        "evaluation": list(schedules.EVALUATION_ASSETS),
    }
    days = resources.daily_partitions(settings["full"]).get_partition_keys()
    print(f"profile {args.profile}: {len(days)} days, new day {days[-1]}; work in {root}", flush=True)

    load_at_start = os.getloadavg()
    nightly = Home(root / "nightly", settings["nightly"])
    print("setup: up to the second-to-last day", flush=True)
    setup = nightly.build(days[:-1], groups, root / "dagster_setup")
    setup.update(run_steps(root / "dagster_setup"))
    for phase in ("cold", "audit"):
        if getattr(args, phase):
            shutil.copytree(root / "nightly", root / phase)
    print("nightly: job nightly_retrain for the new day", flush=True)
    job = defs.resolve_job_def("nightly_retrain")
    run_config = job.partitioned_config.get_run_config_for_partition_key(days[-1])
    night = nightly.nightly(days[-1], run_config, root / "dagster_nightly")
    night.update(run_steps(root / "dagster_nightly"))
    night["trainings"] = trainings(settings["nightly"].ctr_home)
    full = Home(root / "full", settings["full"])
    print("full: every day from scratch", flush=True)
    built = full.build(days, groups, root / "dagster_full")
    built.update(run_steps(root / "dagster_full"))
    figures: dict[str, object] = {
        "profile": args.profile,
        "days": len(days),
        "new_day": days[-1],
        "executor": "multiprocess (dagster CLI, default max_concurrent = cores)",
        "cores": os.cpu_count(),
        "nightly_over_full_wall": round(night["wall_s"] / built["wall_s"], 3),
        "nightly_over_full_cpu": round(night["cpu_s"] / built["cpu_s"], 3),
        "setup": setup,
        "nightly": night,
        "full": built,
    }
    if args.cold:
        cold = Home(root / "cold", settings["cold"], warm_start=False)
        print("cold nightly: CTR_WARM_START=0 on a copy of the setup state", flush=True)
        cold_defs = definitions.build_definitions(settings["cold"].replace(warm_start=False))
        cold_job = cold_defs.resolve_job_def("nightly_retrain")
        cold_config = cold_job.partitioned_config.get_run_config_for_partition_key(days[-1])
        figures["nightly_cold"] = cold.nightly(days[-1], cold_config, root / "dagster_cold")
        figures["nightly_cold"].update(run_steps(root / "dagster_cold"))
        figures["nightly_cold_over_full_wall"] = round(figures["nightly_cold"]["wall_s"] / built["wall_s"], 3)
    if args.audit:
        print("audit nightly: the full retrain due (cadence 1) on a copy of the setup state", flush=True)
        audited = Home(root / "audit", settings["audit"])
        figures["nightly_audit"] = audited.nightly(days[-1], due_config(run_config), root / "dagster_audit")
        figures["nightly_audit"].update(run_steps(root / "dagster_audit"))
        figures["nightly_audit"]["audits"] = audits(settings["audit"].ctr_home)
    figures["auc_nightly_vs_full"] = comparison = auc_comparison(
        settings["nightly"].ctr_home, settings["full"].ctr_home
    )
    compared = {m: v for m, v in comparison.items() if "valid" in v}
    figures["valid_auc_summary"] = {
        "models": len(compared),
        "not_compared": sorted(set(comparison) - set(compared)),
        "within_full_ci": sorted(m for m, v in compared.items() if v["valid"]["nightly_within_full_ci"]),
        "above_full_ci": sorted(
            m for m, v in compared.items() if v["valid"]["nightly_auc"] > v["valid"]["full_ci"][1]
        ),
        "below_full_ci": sorted(
            m for m, v in compared.items() if not v["valid"]["nightly_not_below_full_ci"]
        ),
    }
    # other processes on the machine stretch every wall time: the 1/5/15-minute load averages
    figures["load_average"] = {"start": load_at_start, "end": os.getloadavg()}
    figures["commands"] = sorted(set(nightly.commands + full.commands))
    name = args.name or ("nightly" if args.profile == "small" else f"nightly_{args.profile}")
    write_result(name, figures)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
