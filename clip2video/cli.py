"""The ``clip2video`` command: thin argument parsing; each verb lives in its own module.

Every user-facing failure prints one ``clip2video: error: ...`` line and exits non-zero;
``--debug`` (anywhere on the command line) shows the traceback instead. Ctrl-C prints
``interrupted; continue with --resume`` and exits 130; SIGTERM and SIGHUP are handled the same way
(``terminated (SIGTERM); continue with --resume``, exit 128 + the signal's number). Warnings print once each, without the
echoed source line. Plugins (entry points ``clip2video.models`` / ``clip2video.protocols``) and
``--import MODULE`` modules are imported before the parser is built, so their models and
protocols are known to every verb.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# Each module defines ``register(subparsers)``, adding its verbs with ``set_defaults(func=...)``.
COMMAND_MODULES: tuple[str, ...] = (
    "clip2video.commands.data",
    "clip2video.commands.ablation",
    "clip2video.commands.eval",
    "clip2video.commands.tables",
    "clip2video.commands.drift",
    "clip2video.commands.sync",
    "clip2video.commands.ui",
    "clip2video.commands.models",
    "clip2video.commands.suites",
    "clip2video.commands.build",
    "clip2video.commands.pretrain",
)
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT; SIGTERM gives 143, SIGHUP 129 (the shell's convention)
EXIT_BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every verb; each verb (and sub-verb) also takes --debug and --import."""
    parser = argparse.ArgumentParser(
        prog="clip2video",
        description="CLIP2Video benchmark harness: data checks, ablations, evaluation, tables and the drift gate.",
    )
    _add_common(parser, suppress=False)
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for leaf in _leaf_parsers(parser):
        leaf.formatter_class = defaults_once(leaf.formatter_class)
        if leaf is not parser:
            _add_common(leaf, suppress=True)
    return parser


def version_line() -> str:
    """``clip2video 0.1.0 (clip2video-bench; torch 2.x, open_clip 3.x, mlflow 3.x, Python 3.11)``."""
    from importlib import metadata

    from clip2video import __version__

    parts = []
    for dist in ("torch", "open_clip_torch", "mlflow"):
        try:
            parts.append(f"{dist.replace('_torch', '')} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist.replace('_torch', '')} not installed")
    python = ".".join(map(str, sys.version_info[:3]))
    return f"clip2video {__version__} (clip2video-bench; {', '.join(parts)}, Python {python})"


class DefaultsOnceHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` once, only where there is a default to show and the help names none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or "unset:" in text
            or default in (None, False, argparse.SUPPRESS)
            or action.option_strings == []
            or isinstance(default, list | tuple)
            and not default
        ):
            return text
        return text + " (default: %(default)s)"


class RawDescriptionDefaultsOnceHelpFormatter(
    argparse.RawDescriptionHelpFormatter, DefaultsOnceHelpFormatter
):
    """A verb's description printed as written (its paragraphs and indentation kept), with the
    defaults appended once as :class:`DefaultsOnceHelpFormatter` does."""


def defaults_once(formatter: type[argparse.HelpFormatter]) -> type[argparse.HelpFormatter]:
    """The formatter a verb gets: the defaults shown once, and a raw description (e.g. drift's two
    layer paragraphs) kept raw."""
    if issubclass(formatter, argparse.RawDescriptionHelpFormatter):
        return RawDescriptionDefaultsOnceHelpFormatter
    return DefaultsOnceHelpFormatter


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """``--debug`` and ``--import`` (a verb's copy leaves the top-level value alone unless given)."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show the full traceback of an error instead of one line",
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        default=default,
        help="import this Python module first, e.g. one that registers a model or protocol (repeatable)",
    )


def _leaf_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every sub-parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from _leaf_parsers(child)


def _prescan(argv: list[str]) -> tuple[bool, list[str]]:
    """``--debug`` and the ``--import`` modules, read before the parser exists (plugins add choices)."""
    debug = "--debug" in argv
    modules: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--import" and i + 1 < len(argv):
            modules.append(argv[i + 1])
        elif arg.startswith("--import="):
            modules.append(arg.split("=", 1)[1])
    return debug, modules


@contextmanager
def _plain_warnings() -> Iterator[None]:
    """Each distinct warning printed once, as ``clip2video: warning: ...`` without the source line."""
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        text = str(message)
        if text in seen:
            return
        seen.add(text)
        print(f"clip2video: warning: {text}", file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module="(?!clip2video)")
        warnings.showwarning = show
        yield


@contextmanager
def _termination_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (``timeout``, a scheduler, ``docker stop``, a closed terminal) raise
    :class:`~clip2video.errors.Terminated`, a ``KeyboardInterrupt``: the command stops its workers
    and keeps its records resumable exactly as for Ctrl-C. Only in the main thread (signal handlers
    cannot be set elsewhere); the previous handlers come back afterwards."""
    import signal
    import threading

    from clip2video.errors import Terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    received: list[int] = []

    def terminate(signum: int, frame: object) -> None:
        if received:  # a repeated signal must not interrupt the cleanup the first one started
            return
        received.append(signum)
        raise Terminated(signum)

    wanted = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {signum: signal.signal(signum, terminate) for signum in wanted}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def error_line(exc: BaseException) -> str:
    """The one line the command prints for ``exc`` (without the ``clip2video: error:`` prefix)."""
    from clip2video.errors import Clip2VideoError, describe_os_error

    if isinstance(exc, Clip2VideoError):
        return str(exc)
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({exc}); re-save it as UTF-8"
    if isinstance(exc, MemoryError):
        return "out of memory; lower train.batch_size / eval.batch_size with --set"
    return (
        f"unexpected {type(exc).__name__}: {exc} "
        "(this is a bug or an unchecked input: rerun with --debug for the traceback and report it)"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug, modules = _prescan(argv)
    try:
        with _plain_warnings(), _termination_as_interrupt():
            return _main(argv, modules)
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exc()
        signum = getattr(exc, "signum", None)
        if signum is None:
            print("clip2video: interrupted; continue with --resume", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"clip2video: terminated ({exc.signame}); continue with --resume", file=sys.stderr)
        return 128 + signum
    except SystemExit:
        raise
    except BrokenPipeError:  # `clip2video ... | head`: the reader left; say nothing
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(f"clip2video: error: {error_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _main(argv: list[str], modules: list[str]) -> int:
    import os

    from clip2video.plugins import ENV_VAR, import_modules, load_entry_points

    before = os.environ.get(ENV_VAR)
    try:
        load_entry_points()
        import_modules(modules)  # also exported in $CLIP2VIDEO_IMPORT for row workers
        parser = build_parser()
        args = parser.parse_args(argv)
        args.argv = tuple(argv)  # the command line as typed (drift's relock command is built from it)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    finally:  # an in-process caller (tests, notebooks) keeps its environment
        if before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = before


if __name__ == "__main__":
    raise SystemExit(main())
