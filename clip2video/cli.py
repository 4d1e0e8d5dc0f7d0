"""The ``clip2video`` command: thin argument parsing; each verb lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines ``register(subparsers)``, adding its verbs with ``set_defaults(func=...)``.
COMMAND_MODULES: tuple[str, ...] = (
    "clip2video.commands.data",
    "clip2video.commands.ablation",
    "clip2video.commands.tables",
    "clip2video.commands.drift",
    "clip2video.commands.sync",
)


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every verb the installed modules register."""
    parser = argparse.ArgumentParser(
        prog="clip2video",
        description="CLIP2Video benchmark harness: data checks, ablations, tables and the drift gate.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from clip2video.errors import Clip2VideoError

    try:
        return int(args.func(args) or 0)
    except Clip2VideoError as exc:
        print(f"clip2video: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
