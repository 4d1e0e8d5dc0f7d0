"""CLI verb ``clip2video build``: merge result files of several suites or evals into one table."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_build(args: argparse.Namespace) -> int:
    """Merge the result files; write Markdown, CSV and LaTeX into --out."""
    from clip2video.errors import check_writable_dir
    from clip2video.report.build import DEFAULT_METRICS, merge_results, write_build

    check_writable_dir(args.out, "output folder", "--out")
    merged = merge_results(args.results, tuple(args.metrics) if args.metrics else DEFAULT_METRICS)
    paths = write_build(merged, args.out, name=args.name)
    print(merged.table.drop(columns=["source"]).to_markdown())
    print(
        f"clip2video build: {len(merged.table)} row(s) from {len(args.results)} file(s) -> "
        + ", ".join(str(p) for p in paths)
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``build`` to the ``clip2video`` command."""
    p = subparsers.add_parser(
        "build",
        help="merge result.json files of several suites or evals into one table (Markdown, CSV, LaTeX)",
        description=(
            "Merge the result files that `clip2video ablation`, `eval` and `tables` write "
            "(RESULTS_DIR/<suite>/result.json; a results folder works too) into one table, one row per "
            "suite row, in the order given: OUT/results.md, results.csv (one tidy line per row and "
            "metric, with the date, version and checkpoint sha256) and results.tex. Example: clip2video "
            "build results/eval-msvd-clip2video/result.json results/ablation/result.json --out merged"
        ),
    )
    p.add_argument(
        "results", nargs="+", type=Path, metavar="RESULT", help="result.json files (or their folders)"
    )
    p.add_argument("--out", type=Path, required=True, help="folder for results.md, results.csv, results.tex")
    p.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        metavar="KEY",
        help="metric keys to show, e.g. t2v_R1 v2t_R1 order_acc (unset: R@1/5/10, MdR, MnR both ways)",
    )
    p.add_argument("--name", default="build", help="label prefix of the LaTeX tables (tab:<name>-t2v)")
    p.set_defaults(func=run_build)
