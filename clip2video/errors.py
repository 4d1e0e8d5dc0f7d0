"""Exceptions shared across the package, each naming what is at fault and what to do.

Every user-facing failure is a :class:`Clip2VideoError` (or an ``OSError`` naming its file); the
command line prints it as one ``clip2video: error: ...`` line (``--debug`` shows the traceback).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class Clip2VideoError(Exception):
    """Base class of the harness' own errors."""


class VideoReadError(Clip2VideoError):
    """A video file (or frame folder) is missing, empty, corrupt or unreadable."""

    def __init__(self, video_id: str, path: object, reason: str) -> None:
        self.video_id = video_id
        self.path = path
        self.reason = reason
        super().__init__(f"video {video_id!r} at {path}: {reason}")


class ProtocolError(Clip2VideoError):
    """A protocol's annotations or split files are missing or inconsistent."""


class WeightsError(Clip2VideoError):
    """CLIP or checkpoint weights cannot be found or loaded."""


class ConfigError(Clip2VideoError):
    """A setting (suite key, command-line option) is unknown, of the wrong type or out of range."""


class UnknownNameError(ConfigError, KeyError):
    """A registry lookup failed: ``Unknown model 'clip2vid'. Did you mean 'clip2video'? Available: ...``.

    Also a ``KeyError`` so that code which caught the registries' old ``KeyError`` still works.

    >>> str(UnknownNameError("model", "tbd", ["meanp", "tab", "tdb"]))
    "Unknown model 'tbd'. Did you mean 'tdb'? Available: meanp, tab, tdb"
    >>> str(UnknownNameError("protocol", "msrvt", ["msrvtt-1k-a", "msrvtt-full", "msvd"]))
    "Unknown protocol 'msrvt'. Did you mean one of 'msrvtt-1k-a', 'msrvtt-full'? Available: msrvtt-1k-a, msrvtt-full, msvd"
    """

    def __init__(self, kind: str, name: str, available: list[str] | tuple[str, ...]) -> None:
        import difflib

        self.kind = kind
        self.name = name
        self.available = list(available)
        prefixed = [a for a in self.available if str(name) and a.startswith(str(name))]
        close = prefixed or difflib.get_close_matches(str(name), self.available, n=1, cutoff=0.6)
        self.suggestion = close[0] if len(close) == 1 else None
        if len(prefixed) > 1:  # a name cut short: every name it begins
            hint = f" Did you mean one of {', '.join(repr(p) for p in prefixed)}?"
        else:
            hint = f" Did you mean {self.suggestion!r}?" if self.suggestion else ""
        shown = ", ".join(self.available) or "none"
        super().__init__(f"Unknown {kind} {name!r}.{hint} Available: {shown}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(Clip2VideoError, ValueError):
    """A registry already holds another entry under this name (``overwrite=True`` replaces it)."""

    def __init__(self, kind: str, name: str, holder: str = "") -> None:
        self.kind = kind
        self.name = name
        by = f" ({holder})" if holder else ""
        super().__init__(
            f"a {kind} named {name!r} is already registered{by}; pick another name, or pass "
            "overwrite=True to replace it"
        )


class PluginError(Clip2VideoError):
    """A plugin (an entry point or an ``--import`` module or file) failed to import."""


class OutputError(Clip2VideoError):
    """An output folder or file cannot be written."""


class DriftError(Clip2VideoError):
    """The drift gate cannot run: a lock is missing or malformed, the suite does not fit a layer,
    or the gate was misused (shared by its runs in experiments/ and its locks in report/)."""


class UnsafePathError(Clip2VideoError):
    """A name or id from user input would make a path that leaves its folder (``..``, an absolute
    path, a symbolic link to elsewhere)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled like Ctrl-C: workers stop, records stay resumable; the command
    exits ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = int(signum)
        self.signame = signal.Signals(self.signum).name
        super().__init__(self.signame)


def describe_os_error(exc: OSError) -> str:
    """One line for an ``OSError``: the file(s), the errno's meaning and its symbolic name.

    >>> describe_os_error(OSError(2, "No such file or directory", "data/msvd/test_list.txt"))
    'data/msvd/test_list.txt: No such file or directory (ENOENT)'
    """
    code = exc.errno
    meaning = os.strerror(code) if code else (exc.strerror or str(exc) or type(exc).__name__)
    name = f" ({errno.errorcode[code]})" if code in errno.errorcode else ""
    files = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    where = " -> ".join(files) if files else "(no file named by the system)"
    hint = ""
    if code == errno.ENOSPC:
        hint = "; free some space (or point --runs-dir elsewhere) and continue with --resume"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "; choose a folder you can write to"
    elif code == errno.ENOTDIR:
        hint = f"; {Path(files[0]).parent if files else 'a parent'} or one of its parents is a file, not a folder"
    return f"{where}: {meaning}{name}{hint}"


def check_writable_dir(path: str | Path, what: str, flag: str | None = None) -> Path:
    """Prove that the folder ``path`` can be written (or created) without creating it; else
    :class:`OutputError` naming the flag, the folder and the reason."""
    folder = Path(path)
    via = f" ({flag})" if flag else ""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        blocker = "is a file" if existing == folder else f"cannot be created: {existing} is a file"
        raise OutputError(f"{what}{via} {folder} {blocker}, not a folder; pass a folder")
    probe = existing / f".clip2video-write-check-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{what}{via} {folder} is not writable: {describe_os_error(exc)}") from exc
    return folder
