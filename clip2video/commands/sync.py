"""CLI verb ``clip2video sync``: log to MLflow the on-disk run records it is missing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run_sync(args: argparse.Namespace) -> int:
    """Re-log missing records; fail runs left RUNNING by dead processes."""
    from clip2video.experiments.sync import sync_records

    counts = sync_records(args.runs_dir, suites=args.suite or None, tracking_uri=args.tracking_uri)
    print(
        f"clip2video sync: logged {counts['logged']} record(s); marked {counts['failed_dead']} "
        "run(s) of dead processes FAILED"
    )
    unreadable = counts["unreadable"]
    if unreadable:  # every other record was logged; one error line names each one that was not
        print(
            f"clip2video: error: {len(unreadable)} record(s) not logged: {'; '.join(unreadable)}; "
            "`clip2video ablation --suite SUITE --resume` recomputes a row whose record is incomplete",
            file=sys.stderr,
        )
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sync`` to the ``clip2video`` command."""
    p = subparsers.add_parser(
        "sync",
        help="log on-disk run records that MLflow is missing (idempotent)",
        description=(
            "Log every finished row under --runs-dir that the tracking store does not have yet (matched "
            "by the record's tags, so running it twice logs nothing new), and mark runs left RUNNING by a "
            "process that died as FAILED."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--suite", action="append", help="only this suite (repeatable; default: every suite)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run records are")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns.db)",
    )
    p.set_defaults(func=run_sync)
