"""CLI verb ``clip2video ablation``: run an experiment suite end to end (parse, run the pipeline, print)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from clip2video.commands.common import add_run_options, run_options, run_pipeline
from clip2video.experiments.suite import shipped_suites


def relaunch_under_torchrun(nproc: int, argv: list[str] | None = None) -> int:
    """Run this same command under ``torch.distributed.run`` with ``nproc`` processes (gloo on CPU)."""
    argv = _without_nproc(list(sys.argv[1:] if argv is None else argv))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", "clip2video", *argv]
    print("clip2video: " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less ``--nproc N``: torchrun's parser reads ``--nproc`` anywhere as an ambiguous
    abbreviation of its own ``--nproc-per-node`` and refuses the command (the child needs no
    ``--nproc``: it runs under ``WORLD_SIZE``)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def run_ablation(args: argparse.Namespace) -> int:
    """Run a suite: check before work, train (or evaluate) each row, record, tabulate, plot, track."""
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return relaunch_under_torchrun(args.nproc)
    result = run_pipeline(
        run_options(args, reference=None if args.reference == "none" else Path(args.reference))
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(result.summary())
        if result.verdict is not None:
            print(result.verdict.terminal())
            print(f"verdict: {result.verdict.run_dir / 'verdict.md'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ablation`` to the ``clip2video`` command."""
    p = subparsers.add_parser(
        "ablation",
        help="run an experiment suite (train or evaluate each model, then tables, plots, MLflow)",
        description=(
            "Run an experiment suite (a shipped one or a TOML file): check the whole suite and its "
            "inputs before work, train each model (or, with --eval-only, evaluate released checkpoints / "
            "the zero-shot CLIP), evaluate on the protocol's test split with the one evaluation engine, "
            "record RUNS_DIR/<suite>/, regenerate RESULTS_DIR/<suite>/ and log to MLflow. The default "
            "suite `ablation` runs offline on the generated synthetic protocol."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--suite",
        default="ablation",
        help=f"shipped suite name ({', '.join(shipped_suites())}) or a TOML path",
    )
    add_run_options(p)
    p.add_argument(
        "--eval-only",
        action="store_true",
        help="skip training: evaluate --checkpoint files (or the pretrained CLIP, zero-shot)",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        metavar="[ROW=]PATH",
        help="official-layout or harness checkpoint to evaluate, for one row (a plain row is named after "
        "its model) or, without ROW=, for every row (repeatable)",
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="run only these models of the suite (their plain and variant rows)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a suite setting, e.g. train.epochs=1 or data.allow_missing=true (repeatable)",
    )
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="processes for distributed training/evaluation (relaunches under torchrun; CPU: gloo)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="rows (model x seed) run at once, each in its own process (default: the suite's run.jobs; 0: automatic)",
    )
    p.add_argument(
        "--reference",
        default="reference",
        metavar="DIR",
        help="after the tables, compare the run with the reference tables in DIR/<suite>/ (DIR/<suite>-avx2/ "
        "under avx2 kernels) and print the verdict; 'none': no verdict (default: reference, the repository's)",
    )
    p.set_defaults(func=run_ablation)
