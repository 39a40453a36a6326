r"""The InfoTok study: runs in priority order, one committed result file per finished run, tables from those.

    python experiments/run_study.py --status                                  # done / remaining, per slice
    python experiments/run_study.py --next --max_minutes=120 --commit         # next missing runs, in order
    python experiments/run_study.py --slice=ar_controls                       # one slice of the priority list
    python experiments/run_study.py --sweep=beta --hosts=ar --arms=hsic --seeds=0     # any sweep, ad hoc
    python experiments/run_study.py --slice=ar_controls --aggregate_only      # tables and plots from results
    python experiments/run_study.py --study=smoke --steps=2 --extra=tiny --hosts=ar --seeds=0 --dry_run
    python experiments/run_study.py --curve --max_minutes=120                 # baselines' learning curve
    python experiments/run_study.py --study=cpu2400 --claims                   # the claims, Holm-adjusted
    python experiments/run_study.py --next --engine=slurm --slurm_partition=gpu --gpus_per_node=1 --commit

`--study` names a budget (slices.BUDGETS: cpu600 = 600 steps at batch 32, evaluated once at the end;
cpu1200; cpu2400; tiny) and the folder of its results, `experiments/results/runs/<study>/<run>.json`,
written after every finished run (config, metrics, wall time split, git commit, machine). A run with a
result file is skipped, on any machine; commit the files (`--commit` does, one by one) and the next
session continues where this one stopped; `--max_minutes` starts no run expected to end after it.
Every run is one submitit job (study/engine.py; `--engine=local`, the default: jobs on this machine,
`--parallel` at once; `--engine=slurm`: one job array per slice, see launch/README.md) that runs
`python -m infotok_jax.train --config=experiments/configs/host.py:host=H,arm=A,seed=S,...
--workdir=<root>/runs/<name> [--config.<field>=<value>]` then `python -m infotok_jax.evaluate` with the
same config, each its own subprocess. A failed or preempted job is resubmitted (`--retries`) and resumes
from its checkpoints; a run that still fails is reported and the study goes on (exit status 1 if any
failed). Afterwards (or alone, with --aggregate_only) the selection is aggregated from the result
files alone into <root>/study/<slice or sweep>/ (table.md, results.json, plots).
Sweeps are protocol.SWEEPS (`--help` lists them); slices, in priority order, slices.SLICES (`--status`
lists them).
`--curve` runs every host's baseline under each budget of `budget_curve.CURVE_BUDGETS` (results in each
budget's folder) and writes the learning curve and the budget it picks to <root>/budget_curve/.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time
from collections.abc import Sequence

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from infotok_jax.study import (  # noqa: E402
    aggregate,
    budget_curve,
    capacity,
    claims,
    claims_plot,
    engine,
    plots,
    protocol,
    slices,
    tables,
)
from infotok_jax.study import results as results_lib  # noqa: E402

PYTHON = sys.executable  # the interpreter of the runs' subprocesses
X_LABELS = {
    "beta": ("infotok.beta", True),
    "tokens": ("tokens per image", False),
    "nuisance": ("nuisance strength", False),
    "no_consistency": ("infotok.lambda_c", False),
    "hsic_estimator": ("HSIC estimator", False),
}
CATEGORICAL = ("controls", "capacity")  # sweeps drawn as one bar per variant


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add(
        "--study",
        default="cpu600",
        help=f"Budget and results folder name (presets: {', '.join(slices.BUDGETS)}).",
    )
    add(
        "--root",
        type=pathlib.Path,
        default=None,
        help="Workdirs of the runs (default workdirs/<study>; "
        "with --curve, the parent of one such folder per budget, default workdirs).",
    )
    add("--results_dir", type=pathlib.Path, default=results_lib.RESULTS_DIR, help="Committed result files.")
    add("--steps", type=int, default=None, help="Training steps (default: the study's budget).")
    add("--extra", default=None, help="Config arguments for every run (default: the study's budget).")
    select = parser.add_mutually_exclusive_group()
    select.add_argument("--next", action="store_true", help="Run the slices in priority order.")
    select.add_argument("--slice", default=None, help="Run one slice of the priority list.")
    select.add_argument("--sweep", default=None, choices=list(protocol.SWEEPS), help="Plan one sweep ad hoc.")
    select.add_argument("--curve", action="store_true", help="The baselines' learning curve over budgets.")
    add("--hosts", default=",".join(protocol.HOSTS), help="With --sweep: comma-separated hosts.")
    add("--arms", default=",".join(protocol.ARMS), help="With --sweep: arms (intersected with the sweep's).")
    add("--seeds", default="0,1,2", help="With --sweep: comma-separated seeds (the protocol uses >= 3).")
    add(
        "--max_minutes",
        type=float,
        default=None,
        help="Start no run expected to end after this many minutes (by the median wall time of the study's "
        "done runs of its host and token count); the rest wait for the next session.",
    )
    add("--max_runs", type=int, default=None, help="Run at most this many missing runs.")
    add("--dry_run", action="store_true", help="Print the commands of the missing runs; run nothing.")
    add("--commit", action="store_true", help="git-commit each new result file as soon as it is written.")
    add("--aggregate_only", action="store_true", help="Only aggregate and plot the selection's results.")
    add("--status", action="store_true", help="Print what is done and what remains, per slice; run nothing.")
    add(
        "--claims",
        action="store_true",
        help="Only decide the claims of the study (claim_families.CLAIMS) from its result files; "
        "run nothing.",
    )
    engine.add_flags(parser)
    return parser.parse_args(argv)


def budget_of(args: argparse.Namespace) -> slices.Budget:
    """The study's budget with --steps / --extra applied; ValueError for an unknown study without them."""
    preset = slices.BUDGETS.get(args.study)
    if preset is None and args.steps is None:
        raise ValueError(
            f"--study={args.study!r} is not a preset ({', '.join(slices.BUDGETS)}): give --steps (and "
            "--extra) to define its budget"
        )
    if preset is None:
        return slices.Budget(args.steps, args.extra or "", "ad hoc")
    if args.steps not in (None, preset.steps) or args.extra not in (None, preset.extra):
        raise ValueError(
            f"--steps/--extra change the budget of the preset study {args.study!r} (steps={preset.steps}, "
            f"extra={preset.extra!r}); give the new budget its own name: --study=<name>"
        )
    return preset


def selection(args: argparse.Namespace, budget: slices.Budget) -> list[tuple[str, str, list[protocol.Run]]]:
    """[(name, sweep, runs)]: the slices (--next, --slice, --status) or the ad-hoc sweep (default main)."""
    if args.status:
        chosen = slices.SLICES
    elif args.next:  # the slices planned for this study, or for any
        chosen = tuple(s for s in slices.SLICES if s.study in ("", args.study))
    elif args.slice:
        chosen = (slices.slice_by_name(args.slice),)
        if chosen[0].study not in ("", args.study):
            raise ValueError(
                f"--slice={args.slice} is planned for study {chosen[0].study!r}, not {args.study!r}: add "
                f"--study={chosen[0].study}"
            )
    else:
        sweep = args.sweep or "main"
        seeds = [int(s) for s in _csv(args.seeds)]
        runs = protocol.plan(
            sweep, _csv(args.hosts), _csv(args.arms), seeds, budget.steps, budget.extra, budget.overrides
        )
        if not runs:
            raise ValueError(f"--sweep={sweep} has no runs for --arms={args.arms}")
        return [(sweep, sweep, runs)]
    return [(s.name, s.sweep, slices.plan_slice(s, budget)) for s in chosen]


def status_table(args: argparse.Namespace, groups: list[tuple[str, str, list[protocol.Run]]]) -> str:
    """Markdown: per slice, runs planned / with a result, their measured wall time, the next missing run.
    Slices planned for another study are named below the table, not counted in this one."""
    elsewhere = [
        (name, _planned_study(name)) for name, _, _ in groups if _planned_study(name) not in ("", args.study)
    ]
    groups = [g for g in groups if _planned_study(g[0]) in ("", args.study)]
    where = pathlib.Path(args.results_dir).absolute() / args.study
    if where.is_relative_to(protocol.REPO):
        where = where.relative_to(protocol.REPO)
    unique = {r.name: r for _, _, runs in groups for r in runs}
    done = results_lib.load_results(args.results_dir, args.study, list(unique.values()))
    lines = [
        f"Study `{args.study}` ({budget_of(args).description}), results in `{where}`: {len(done)} of "
        f"{len(unique)} distinct runs done (a run shared by slices counts in each).",
        "",
        "| priority | slice | planned for | sweep | runs | done | wall time of done (min) "
        "| est. remaining (core-h) | next missing run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    measured = list(done.values())
    for i, (name, sweep, runs) in enumerate(groups, 1):
        found = results_lib.load_results(args.results_dir, args.study, runs)
        minutes = sum(results_lib.wall_seconds(r) for r in found.values()) / 60
        missing = list({r.name: r for r in runs if r.name not in found}.values())
        left = results_lib.estimated_seconds(missing, measured)
        planned_for = _planned_study(name) or "any"
        lines.append(
            f"| {i} | {name} | {planned_for} | {sweep} | {len({r.name for r in runs})} | {len(found)} | "
            f"{minutes:.1f} | "
            f"{'?' if left is None else f'{left / 3600:.1f}'} | {missing[0].name if missing else '—'} |"
        )
    total = results_lib.estimated_seconds([r for n, r in unique.items() if n not in done], measured)
    lines += [
        "",
        "Estimated remaining, in core-hours (wall hours x cores; a machine with C cores running one "
        "pinned job per core does C per hour): per missing run, the median core-seconds of the done runs "
        "of its host and token count in this study (else of its host, else of all); a run shared by "
        "slices counts in each"
        + ("." if total is None else f"; every distinct missing run: about {total / 3600:.1f} core-h."),
        "",
        *(
            [
                "Planned for other studies (their status: `--study=<that study> --status`): "
                + ", ".join(f"{name} ({study})" for name, study in elsewhere)
                + ".",
                "",
            ]
            if elsewhere
            else []
        ),
        budget_curve.summary(args.results_dir),
    ]
    return "\n".join(lines) + "\n"


def _planned_study(slice_name: str) -> str:
    """The study a slice is planned for ("" for any, or for an ad-hoc sweep)."""
    return next((s.study for s in slices.SLICES if s.name == slice_name), "")


def claims_report(args: argparse.Namespace) -> str | None:
    """Decides the claims of `args.study` from its result files; writes `<root>/study/claims.md`,
    `claims.json` and the forest plot `claims.png`, and returns the Markdown (None when no claim reads
    this study)."""
    chosen = claims.claims_of_study(args.study)
    if not chosen:
        return None
    decided = [claims.evaluate(c, args.study, args.results_dir) for c in chosen]
    text = claims.markdown(decided)
    out_dir = args.root / "study"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "claims.md").write_text(text)
    (out_dir / "claims.json").write_text(json.dumps(decided, indent=1, allow_nan=False) + "\n")
    claims_plot.forest(decided, out_dir / "claims.png", title=f"claims at {args.study}")
    return text


def write_outputs(
    runs: Sequence[protocol.Run], root: pathlib.Path, sweep: str, out_dir: pathlib.Path
) -> dict[str, pathlib.Path]:
    """Aggregates `runs` from the workdir-shaped `root` into `out_dir`, draws the figures; returns paths."""
    results = aggregate.aggregate(runs, root, sweep)
    if sweep == "capacity":
        results["contrasts"] = capacity.contrasts(results["runs"])
    title = "InfoTok study: main protocol" if sweep == "main" else f"InfoTok study: {sweep} sweep"
    paths = tables.write(results, out_dir, title)
    paths["information_plane"] = plots.information_plane(results, out_dir / "information_plane.png")
    if sweep == "main":
        paths["bars"] = plots.bar_chart(results, out_dir / "bars.png")
    elif sweep in CATEGORICAL:
        paths["variants"] = plots.variant_chart(results, out_dir / "variants.png")
        if sweep == "capacity":
            paths["capacity"] = plots.capacity_gains(results, out_dir / "capacity.png")
    else:
        x_label, log_x = X_LABELS[sweep]
        paths["curves"] = plots.sweep_curves(results, out_dir / "curves.png", x_label, log_x)
        if sweep == "beta":
            paths["rate_distortion"] = plots.rate_distortion(results, out_dir / "rate_distortion.png")
    return paths


def aggregate_from_results(
    args: argparse.Namespace, name: str, sweep: str, runs: list[protocol.Run]
) -> dict[str, pathlib.Path] | None:
    """Tables and plots of `runs` from the result files alone (None when none has a result yet)."""
    found = results_lib.load_results(args.results_dir, args.study, runs)
    if not found:
        print(f"{name}: no results yet under {args.results_dir / args.study}")
        return None
    with tempfile.TemporaryDirectory(prefix="study_view_") as view:
        results_lib.materialize(runs, found, pathlib.Path(view))
        return write_outputs(runs, pathlib.Path(view), sweep, args.root / "study" / name)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the exit status (1 if any run failed, 2 for bad flags or results)."""
    try:
        return _main(parse_args(argv))
    except results_lib.ResultMismatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _execute(
    args: argparse.Namespace, runs: list[protocol.Run], root: pathlib.Path, study: str, deadline: float | None
) -> list[str]:
    """Runs (or, with --dry_run, prints) the missing `runs` of `study`; returns the names that failed."""
    outcomes = engine.execute(
        runs,
        root,
        study=study,
        results_dir=args.results_dir,
        options=args.engine_options,
        dry_run=args.dry_run,
        deadline=deadline,
        python=PYTHON,
        commit=args.commit,
        expected_seconds=lambda run: results_lib.estimated_seconds(
            [run],
            results_lib.study_results(args.results_dir, study),
            cpus=args.engine_options.cpus_per_job(len(runs)),
        ),
    )
    return [n for n, outcome in outcomes.items() if outcome.startswith("failed")]


def _within_max_runs(
    args: argparse.Namespace, runs: list[protocol.Run], study: str, budget_left: int | None
) -> tuple[list[protocol.Run], int | None]:
    """`runs` cut so that at most `budget_left` of them are missing (None: no --max_runs), and what is
    left of that budget afterwards."""
    if budget_left is None:
        return runs, None
    missing = [r for r in runs if not results_lib.result_path(args.results_dir, study, r).exists()]
    return [r for r in runs if r not in missing[budget_left:]], max(0, budget_left - len(missing))


def _exit_status(failed: list[str]) -> int:
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def run_curve(args: argparse.Namespace, deadline: float | None) -> int:
    """--curve: runs the missing baselines of each budget, then writes and prints the learning curve."""
    parent = args.root or pathlib.Path("workdirs")
    planned = budget_curve.plan()
    failed, budget_left = [], args.max_runs
    if not args.aggregate_only:
        for budget in dict.fromkeys(b for b, _ in planned):
            todo = [r for b, r in planned if b == budget]
            todo, budget_left = _within_max_runs(args, todo, budget, budget_left)
            failed += _execute(args, todo, parent / budget, budget, deadline)
    if not args.dry_run:
        curve = budget_curve.points(args.results_dir, planned)
        table = budget_curve.markdown(curve, planned)
        out_dir = parent / "budget_curve"
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "table.md").write_text(table)
        (out_dir / "curve.json").write_text(json.dumps(curve, indent=1) + "\n")
        print(table)
        print(f"curve table: {out_dir / 'table.md'}")
        if curve:
            print(f"curve plot: {plots.budget_curve(curve, out_dir / 'curve.png')}")
    return _exit_status(failed)


def _main(args: argparse.Namespace) -> int:
    try:
        args.engine_options = engine.options_from_flags(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.curve:
        return run_curve(args, _deadline(args))
    try:
        budget = budget_of(args)
        groups = selection(args, budget)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.root = args.root or pathlib.Path("workdirs") / args.study
    if args.status:
        print(status_table(args, groups))
        return 0
    if args.claims:
        print(claims_report(args) or f"no claim reads study {args.study!r}")
        return 0
    failed, seen, budget_left = [], set(), args.max_runs
    deadline = _deadline(args)
    for name, sweep, runs in groups:
        if not args.aggregate_only:
            todo = [r for r in runs if r.name not in seen]
            seen.update(r.name for r in runs)
            todo, budget_left = _within_max_runs(args, todo, args.study, budget_left)
            failed += _execute(args, todo, args.root, args.study, deadline)
        if not args.dry_run:
            paths = aggregate_from_results(args, name, sweep, runs)
            if paths and len(groups) == 1:
                print(paths["table"].read_text())
            for key, path in sorted((paths or {}).items()):
                print(f"{name} {key}: {path}")
    if args.aggregate_only and not args.dry_run:
        text = claims_report(args)
        if text:
            print(text)
    return _exit_status(failed)


def _deadline(args: argparse.Namespace) -> float | None:
    return None if args.max_minutes is None else time.monotonic() + 60 * args.max_minutes


if __name__ == "__main__":
    sys.exit(main())
