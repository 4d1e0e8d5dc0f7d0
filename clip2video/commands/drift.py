"""CLI verb ``clip2video drift``: the two-layer drift gate (evaluation drift, training drift)."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from clip2video.commands.common import hidden_alias, run_pipeline
from clip2video.errors import Clip2VideoError
from clip2video.fileio import safe_name

DEFAULT_BASELINES = Path("baselines") / "locked"
LAYERS = ("eval", "train", "both")

HELP = """\
Two layers, each exiting 1 and naming every moved metric.

evaluation drift (--layer eval; lock baselines/locked/eval-<suite>.json): each model of the suite
  gets a tiny checkpoint regenerated from a seed (NumPy draws, identical on every CPU) and is
  evaluated with the engine on fixed generated synthetic data. Similarity matrices must match within
  |new - locked| <= 1e-5 * max(|locked|, 1); metrics must be equal. Passes under any CPU kernel set
  (ATEN_CPU_CAPABILITY=avx2/avx512/default) and thread count; fails when a model formula, the frame
  sampler, the tokenizer or the ranking core changes.

training drift (--layer train; lock baselines/locked/<suite>.json): the suite's trained metrics
  (from --runs, or a fresh run with --rerun). Rule: exact (1e-9) when the lock's platform
  fingerprint (CPU model, torch CPU capability, versions, threads, device) equals the run's on the
  CPU; otherwise |new - locked| <= the per-metric tolerance stored in the lock,
  max(3 x std over seeds 0, 1, 2, floor) with floor = 100/(t2v queries) for recalls and order_acc and 1.0
  for MdR, MnR and tie counts. --update runs the suite with seeds 0, 1, 2 to measure that spread.

Relock with --update --message "why" (both layers unless --layer says otherwise).
"""


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _command() -> str:
    return shlex.join(["clip2video", *sys.argv[1:]]) if sys.argv[1:] else "clip2video drift"


def _run_suite(
    suite: str, runs: Path, args: argparse.Namespace, overrides: dict[str, Any] | None = None
) -> None:
    """Run the suite through the pipeline (the check before work first; records land in ``runs``),
    CPU or ``--device``, without tracking or tables."""
    from clip2video.pipeline import RunOptions

    run_pipeline(
        RunOptions(
            suite=suite,
            runs_dir=runs,
            data_root=args.data_root,
            device=args.device,
            tracking=False,
            overrides=overrides or {},
            progress=False,
            results_dir=None,
        )
    )


# ----------------------------------------------------------------------------- evaluation layer


def eval_layer(args: argparse.Namespace, suite: Any) -> int:
    """Run (and with --update lock) the evaluation-drift layer; returns the number of drifts."""
    from clip2video.fingerprint import differences
    from clip2video.report import eval_drift as ed

    path = ed.eval_lock_path(args.baselines, suite.name)
    if args.update:
        run = ed.run_eval_layer(suite.settings.to_dict(), args.data_root)
        ed.write_eval_lock(
            path, run, message=args.message, suite=suite.name, command=_command(), commit=_git_commit()
        )
        print(f"drift[eval]: locked {len(run.models)} models of suite {suite.name!r} in {path}")
        return 0
    locked = ed.load_eval_lock(path)
    seeds = (locked.get("settings") or {}).get("weights_seeds")
    run = ed.run_eval_layer(
        suite.settings.to_dict(), args.data_root, seeds=seeds if isinstance(seeds, dict) else None
    )
    fp = run.fingerprint
    where = f"cpu_capability={fp['cpu_capability']}, threads={fp['threads']}"
    drifts = ed.compare_eval(locked, run)
    if drifts:
        print(f"drift[eval]: {len(drifts)} change(s) of suite {suite.name!r} against {path} ({where}):")
        for drift in drifts:
            print(f"  {drift}")
        platform = differences(locked.get("fingerprint"), fp)
        print(f"  platform (locked -> now): {'; '.join(platform) if platform else 'identical'}")
        return len(drifts)
    checked = sum(len(m["metrics"]) for m in locked["models"].values())
    print(
        f"drift[eval]: suite {suite.name!r} matches {path}: {len(run.models)} models, {checked} metrics exact, "
        f"similarities within {ed.SIM_RTOL:g} ({where})"
    )
    return 0


# ----------------------------------------------------------------------------- training layer


def _queries(record: Any) -> int:
    ranks = getattr(record, "ranks_t2v", None)
    if ranks is None and hasattr(record, "query_ranks"):
        ranks = record.query_ranks().t2v_entries()
    return len(ranks) if ranks is not None else 0


def measure_tolerances(suite: Any, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Run the suite with seeds 0, 1, 2 (under ``<runs>/drift-seed-spread``) and derive the tolerances."""
    from clip2video.engine.records import read_suite_records
    from clip2video.report.drift import TOLERANCE_SEEDS, record_metrics, seed_tolerances

    runs = Path(args.runs) / "drift-seed-spread"
    _run_suite(args.suite, runs, args, overrides={"seeds": list(TOLERANCE_SEEDS)})
    records = read_suite_records(runs, suite.name)
    by_model: dict[str, list[dict[str, float]]] = {}
    queries: dict[str, int] = {}
    for rec in records:
        model = str(rec.extra.get("model", rec.name))
        by_model.setdefault(model, []).append(record_metrics(rec))
        queries[model] = _queries(rec)
    return seed_tolerances(by_model, queries)


def train_layer(args: argparse.Namespace, suite: Any) -> int:
    """Run (and with --update lock) the training-drift layer; returns the number of drifts."""
    import torch

    from clip2video.engine.records import read_suite_records
    from clip2video.fingerprint import differences, platform_fingerprint
    from clip2video.report import drift as rd
    from clip2video.report.tables import resamples_of

    baseline = args.baseline or Path(args.baselines) / f"{safe_name(suite.name, 'suite name')}.json"
    if args.rerun:
        _run_suite(args.suite, Path(args.runs), args)
    records = read_suite_records(args.runs, suite.name)
    platform = rd.record_platform(records) or platform_fingerprint(
        args.device, threads=torch.get_num_threads()
    )
    n_boot = resamples_of(records)
    new = rd.suite_metrics(records, n_boot=n_boot)
    if args.update:
        tolerances = measure_tolerances(suite, args)
        path = rd.write_locked(
            baseline,
            new,
            args.message,
            suite=suite.name,
            mode="auto",
            command=_command(),
            n_boot=n_boot,
            fingerprint=platform,
            tolerances=tolerances,
            tolerance_rule=rd.tolerance_rule(),
        )
        print(
            f"drift[train]: locked {len(new)} models of suite {suite.name!r} in {path} ({args.message.strip()})"
        )
        return 0
    locked = rd.load_locked(baseline)
    mode = args.mode if args.mode != "auto" else rd.default_mode(locked, platform)
    drifts = rd.compare(locked, new, mode=mode)
    checked = sum(len(m.get("metrics", {})) for m in locked["models"].values())
    if drifts:
        print(
            f"drift[train]: {len(drifts)} metric(s) of suite {suite.name!r} moved from {baseline} ({mode} mode):"
        )
        for drift in drifts:
            print(f"  {drift}")
        print(f"  locked platform: {locked.get('fingerprint')}")
        print(f"  this platform:   {platform}")
        diff = differences(locked.get("fingerprint"), platform)
        print(f"  platform differences: {'; '.join(diff) if diff else 'none'}")
        return len(drifts)
    print(
        f"drift[train]: suite {suite.name!r} matches {baseline}: {len(new)} models, {checked} locked metrics, "
        f"{mode} mode (locked {locked.get('date', '?')}: {locked.get('message', '')})"
    )
    return 0


# ----------------------------------------------------------------------------- the verb


def run_drift(args: argparse.Namespace) -> int:
    """Run the chosen layers; exit 1 when any metric moved, naming each."""
    from clip2video.experiments.suite import load_suite

    if args.update and not (args.message and args.message.strip()):
        raise Clip2VideoError('--update relocks the baseline: say why with --message "..."')
    suite = load_suite(args.suite)
    moved = 0
    if args.layer in ("eval", "both"):
        moved += eval_layer(args, suite)
    if args.layer in ("train", "both"):
        moved += train_layer(args, suite)
    if moved:
        print(
            f"If the change is intended, relock: clip2video drift --suite {args.suite} --layer {args.layer} "
            '--update --message "why"'
        )
        return 1
    return 0


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
        "--runs-dir",
        dest="runs",
        type=Path,
        default=Path("runs"),
        help="folder of recorded runs (default: runs)",
    )
    hidden_alias(d, "--runs", "runs")
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
    d.add_argument("--rerun", action="store_true", help="training layer: run the suite first (no tracking)")
    d.add_argument("--data-root", type=Path, default=Path("data"), help="data folder (default: data)")
    d.add_argument("--device", default="cpu", help="device for --rerun (default: cpu)")
    d.add_argument("--update", action="store_true", help="relock the chosen layers with the current numbers")
    d.add_argument("--message", default=None, help="why the baseline is relocked (required with --update)")
    d.set_defaults(func=run_drift)
