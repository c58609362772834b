"""SUAN on the synthetic world: scaling curves and online distillation of LightSUAN (issue 18, items 3-4).

Two studies, on one CPU thread per fit (`--threads`, default 1: SUAN's many small attention ops
collapse under OpenMP contention on a loaded 2-core machine, plugins/ctr-suan/README.md):

* **scaling** (`ctr_dagster.studies.run_scaling`): SUAN at every `--grades` x `--train-rows` (nested
  random subsets of the world's train split, kept in time order; the validation and test rows are
  the whole valid / test days, the same for every cell) x `--seeds`. Per cell: trainable parameters,
  training samples, validation / test AUC (test with its DeLong 95 % interval) and logloss. Then
  metric ~ a + b log10(parameters) (at the largest size), ~ a + b log10(samples) (at the largest
  grade) and the joint fit on both over every cell, by least squares: slopes per tenfold with their
  standard error, t-interval and R². Plot: benchmarks/results/suan_scaling.png.
* **distillation**: per seed (world = subsample = init seed) on the same world recipe, (a) LightSUAN
  (the student: grade `--student-grade`, sparse attention) trained alone, (b) LightSUAN trained
  *online* with a SUAN teacher (grade `--teacher-grade`) in the same run
  (`ctr_dagster.online_distillation.fit_online`; loss BCE(student) + BCE(teacher) + 1 * T^2 *
  BCE(sigmoid(z_s/T), sigmoid(sg(z_t)/T)), T = 1: the **assumed** weights `ONLINE_WEIGHTS`, the
  paper's are not public), (c) SUAN one grade above the student, trained alone. Reported: each arm's
  mean test AUC with a 95 % t-interval over seeds, the per-seed paired DeLong differences (b - a)
  and (b - c), and their mean with a t-interval over seeds. `--arms` picks the arms (`ARMS`):
  `lightgbm` (LightGBM's defaults) is the reference of the issue's quality goal, the share of the
  teacher's AUC lift over LightGBM the online student keeps (`studies.lift_kept`; "not definable"
  when the teacher's lift is not shown), against the online teacher and, with `teacher_alone`,
  against the teacher's grade trained by itself. Seeds may run as separate processes (one per
  core, `--distill-seeds S --name lift_sS`) and be summarized together: `--combine lift_s0 lift_s1 ...`.

    .venv/bin/python benchmarks/bench_suan.py [--study scaling distillation] [--profile small]
        [--grades 1 2 3 4] [--train-rows 10000 30000 100000] [--seeds 0]
        [--epochs 6] [--min-steps 500] [--max-epochs 30] [--threads 1]
        [--distill-seeds 0 1 2 3 4] [--distill-rows 100000] [--student-grade 2] [--teacher-grade 3]
        [--arms online alone suan_higher] [--alone-longer-epochs 0] [--name suan] [--combine NAME ...]

Epochs: a fit runs at most `--epochs` epochs, a limit raised for a smaller training set (up to
`--max-epochs`) so that it may take `--min-steps` optimizer steps of 512 rows; early stopping on
validation AUC (patience 2, the best epoch restored) ends most small-set fits sooner.
`--alone-longer-epochs N` adds an arm: the lone student with up to N epochs. The defaults took about 10 minutes
(scaling) and 21 minutes (distillation) of one thread on a shared 2-core machine (docs/benchmarks.md);
at 100k rows 6 epochs left the lone student short (+0.011 AUC with 12): `--epochs 12` is the better
setting for the next run.

Writes benchmarks/results/suan.json (`figures.scaling`, `figures.distillation`; running one study
keeps the other's last result) and prints tables. ctr-suan is opt-in and is NOT installed by this
script: it is imported from plugins/ctr-suan. Selection is on validation only (early stopping);
nothing is chosen on test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "plugins/ctr-suan"))
from common import RESULTS, write_result  # noqa: E402


def scaling(args: argparse.Namespace) -> dict:
    from ctr_suan.model import SuanModel

    from ctr_dagster import studies

    settings = studies.ScalingSettings(
        profile=args.profile,
        seeds=tuple(args.seeds),
        grades=tuple(args.grades),
        train_rows=tuple(args.train_rows),
        epochs=args.epochs,
        min_steps=args.min_steps,
        max_epochs=args.max_epochs,
        num_threads=args.threads,
    )
    doc = studies.run_scaling(SuanModel, settings, log=lambda s: print(s, flush=True))
    png = studies.scaling_png(doc, RESULTS / f"{args.name}_scaling.png")
    doc["png"] = png.name
    print(studies.markdown(studies.cell_rows(doc["cells"])))
    print()
    print(studies.markdown(studies.fit_rows(doc["fits"])))
    return doc


def _rounded(numbers: dict) -> dict:
    out = {}
    for k, v in numbers.items():
        if isinstance(v, float):
            out[k] = round(v, 5)
        elif isinstance(v, list) and v and isinstance(v[0], float):
            out[k] = [round(x, 5) for x in v]
        else:
            out[k] = v
    return out


#: The distillation study's arms, in the order they run (`--arms` picks a subset; the online run first,
#: the costly teacher alone last, so that a run cut short keeps the main result).
ARMS = ("online", "lightgbm", "alone", "suan_higher", "alone_longer", "teacher_alone")


def distillation_seed(args: argparse.Namespace, seed: int) -> dict:
    import torch
    from ctr_suan.model import LightSuanModel, SuanModel

    from ctr_dagster import studies
    from ctr_dagster.contracts import FitContext
    from ctr_dagster.model_cost import parameter_count
    from ctr_dagster.online_distillation import ONLINE_WEIGHTS, fit_online

    train, valid, test, cards = studies.split_world(args.profile, seed)
    part = studies.subsample(train, args.distill_rows, seed) if args.distill_rows else train
    labels = test.column("label").to_numpy()
    rule = studies.ScalingSettings(
        epochs=args.epochs, min_steps=args.min_steps, max_epochs=args.max_epochs, num_threads=args.threads
    )
    epochs = rule.epochs_for(part.num_rows, LightSuanModel.Config().batch_size)
    loop = {"epochs": epochs, "num_threads": args.threads, "log_every": 0}
    arms: dict[str, dict] = {}
    scores = {}
    torch.set_num_threads(args.threads)
    wanted = set(args.arms) | ({"alone_longer"} if args.alone_longer_epochs else set())

    def say(arm: str) -> None:
        numbers = arms[arm]
        print(
            f"distillation seed {seed}: {arm} test AUC {numbers['test_auc']:.4f} "
            f"(valid {numbers['valid_auc']:.4f}, fit {numbers.get('fit_s', '-')} s)",
            flush=True,
        )

    for arm in (a for a in ARMS if a in wanted):
        if arm == "online":
            student = LightSuanModel(LightSuanModel.Config(**loop, grade=args.student_grade))
            teacher = SuanModel(SuanModel.Config(**loop, grade=args.teacher_grade))
            ctx = FitContext(seed=seed, cardinalities=dict(cards), log=lambda s: None)
            started = time.perf_counter()
            fit_online(student, teacher, part, valid, ctx, ONLINE_WEIGHTS)
            online_s = round(time.perf_counter() - started, 1)
            numbers, scores["online"] = studies.score_model(student, valid, test)
            arms["online"] = {
                "parameters": parameter_count(student),
                "fit_s": online_s,
                **numbers,
                "epochs_run": student.summary.get("epochs_run"),
                "best_epoch": student.summary.get("best_epoch"),
            }
            teacher_numbers, scores["online_teacher"] = studies.score_model(teacher, valid, test)
            arms["online_teacher"] = {"parameters": parameter_count(teacher), **teacher_numbers}
            say("online")
            say("online_teacher")
            continue
        if arm == "lightgbm":  # the reference of the "teacher's AUC lift over LightGBM"
            from ctr_lightgbm.model import LightgbmModel

            model_cls, config = LightgbmModel, {"num_threads": args.threads}
        elif arm == "alone":
            model_cls, config = LightSuanModel, {**loop, "grade": args.student_grade}
        elif arm == "alone_longer":  # is the online lift a faster convergence under the epoch cap?
            epochs_longer = args.alone_longer_epochs or 2 * epochs
            model_cls, config = LightSuanModel, {**loop, "grade": args.student_grade, "epochs": epochs_longer}
        elif arm == "suan_higher":
            model_cls, config = SuanModel, {**loop, "grade": args.student_grade + 1}
        else:  # teacher_alone: the teacher's grade trained by itself (is the online teacher held back?)
            model_cls, config = SuanModel, {**loop, "grade": args.teacher_grade}
        _, arms[arm], scores[arm] = studies.fit_and_score(model_cls, config, part, valid, test, cards, seed)
        say(arm)
    # every arm's test scores beside the JSON, so that a pair not foreseen here can be tested later
    import numpy as np

    kept = RESULTS / f"{args.name}_scores_seed{seed}.npz"
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        kept, label=labels, **{arm: np.asarray(v, dtype=np.float64) for arm, v in scores.items()}
    )
    return {
        "seed": seed,
        "rows": {"train": part.num_rows, "valid": valid.num_rows, "test": test.num_rows},
        "max_epochs": epochs,
        "arms": {k: _rounded(v) for k, v in arms.items()},
        "paired": paired_differences(labels, scores),
        "test_scores": kept.name,
    }


#: (name, a, b): the paired DeLong differences a study reports, when both arms ran.
PAIRS = (
    ("online_minus_alone", "online", "alone"),
    ("online_minus_suan_higher", "online", "suan_higher"),
    ("online_minus_alone_longer", "online", "alone_longer"),
    ("online_minus_lightgbm", "online", "lightgbm"),
    ("online_teacher_minus_lightgbm", "online_teacher", "lightgbm"),
    ("teacher_alone_minus_lightgbm", "teacher_alone", "lightgbm"),
    ("online_teacher_minus_teacher_alone", "online_teacher", "teacher_alone"),
    ("online_minus_online_teacher", "online", "online_teacher"),
    ("online_minus_teacher_alone", "online", "teacher_alone"),
)


def paired_differences(labels, scores: dict) -> dict:
    """DeLong's paired difference (a - b) on the test rows for every pair in `PAIRS` whose arms ran."""
    from ctr_dagster.significance import paired_comparison

    out = {}
    for name, a, b in PAIRS:
        if a in scores and b in scores:
            cmp = paired_comparison(labels, scores[a], scores[b])
            out[name] = {
                "delta": round(cmp.delta, 5),
                "ci": [round(cmp.low, 5), round(cmp.high, 5)],
                "p_one_sided": round(cmp.p_value, 4),
            }
    return out


def lift_kept(run: dict, teacher: str) -> dict | None:
    """The issue's quality goal on one seed (`studies.lift_kept`): the online student's AUC lift over
    LightGBM as a share of `teacher`'s lift; None when an arm is missing."""
    from ctr_dagster import studies

    student = run["paired"].get("online_minus_lightgbm")
    lift = run["paired"].get(f"{teacher}_minus_lightgbm")
    if student is None or lift is None:
        return None
    return studies.lift_kept(student["delta"], lift["delta"], lift["ci"])


def summarize_distillation(runs: list[dict]) -> dict:
    """Over the seeds: each arm's mean with a t-interval, each paired difference's mean with its
    t-interval and per-seed DeLong verdicts, and the share of the teacher's lift the student keeps."""
    from ctr_dagster import studies

    summary: dict = {"arms": {}, "paired": {}, "lift_kept": {}}
    order = ("alone", "online", "suan_higher", "online_teacher", "teacher_alone", "alone_longer", "lightgbm")
    for arm in [a for a in order if all(a in r["arms"] for r in runs)]:
        summary["arms"][arm] = {
            "test_auc": studies.mean_t_interval([r["arms"][arm]["test_auc"] for r in runs]),
            "valid_auc": studies.mean_t_interval([r["arms"][arm]["valid_auc"] for r in runs]),
            "test_logloss": studies.mean_t_interval([r["arms"][arm]["test_logloss"] for r in runs]),
        }
    for name in [n for n, _, _ in PAIRS if all(n in r["paired"] for r in runs)]:
        deltas = [r["paired"][name]["delta"] for r in runs]
        stat = studies.mean_t_interval(deltas)
        ci = stat["ci"]
        if ci is None:
            verdict = "one seed: no interval over seeds"
        elif ci[0] > 0:
            verdict = "ahead (t-interval over seeds above 0)"
        elif ci[1] < 0:
            verdict = "behind (t-interval over seeds below 0)"
        else:
            verdict = "not distinguishable from noise (t-interval over seeds holds 0)"
        summary["paired"][name] = {
            **stat,
            "per_seed": deltas,
            "wins": f"{sum(d > 0 for d in deltas)}/{len(deltas)}",
            "seeds_with_delong_interval_above_0": sum(r["paired"][name]["ci"][0] > 0 for r in runs),
            "seeds_with_delong_interval_below_0": sum(r["paired"][name]["ci"][1] < 0 for r in runs),
            "verdict": verdict,
        }
    for teacher in ("online_teacher", "teacher_alone"):
        per_seed = [lift_kept(r, teacher) for r in runs]
        if any(k is None for k in per_seed):
            continue
        student = studies.mean_t_interval([k["student_lift"] for k in per_seed])
        lift = studies.mean_t_interval([k["teacher_lift"] for k in per_seed])
        # pooled over seeds: a share of the mean lifts, only where the teacher's mean lift is shown
        # (its t-interval over seeds above 0; one seed: its DeLong interval)
        shown = lift["ci"][0] > 0 if lift["ci"] else per_seed[0]["share"] is not None
        summary["lift_kept"][teacher] = {
            "per_seed": per_seed,
            "mean_student_lift": round(student["mean"], 5),
            "mean_student_lift_ci": student["ci"],
            "mean_teacher_lift": round(lift["mean"], 5),
            "mean_teacher_lift_ci": lift["ci"],
            "share_of_mean_lifts": round(student["mean"] / lift["mean"], 3) if shown else None,
            "seeds_meeting_90_percent": sum(bool(k["meets_goal"]) for k in per_seed),
            "seeds_not_definable": sum(k["share"] is None for k in per_seed),
        }
    return summary


def merge_runs(runs: list[dict]) -> dict:
    """One seed's runs from several processes as one: their arms together, and every pair re-tested
    on the test scores they kept (the same seed: the same world, split and test rows; CPU training
    is deterministic, so an arm run twice scores the same)."""
    import numpy as np

    if len(runs) == 1:
        return runs[0]
    if len({json.dumps(r["rows"], sort_keys=True) for r in runs}) != 1:
        raise ValueError(f"seed {runs[0]['seed']}: the runs to merge have different splits")
    merged = {**runs[0], "arms": {}, "paired": {}, "merged_runs": len(runs)}
    labels, scores = None, {}
    for run in runs:
        merged["arms"].update(run["arms"])
        merged["paired"].update(run["paired"])
        if run.get("test_scores"):
            with np.load(RESULTS / run["test_scores"]) as kept:
                if labels is not None and not np.array_equal(labels, kept["label"]):
                    raise ValueError(f"seed {run['seed']}: the runs' test labels differ")
                labels = kept["label"]
                scores.update({arm: kept[arm] for arm in kept.files if arm != "label"})
    if labels is not None:
        merged["paired"].update(paired_differences(labels, scores))
    return merged


def distillation(args: argparse.Namespace) -> dict:
    from ctr_dagster.online_distillation import ONLINE_WEIGHTS

    started = time.perf_counter()
    if args.combine:  # seeds run as separate processes (one per core), summarized together
        docs = [
            json.loads((RESULTS / f"{n}.json").read_text())["figures"]["distillation"] for n in args.combine
        ]
        by_seed: dict[int, list[dict]] = {}
        for run in (r for d in docs for r in d["runs"]):
            by_seed.setdefault(run["seed"], []).append(run)
        runs = [merge_runs(by_seed[seed]) for seed in sorted(by_seed)]
        meta = {k: v for k, v in docs[0].items() if k not in ("runs", "summary", "seeds", "wall_s")}
        meta["combined_from"] = list(args.combine)
        return {
            **meta,
            "seeds": [r["seed"] for r in runs],
            "runs": runs,
            "summary": summarize_distillation(runs),
            "wall_s": sum(d.get("wall_s", 0) for d in docs),
        }
    runs = [distillation_seed(args, s) for s in args.distill_seeds]
    return {
        "study": "online_distillation",
        "profile": args.profile,
        "seeds": list(args.distill_seeds),
        "train_rows": args.distill_rows,
        "epochs": {"at_least": args.epochs, "min_steps": args.min_steps, "max": args.max_epochs},
        "threads": args.threads,
        "arms": [a for a in ARMS if a in args.arms],
        "student": {"model": "lightsuan", "grade": args.student_grade, "attention": "sparse"},
        "teacher": {"model": "suan", "grade": args.teacher_grade},
        "higher": {"model": "suan", "grade": args.student_grade + 1},
        "alone_longer_epochs": args.alone_longer_epochs or None,
        "weights_assumed": ONLINE_WEIGHTS.as_dict(),
        "loss": "BCE(z_s, y) + BCE(z_t, y) + teacher_weight * T^2 * BCE(sigmoid(z_s/T), sigmoid(sg(z_t)/T))",
        "runs": runs,
        "summary": summarize_distillation(runs),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def print_distillation(doc: dict) -> None:
    def fmt(stat: dict, sign: str = "") -> str:
        ci = stat["ci"]
        return f"{stat['mean']:{sign}.4f}" + (f" [{ci[0]:{sign}.4f}, {ci[1]:{sign}.4f}]" if ci else "")

    for arm, s in doc["summary"]["arms"].items():
        print(f"{arm:15s} test AUC {fmt(s['test_auc'])}  valid AUC {fmt(s['valid_auc'])}")
    for name, s in doc["summary"]["paired"].items():
        print(f"{name:35s} {fmt(s, '+')} wins {s['wins']}: {s['verdict']}")
    for teacher, k in doc["summary"].get("lift_kept", {}).items():
        shares = ", ".join("n/a" if x["share"] is None else f"{x['share']:.2f}" for x in k["per_seed"])
        print(
            f"lift over lightgbm kept vs {teacher}: per seed {shares}; mean student lift "
            f"{k['mean_student_lift']:+.4f} / mean teacher lift {k['mean_teacher_lift']:+.4f} = "
            f"{k['share_of_mean_lifts']}; {k['seeds_meeting_90_percent']}/{len(k['per_seed'])} seeds >= 0.9"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--study", nargs="+", choices=["scaling", "distillation"], default=["scaling", "distillation"]
    )
    parser.add_argument("--profile", default="small", help="synthetic world profile (both studies)")
    parser.add_argument("--grades", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--train-rows", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="scaling: world/subsample/init seeds"
    )
    parser.add_argument(
        "--epochs", type=int, default=6, help="most epochs per fit (early stopping on valid AUC)"
    )
    parser.add_argument("--min-steps", type=int, default=500, help="smaller sets get more epochs, up to ...")
    parser.add_argument("--max-epochs", type=int, default=30, help="... this many, to take this many steps")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--distill-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--distill-rows", type=int, default=100_000, help="training rows (0: the whole split)"
    )
    parser.add_argument("--name", default="suan", help="results/<name>.json and <name>_scaling.png")
    parser.add_argument(
        "--alone-longer-epochs",
        type=int,
        default=0,
        help="also fit the lone student with this many epochs at most (0: not)",
    )
    parser.add_argument("--student-grade", type=int, default=2)
    parser.add_argument("--teacher-grade", type=int, default=3)
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=ARMS,
        default=["online", "alone", "suan_higher"],
        help="distillation arms (online also scores its teacher); lightgbm gives the teacher's lift",
    )
    parser.add_argument(
        "--combine",
        nargs="+",
        metavar="NAME",
        help="distillation: summarize the runs of these results/<NAME>.json (seeds run apart) instead of fitting",
    )
    args = parser.parse_args()

    previous = RESULTS / f"{args.name}.json"
    figures: dict = {}
    if previous.exists():
        figures = {k: v for k, v in json.loads(previous.read_text()).get("figures", {}).items()}
    figures["threads"] = args.threads
    for study in args.study:
        started = time.perf_counter()
        figures[study] = scaling(args) if study == "scaling" else distillation(args)
        if study == "distillation":
            print_distillation(figures[study])
        figures.setdefault("wall_s", {})[study] = round(time.perf_counter() - started, 1)
        write_result(args.name, figures)  # after each study, so a later failure keeps the first


if __name__ == "__main__":
    main()
