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
    """Rewrite ``results/<suite>/`` tables (and plots) from the recorded runs; with ``--reference``,
    print and write the verdict against the reference."""
    from clip2video.report.results import regenerate
    from clip2video.report.tables import PAPER_DIR

    check_writable_dir(args.results_dir, "results folder", "--results-dir")
    suites = [suite_name(s) for s in args.suite] if args.suite else None
    if args.reference is not None:  # a missing reference or a bad readings.toml fails before work
        from clip2video.report.verdict import check_reference

        for suite in suites or [None]:
            check_reference(suite, args.reference, kernels=args.reference_kernels)
    written = regenerate(
        args.runs_dir,
        args.results_dir,
        suites,
        paper_dir=args.paper_dir or PAPER_DIR,
        plots=not args.no_plots,
        data_root=args.data_root,
    )
    for suite, files in written.items():
        print(f"{suite}: {len(files)} files in {Path(args.results_dir) / suite}")
    if args.reference is not None:
        from clip2video.report.verdict import suite_verdict, write_verdict

        for suite in written:
            verdict = suite_verdict(args.results_dir, suite, args.reference, kernels=args.reference_kernels)
            path = write_verdict(verdict)
            print(f"{verdict.terminal()}\nverdict: {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tables`` to the ``clip2video`` command."""
    t = subparsers.add_parser(
        "tables",
        help="regenerate results/<suite>/ tables and plots from the recorded runs",
        description=(
            "Rewrite RESULTS_DIR/<suite>/table.{md,tex,csv}, values.csv and the plots from "
            "RUNS_DIR/<suite>/: bootstrap intervals, published reference rows (the package's paper/*.csv) "
            "with differences, paired bootstrap vs meanp, post-processed rows as a separate marked block; one table "
            "per [[tables]] declaration of the suite (<name>.{md,tex,csv}). With --reference, the "
            "verdict: row means inside the reference's intervals and the reference's readings (readings.toml)."
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
    t.add_argument(
        "--data-root",
        type=Path,
        default=Path("data"),
        help="where a weights table finds the test annotations the suite ran on (order accuracy)",
    )
    t.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="compare with a reference and print the verdict (written to RESULTS_DIR/<suite>/verdict.md): a folder "
        "of references (e.g. reference/, holding <suite>/ and <suite>-avx2/) or one suite's reference folder",
    )
    t.add_argument(
        "--reference-kernels",
        default=None,
        metavar="KERNELS",
        help="choose the reference for this CPU kernel set (avx2 -> <suite>-avx2) instead of the detected one",
    )
    t.set_defaults(func=run_tables)
