"""What several verbs share: flags, their parsing into :class:`~clip2video.pipeline.RunOptions`, and
running the pipeline with the check's report printed. Not a verb: verbs import this module, never
each other."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from clip2video.settings import merge_assignments


def parse_checkpoints(items: list[str] | None) -> dict[str, Path]:
    """``--checkpoint clip2video=path`` (a row's or model's name), or a bare path for every row."""
    out: dict[str, Path] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if sep:
            out[name] = Path(path)
        else:
            out["*"] = Path(item)
    return out


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as one nested dict."""
    return merge_assignments(getattr(args, "set", None) or [])


def progress_setting(args: argparse.Namespace) -> bool | None:
    """``False`` with --no-progress, else ``None``: bars on when stdout is a terminal (the runner decides)."""
    return False if args.no_progress else None


def tracking_on(args: argparse.Namespace) -> bool:
    """``--tracking required|optional|off`` (``--no-tracking`` = off); optional: a broken or busy
    store is a warning and the run goes on untracked (``clip2video.tracking.resolve_tracking``)."""
    from clip2video.tracking import resolve_tracking

    mode = "off" if args.no_tracking else getattr(args, "tracking", "required")
    return resolve_tracking(mode, args.tracking_uri)


def run_options(args: argparse.Namespace, **fixed: Any) -> Any:
    """The :class:`RunOptions` of a verb that runs rows (``ablation``, ``eval``), from its parsed
    flags; ``fixed`` sets what the verb decides itself (e.g. ``eval_only=True``)."""
    from clip2video.pipeline import RunOptions

    options: dict[str, Any] = {
        "suite": getattr(args, "suite", None),
        "overrides": overrides_of(args),
        "models": getattr(args, "models", None),
        "data_root": args.data_root,
        "clip_weights": args.clip_weights,
        "device": args.device,
        "eval_only": getattr(args, "eval_only", False),
        "checkpoints": parse_checkpoints(getattr(args, "checkpoint", None)),
        "runs_dir": args.runs_dir,
        "results_dir": args.results_dir,
        "tracking_uri": args.tracking_uri,
        "tracking": tracking_on(args),
        "progress": progress_setting(args),
        "resume": args.resume,
        "jobs": getattr(args, "jobs", None),
        "decode_videos": not args.no_decode_check,
        "wait_lock": args.wait_for_lock,
    }
    options.update(fixed)
    return RunOptions(**options)


def run_pipeline(options: Any) -> Any:
    """``pipeline.run(options)``; when the check before work finds several problems, their report
    goes to stderr first (the error line then sums them up)."""
    from clip2video.pipeline import CheckFailed, run

    try:
        return run(options)
    except CheckFailed as exc:
        if len(exc.problems) > 1:
            print(exc.report(), file=sys.stderr, flush=True)
        raise


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
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow (= --tracking off)")
    p.add_argument(
        "--tracking",
        choices=("required", "optional", "off"),
        default="required",
        help="required: a tracking store that is broken or locked by another process is an error before "
        "work; optional: a warning, and the run goes on untracked (log it later with `clip2video sync`)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep finished rows and continue interrupted ones from their last checkpoint",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars (off anyway when not a terminal)"
    )
    p.add_argument(
        "--wait-for-lock",
        action="store_true",
        help="when another run holds RUNS_DIR/<suite>/, wait for it to finish instead of refusing",
    )
    p.add_argument(
        "--no-decode-check",
        action="store_true",
        help="before work, only open each test video instead of decoding every frame",
    )


def hidden_alias(parser: argparse.ArgumentParser, flag: str, dest: str) -> None:
    """An old spelling of a path flag, still accepted but not shown in --help."""
    parser.add_argument(flag, dest=dest, type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


__all__ = [
    "add_output_options",
    "add_run_options",
    "hidden_alias",
    "overrides_of",
    "parse_checkpoints",
    "progress_setting",
    "run_options",
    "run_pipeline",
    "tracking_on",
]
