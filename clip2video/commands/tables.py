"""CLI verb ``clip2video tables``: regenerate results/ from the recorded runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_tables(args: argparse.Namespace) -> int:
    """Rewrite ``results/<suite>/`` tables (and plots) from the recorded runs."""
    from clip2video.report.tables import PAPER_DIR, regenerate

    written = regenerate(
        args.runs,
        args.out,
        args.suite or None,
        paper_dir=args.paper_dir or PAPER_DIR,
        plots=not args.no_plots,
    )
    for suite, files in written.items():
        print(f"{suite}: {len(files)} files in {Path(args.out) / suite}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tables`` to the ``clip2video`` command."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    t = subparsers.add_parser(
        "tables",
        help="regenerate results/<suite>/ tables and plots from the recorded runs",
        description=(
            "Rewrite results/<suite>/table.{md,tex,csv}, values.csv and the plots from runs/<suite>/: "
            "bootstrap intervals, published reference rows (baselines/paper/*.csv) with differences, "
            "paired bootstrap vs meanp, post-processed rows as a separate marked block."
        ),
        formatter_class=fmt,
    )
    t.add_argument(
        "--suite",
        action="append",
        default=None,
        help="suite to tabulate (repeatable; default: every recorded suite)",
    )
    t.add_argument("--runs", type=Path, default=Path("runs"), help="folder of recorded runs")
    t.add_argument("--out", type=Path, default=Path("results"), help="results folder")
    t.add_argument(
        "--paper-dir",
        type=Path,
        default=None,
        help="published reference CSVs (default: the project's baselines/paper)",
    )
    t.add_argument("--no-plots", action="store_true", help="tables only")
    t.set_defaults(func=run_tables)
