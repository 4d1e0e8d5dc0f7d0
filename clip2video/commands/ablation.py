"""CLI verb ``clip2video ablation``: run an experiment suite end to end."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from clip2video.experiments.suite import SuiteError, shipped_suites


def parse_override(text: str) -> dict[str, Any]:
    """``train.epochs=3`` -> ``{"train": {"epochs": 3}}`` (the value is parsed as JSON when it can be)."""
    if "=" not in text:
        raise SuiteError(f"--set {text!r}: expected KEY=VALUE, e.g. train.epochs=3")
    key, raw = text.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def merge_overrides(items: list[str]) -> dict[str, Any]:
    """Fold several ``--set`` items into one nested dict."""
    merged: dict[str, Any] = {}
    for item in items:
        _deep_update(merged, parse_override(item))
    return merged


def _deep_update(base: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def parse_checkpoints(items: list[str]) -> dict[str, Path]:
    """``--checkpoint clip2video=path`` (or a bare path, which applies to every model)."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if sep:
            out[name] = Path(path)
        else:
            out["*"] = Path(item)
    return out


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


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments ``run_suite`` and the check before work share, from the parsed flags."""
    return {
        "data_root": args.data_root,
        "clip_weights": args.clip_weights,
        "eval_only": args.eval_only,
        "checkpoints": parse_checkpoints(args.checkpoint or []),
        "runs_dir": args.runs_dir,
        "tracking_uri": args.tracking_uri,
        "tracking": not args.no_tracking,
    }


def progress_setting(args: argparse.Namespace) -> bool | None:
    """``False`` with --no-progress, else ``None``: bars on when stdout is a terminal (the runner decides)."""
    return False if args.no_progress else None


def run_checked_suite(suite: str | Path, overrides: dict[str, Any], args: argparse.Namespace) -> Any:
    """Check the whole suite and its inputs/outputs before work, run it, then write its tables."""
    from clip2video.experiments.preflight import check_before_work
    from clip2video.experiments.runner import run_suite

    options = run_options(args)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if rank0:
        check_before_work(
            suite,
            overrides=overrides,
            results_dir=args.results_dir,
            decode_videos=not args.no_decode_check,
            **options,
        )
    result = run_suite(
        suite,
        device=args.device,
        overrides=overrides,
        nproc=args.nproc,
        resume=args.resume,
        progress=progress_setting(args),
        jobs=getattr(args, "jobs", None),
        **options,
    )
    if rank0:
        from clip2video.report.tables import regenerate

        written = regenerate(args.runs_dir, args.results_dir, [result.suite.name])
        result.results_files = written.get(result.suite.name, [])
    return result


def run_ablation(args: argparse.Namespace) -> int:
    """Run a suite: train (or evaluate) each model, record, tabulate, plot, track."""
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return relaunch_under_torchrun(args.nproc)
    overrides = merge_overrides(args.set or [])
    if args.models:
        overrides["models"] = args.models
    result = run_checked_suite(args.suite, overrides, args)
    if int(os.environ.get("RANK", "0")) == 0:
        print(result.summary())
    return 0


def add_output_options(p: argparse.ArgumentParser) -> None:
    """--runs-dir and --results-dir, the same on every verb."""
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run records and checkpoints go")
    p.add_argument("--results-dir", type=Path, default=Path("results"), help="where tables and plots go")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The flags every verb that runs rows takes (ablation, eval)."""
    p.add_argument(
        "--data-root",
        type=Path,
        default=Path("data"),
        help="folder holding the datasets: DATA/<protocol>/ or DATA/<msrvtt|msvd|vatex>/ with "
        "annotations/ and videos/ (and the generated synthetic data)",
    )
    p.add_argument(
        "--clip-weights",
        default=None,
        help="override backbone weights: 'openai', a local ViT-B-32.pt, an open_clip checkpoint, or 'none'",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    add_output_options(p)
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (unset: $MLFLOW_TRACKING_URI or sqlite:///mlruns.db)",
    )
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep finished rows and continue interrupted ones from their last checkpoint",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars (off anyway when not a terminal)"
    )
    p.add_argument(
        "--no-decode-check",
        action="store_true",
        help="before work, only open each test video instead of decoding every frame",
    )


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
        metavar="[MODEL=]PATH",
        help="official-layout or harness checkpoint to evaluate (repeatable)",
    )
    p.add_argument("--models", nargs="+", default=None, help="run only these models of the suite")
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
    p.set_defaults(func=run_ablation)
