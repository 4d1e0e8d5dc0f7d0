"""CLI verb ``clip2video eval``: evaluate one checkpoint on one protocol, no suite file needed.

``clip2video eval --protocol msvd --model clip2video --checkpoint FILE --data-root DATA`` builds a
one-row suite from the protocol's shipped suite (or, for a protocol without one, the defaults and
the protocol's own frame, text and K settings), checks everything before work, evaluates, and
writes ``RESULTS_DIR/<suite>/result.json`` beside the usual table.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from clip2video.commands.common import add_run_options, run_options, run_pipeline
from clip2video.errors import ConfigError


def eval_suite_settings(protocol: str, model: str, *, zero_shot: bool) -> dict[str, Any]:
    """The one row's suite as a suite file would say it: the protocol's shipped suite when there is
    one, reduced to one model and seed. ``suite_from_settings`` resolves it by the suites' one rule
    (defaults < the protocol's defaults < this < ``--set``)."""
    from clip2video.experiments.suite import shipped_suites, suite_file_settings

    settings: dict[str, Any] = suite_file_settings(protocol) if protocol in shipped_suites() else {}
    # one row: automatic threads give it every core (a shipped suite or --set may say otherwise)
    settings.setdefault("run", {}).setdefault("threads", 0)
    settings.update(
        protocol=protocol,
        models=[model],
        seeds=[0],
        zero_shot=zero_shot,
        description=f"clip2video eval: {model} on {protocol}",
    )
    return settings


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate one model on one protocol (only its test split is read); print the table and the result file."""
    from clip2video.experiments.suite import suite_from_settings

    if args.checkpoint is None and not args.zero_shot:
        raise ConfigError(
            "eval needs --checkpoint FILE (a harness or official CLIP2Video/CLIP4Clip checkpoint), or "
            "--zero-shot to evaluate the pretrained CLIP with mean pooling"
        )
    from clip2video.fileio import safe_name

    name = safe_name(args.name or f"eval-{args.protocol}-{args.model}", "eval --name")
    suite = suite_from_settings(
        name, eval_suite_settings(args.protocol, args.model, zero_shot=args.zero_shot), f"eval {name}"
    )
    checkpoints = {args.model: Path(args.checkpoint)} if args.checkpoint else {}
    result = run_pipeline(run_options(args, suite=suite, eval_only=True, checkpoints=checkpoints))
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    out = Path(args.results_dir) / result.suite.name / "result.json"  # written with the tables (report layer)
    print(result.summary())
    print(f"result: {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` to the ``clip2video`` command."""
    from clip2video.data.protocols import list_protocols

    p = subparsers.add_parser(
        "eval",
        help="evaluate one checkpoint on one protocol (one row, no suite file)",
        description=(
            "Evaluate one model checkpoint on a protocol's test split with the protocol's published "
            "settings (its shipped suite), checking everything first; writes RUNS_DIR/<name>/ records, "
            "RESULTS_DIR/<name>/result.json and the table. Example: clip2video eval --protocol msvd "
            "--model clip2video --checkpoint pytorch_model.bin.2 --data-root DATA --device cuda "
            "--clip-weights ViT-B-32.pt"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--protocol", required=True, help=f"one of: {', '.join(list_protocols())}")
    p.add_argument(
        "--model",
        required=True,
        help="a registered model: meanp, seqtransf, tdb, tab, clip2video or a plugin's",
    )
    p.add_argument("--checkpoint", default=None, metavar="FILE", help="checkpoint to evaluate")
    p.add_argument(
        "--zero-shot",
        action="store_true",
        help="also (or, without --checkpoint, only) the pretrained CLIP row",
    )
    p.add_argument(
        "--name", default=None, help="records/results folder name (unset: eval-<protocol>-<model>)"
    )
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. eval.batch_size=256"
    )
    add_run_options(p)
    p.set_defaults(func=run_eval)
