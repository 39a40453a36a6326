r"""The InfoTok study: baseline vs +VIB vs +HSIC on the three hosts over seeds, plus named ablation sweeps.

    python experiments/run_study.py --root=workdirs/study                       # main protocol, 3 seeds
    python experiments/run_study.py --root=workdirs/study --sweep=beta          # rate-distortion sweep
    python experiments/run_study.py --root=/tmp/s --extra=tiny --steps=2 --seeds=0,1 --dry_run

Every run is `python -m infotok_jax.train --config=experiments/configs/host.py:host=H,arm=A,seed=S,...
--workdir=<root>/runs/<name>` followed by `python -m infotok_jax.evaluate` with the same config, each in
its own subprocess (a failing run is reported and the study continues; exit status 1 if any failed).
Complete runs are skipped, interrupted ones resume from their checkpoints, and a sweep's default point
is the main run itself. Afterwards (or alone, with --aggregate_only) the results of the planned runs are
written to <root>/study/ for main (table.md, results.json, information_plane.png, bars.png) and to
<root>/study/<sweep>/ for a sweep (plus curves.png, and rate_distortion.png for beta). Sweeps:
  main            arms none/vib/hsic at the config defaults
  beta            infotok.beta x (0.1, 1, 10, 100) of each arm's default (vib, hsic)
  tokens          tokens=16 vs 64 (capacity: gains predicted larger at 16)
  nuisance        nuisance=0.0 / 0.5 / 1.0 (gains predicted larger with more nuisance)
  no_consistency  infotok.lambda_c default vs 0 (vib, hsic)
  hsic_estimator  infotok.hsic_estimator biased vs unbiased (hsic)
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from infotok_jax.study import aggregate, plots, protocol, runner  # noqa: E402

X_LABELS = {
    "beta": ("infotok.beta", True),
    "tokens": ("tokens per image", False),
    "nuisance": ("nuisance strength", False),
    "no_consistency": ("infotok.lambda_c", False),
    "hsic_estimator": ("HSIC estimator", False),
}


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root", required=True, type=pathlib.Path, help="Study directory (runs/ and study/)."
    )
    parser.add_argument("--hosts", default=",".join(protocol.HOSTS), help="Comma-separated hosts.")
    parser.add_argument(
        "--arms", default=",".join(protocol.ARMS), help="Comma-separated arms (none,vib,hsic)."
    )
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds (the protocol uses >= 3).")
    parser.add_argument("--sweep", default="main", choices=list(protocol.SWEEPS), help="Which runs to plan.")
    parser.add_argument("--steps", type=int, default=None, help="Training steps (default: the config's).")
    parser.add_argument(
        "--extra", default="", help="Config arguments added to every run, e.g. 'tiny,batch=32'."
    )
    parser.add_argument("--dry_run", action="store_true", help="Print the commands; run and write nothing.")
    parser.add_argument(
        "--aggregate_only", action="store_true", help="Only aggregate and plot existing runs."
    )
    return parser.parse_args(argv)


def write_outputs(runs: Sequence[protocol.Run], root: pathlib.Path, sweep: str) -> dict[str, pathlib.Path]:
    """Aggregates `runs` into <root>/study[/<sweep>]/ and draws the figures; returns the paths written."""
    out_dir = root / "study" if sweep == "main" else root / "study" / sweep
    results = aggregate.aggregate(runs, root, sweep)
    title = "InfoTok study: main protocol" if sweep == "main" else f"InfoTok study: {sweep} sweep"
    paths = aggregate.write(results, out_dir, title)
    paths["information_plane"] = plots.information_plane(results, out_dir / "information_plane.png")
    if sweep == "main":
        paths["bars"] = plots.bar_chart(results, out_dir / "bars.png")
    else:
        x_label, log_x = X_LABELS[sweep]
        paths["curves"] = plots.sweep_curves(results, out_dir / "curves.png", x_label, log_x)
        if sweep == "beta":
            paths["rate_distortion"] = plots.rate_distortion(results, out_dir / "rate_distortion.png")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the exit status (1 if any run failed, 2 for bad flags)."""
    args = parse_args(argv)
    try:
        seeds = [int(s) for s in _csv(args.seeds)]
        runs = protocol.plan(args.sweep, _csv(args.hosts), _csv(args.arms), seeds, args.steps, args.extra)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not runs:
        print(f"error: --sweep={args.sweep} has no runs for --arms={args.arms}", file=sys.stderr)
        return 2
    failed = []
    if not args.aggregate_only:
        outcomes = runner.execute(runs, args.root, dry_run=args.dry_run)
        failed = [name for name, outcome in outcomes.items() if outcome.startswith("failed")]
    if args.dry_run:
        return 0
    paths = write_outputs(runs, args.root, args.sweep)
    print(paths["table"].read_text())
    for name, path in sorted(paths.items()):
        print(f"{name}: {path}")
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
