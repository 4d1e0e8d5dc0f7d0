"""CLI verb ``clip2video tables``: regenerate results/ from the recorded runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from clip2video.commands.common import hidden_alias
from clip2video.errors import check_writable_dir


def suite_name(name_or_path: str) -> str:
    """The records' suite name of ``--suite``: a shipped name, a recorded suite's name or a TOML path."""
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        from clip2video.experiments.suite import load_suite

        return load_suite(name_or_path).name
    return name_or_path


def run_tables(args: argparse.Namespace) -> int:
    """Rewrite ``results/<suite>/`` tables (and plots) from the recorded runs."""
    from clip2video.report.tables import PAPER_DIR, regenerate

    check_writable_dir(args.results_dir, "results folder", "--results-dir")
    written = regenerate(
        args.runs_dir,
        args.results_dir,
        [suite_name(s) for s in args.suite] if args.suite else None,
        paper_dir=args.paper_dir or PAPER_DIR,
        plots=not args.no_plots,
    )
    for suite, files in written.items():
        print(f"{suite}: {len(files)} files in {Path(args.results_dir) / suite}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tables`` to the ``clip2video`` command."""
    t = subparsers.add_parser(
        "tables",
        help="regenerate results/<suite>/ tables and plots from the recorded runs",
        description=(
            "Rewrite RESULTS_DIR/<suite>/table.{md,tex,csv}, values.csv and the plots from "
            "RUNS_DIR/<suite>/: bootstrap intervals, published reference rows (the package's paper/*.csv) "
            "with differences, paired bootstrap vs meanp, post-processed rows as a separate marked block."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    t.add_argument(
        "--suite",
        action="append",
        default=None,
        help="suite to tabulate: a name or a TOML path (repeatable; unset: every recorded suite)",
    )
    t.add_argument("--runs-dir", type=Path, default=Path("runs"), help="folder of recorded runs")
    t.add_argument("--results-dir", type=Path, default=Path("results"), help="results folder")
    hidden_alias(t, "--runs", "runs_dir")
    hidden_alias(t, "--out", "results_dir")
    t.add_argument(
        "--paper-dir",
        type=Path,
        default=None,
        help="published reference CSVs (unset: the ones shipped in the package)",
    )
    t.add_argument("--no-plots", action="store_true", help="tables only")
    t.set_defaults(func=run_tables)
