"""CLI verb ``clip2video drift``: the metric-drift gate."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from clip2video.errors import Clip2VideoError

DEFAULT_BASELINES = Path("baselines") / "locked"


def _rerun(suite: str, args: argparse.Namespace) -> None:
    """Run the suite with the lead's runner (records land in ``args.runs``)."""
    try:
        from clip2video.experiments.runner import run_suite
    except ImportError as exc:
        raise Clip2VideoError(
            f"--rerun needs clip2video.experiments.runner.run_suite, which is not available ({exc}); "
            f"run `clip2video ablation --suite {suite}` first and call drift without --rerun"
        ) from exc
    run_suite(suite, runs_dir=args.runs, data_root=args.data_root, device=args.device, tracking=False)


def run_drift(args: argparse.Namespace) -> int:
    """Compare the suite's metrics with the locked baseline; exit 1 naming each moved metric."""
    from clip2video.engine.records import read_suite_records
    from clip2video.report.drift import compare, default_mode, load_locked, suite_metrics, write_locked
    from clip2video.report.tables import resamples_of

    if args.update and not (args.message and args.message.strip()):
        raise Clip2VideoError('--update relocks the baseline: say why with --message "..."')
    from clip2video.commands.tables import suite_name

    source, args.suite = args.suite, suite_name(args.suite)  # a shipped name or a TOML path
    baseline = args.baseline or DEFAULT_BASELINES / f"{args.suite}.json"
    if args.rerun:
        _rerun(source, args)
    records = read_suite_records(args.runs, args.suite)
    n_boot = resamples_of(records)
    mode = args.mode if args.mode != "auto" else default_mode(records)
    new = suite_metrics(records, n_boot=n_boot)
    if args.update:
        command = shlex.join(["clip2video", *sys.argv[1:]]) if sys.argv[1:] else "clip2video drift --update"
        path = write_locked(
            baseline, new, args.message, suite=args.suite, mode=mode, command=command, n_boot=n_boot
        )
        print(f"drift: locked {len(new)} models of suite {args.suite!r} in {path} ({args.message.strip()})")
        return 0
    locked = load_locked(baseline)
    drifts = compare(locked, new, mode=mode)
    checked = sum(len(m.get("metrics", {})) for m in locked["models"].values())
    if drifts:
        print(f"drift: {len(drifts)} metric(s) of suite {args.suite!r} moved from {baseline} ({mode} mode):")
        for drift in drifts:
            print(f"  {drift}")
        print(
            "If the change is intended, relock: clip2video drift "
            f'--suite {args.suite} --update --message "why"'
        )
        return 1
    print(
        f"drift: suite {args.suite!r} matches {baseline}: {len(new)} models, {checked} locked metrics, "
        f"{mode} mode (locked {locked.get('date', '?')}: {locked.get('message', '')})"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``drift`` to the ``clip2video`` command."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    d = subparsers.add_parser(
        "drift",
        help="metric-drift gate: compare a suite's metrics with its locked baseline",
        description=(
            "Compare the suite's recorded metrics (or, with --rerun, a fresh run) with "
            "baselines/locked/<suite>.json. Exact mode (CPU): every metric within 1e-9. Interval mode "
            "(GPU): each metric inside the locked 95% bootstrap interval. Exits 1 naming each moved "
            "metric. --update --message relocks."
        ),
        formatter_class=fmt,
    )
    from clip2video.commands.tables import hidden_alias

    d.add_argument("--suite", default="smoke", help="shipped suite name or a TOML path")
    d.add_argument("--runs-dir", dest="runs", type=Path, default=Path("runs"), help="folder of recorded runs")
    hidden_alias(d, "--runs", "runs")
    d.add_argument(
        "--baseline", type=Path, default=None, help="locked file (default: baselines/locked/<suite>.json)"
    )
    d.add_argument(
        "--mode", choices=("auto", "exact", "interval"), default="auto", help="auto: exact on CPU runs"
    )
    d.add_argument("--rerun", action="store_true", help="run the suite first (CPU, no tracking)")
    d.add_argument("--data-root", type=Path, default=Path("data"), help="data folder for --rerun")
    d.add_argument("--device", default="cpu", help="device for --rerun")
    d.add_argument("--update", action="store_true", help="relock the baseline with the current metrics")
    d.add_argument("--message", default=None, help="why the baseline is relocked (required with --update)")
    d.set_defaults(func=run_drift)
