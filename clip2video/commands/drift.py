"""CLI verb ``clip2video drift``: the two-layer drift gate (evaluation drift, training drift)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from clip2video.commands.common import hidden_alias, overrides_of
from clip2video.errors import ConfigError

if TYPE_CHECKING:
    from clip2video.drift_gate import GateOptions

# The gate's defaults (clip2video.drift_gate's, repeated here so that building the parser stays light).
DEFAULT_BASELINES = Path("baselines") / "locked"
DEFAULT_RUNS_DIR = Path("runs")
DEFAULT_RERUN_DIR = Path("runs-drift")
LAYERS = ("eval", "train", "both")

HELP = """\
Two layers, each exiting 1 and naming every moved metric.

evaluation drift (--layer eval; lock baselines/locked/eval-<suite>.json): each model of the suite
  gets a tiny checkpoint regenerated from a seed (NumPy draws, identical on every CPU) and is
  evaluated with the engine on fixed generated synthetic data. Similarity matrices must match within
  |new - locked| <= 1e-5 * max(|locked|, 1); metrics must be equal. Passes under any CPU kernel set
  (ATEN_CPU_CAPABILITY=avx2/avx512/default) and thread count; fails when a model formula, the frame
  sampler, the tokenizer or the ranking core changes.

training drift (--layer train; lock baselines/locked/<suite>.json): the suite's trained metrics,
  from your recorded runs (--runs-dir, default runs) or from a fresh run with --rerun, which goes
  through the check before work into the gate's own folder (--rerun-dir, default runs-drift),
  untracked: runs/ and MLflow are never written. Rule: exact (1e-9) when the lock's platform
  fingerprint (CPU model, torch CPU capability, versions, threads, device) equals the run's on the
  CPU; otherwise |new - locked| <= the per-metric tolerance stored in the lock,
  max(3 x std over seeds 0, 1, 2, floor) with floor = 100/(t2v queries) for recalls and order_acc and 1.0
  for MdR, MnR and tie counts. The lock also stores the suite's resolved settings: a failure names
  the settings that differ (train.batch_size: 16 -> 8) before the metrics.

Relock with --update --message "why" (both layers unless --layer says otherwise); a failure prints
the command to run. --update measures the seed spread with only the seeds the locked run lacks
(seed 0 is not run twice), into <rerun-dir>/seed-spread.
"""


def gate_options(args: argparse.Namespace) -> GateOptions:
    """The :class:`~clip2video.drift_gate.GateOptions` of the parsed flags."""
    from clip2video.drift_gate import GateOptions

    if args.rerun and args.runs is not None:
        raise ConfigError(
            f"--runs-dir {args.runs} with --rerun: the rerun writes and reads its own runs folder "
            f"(--rerun-dir, default {DEFAULT_RERUN_DIR}); --runs-dir names recorded runs to compare "
            "without --rerun: drop one of them"
        )
    return GateOptions(
        suite=args.suite,
        overrides=overrides_of(args),
        layer=args.layer,
        baselines=args.baselines,
        baseline=args.baseline,
        runs_dir=args.runs if args.runs is not None else DEFAULT_RUNS_DIR,
        rerun=args.rerun,
        rerun_dir=args.rerun_dir,
        mode=args.mode,
        data_root=args.data_root,
        device=args.device,
        jobs=args.jobs,
        update=args.update,
        message=args.message,
        argv=tuple(getattr(args, "argv", None) or sys.argv[1:]),
    )


def run_drift(args: argparse.Namespace) -> int:
    """Run the chosen layers; exit 1 when any metric moved, naming each and how to relock."""
    from clip2video.drift_gate import run_gate
    from clip2video.pipeline import CheckFailed

    try:
        result = run_gate(gate_options(args), echo=print)
    except CheckFailed as exc:
        if len(exc.problems) > 1:
            print(exc.report(), file=sys.stderr, flush=True)
        raise
    if result.relock:
        print(f"If the change is intended, relock: {result.relock}")
    return result.exit_code


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``drift`` to the ``clip2video`` command."""
    d = subparsers.add_parser(
        "drift",
        help="drift gate: evaluation drift (seeded tiny checkpoints) and training drift (trained metrics)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("--suite", default="smoke", help="suite: a shipped name or a TOML path (default: smoke)")
    d.add_argument("--layer", choices=LAYERS, default="both", help="which layer(s) to run (default: both)")
    d.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a suite setting, e.g. train.epochs=1 (repeatable; as for ablation)",
    )
    d.add_argument(
        "--runs-dir",
        dest="runs",
        metavar="RUNS_DIR",
        type=Path,
        default=None,
        help=f"recorded runs the training layer compares without --rerun (default: {DEFAULT_RUNS_DIR})",
    )
    hidden_alias(d, "--runs", "runs")
    d.add_argument(
        "--rerun",
        action="store_true",
        help="training layer: run the suite first (check before work, no tracking) into --rerun-dir",
    )
    d.add_argument(
        "--rerun-dir",
        metavar="DIR",
        type=Path,
        default=DEFAULT_RERUN_DIR,
        help="the gate's own runs folder: --rerun's records and --update's seed runs, never your runs/ "
        f"(default: {DEFAULT_RERUN_DIR})",
    )
    d.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="rows run at once by --rerun and --update (default: the suite's run.jobs; 0: automatic)",
    )
    d.add_argument(
        "--baselines",
        type=Path,
        default=DEFAULT_BASELINES,
        help="folder of the locks (default: baselines/locked)",
    )
    d.add_argument(
        "--baseline", type=Path, default=None, help="training lock file (default: <baselines>/<suite>.json)"
    )
    d.add_argument(
        "--mode",
        choices=("auto", *("exact", "tolerance", "interval")),
        default="auto",
        help="training layer: auto = exact on the lock's platform, else the stored tolerances",
    )
    d.add_argument("--data-root", type=Path, default=Path("data"), help="data folder (default: data)")
    d.add_argument("--device", default="cpu", help="device for --rerun (default: cpu)")
    d.add_argument("--update", action="store_true", help="relock the chosen layers with the current numbers")
    d.add_argument("--message", default=None, help="why the baseline is relocked (required with --update)")
    d.set_defaults(func=run_drift)
